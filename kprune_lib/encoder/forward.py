"""Sublayer-level forward of an encoder, used by the pruning loop.

It calls the model's own Linear/LayerNorm modules (so mask hooks apply) and returns, for a
sublayer s, its output LayerNorm(Y), the pre-LayerNorm sum Y = X + W·a + b and the projection
input a. `tests/test_forward.py` checks it against the Hugging Face forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.sublayer import Sublayer


def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 0/1 padding mask -> (B, 1, 1, T) additive bias for attention scores."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def mha_context(arch: Arch, i: int, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Concatenated per-head context vectors of layer i: (B, T, d) -> (B, T, h·d_h)."""
    B, T, _ = x.shape
    h, dh = arch.heads_in_layer(i), arch.head_size
    if h == 0:  # fully pruned attention: no Q/K/V work
        return x.new_zeros(B, T, 0)
    q = arch.module(i, "q")(x).view(B, T, h, dh).transpose(1, 2)  # (B, h, T, d_h)
    k = arch.module(i, "k")(x).view(B, T, h, dh).transpose(1, 2)
    v = arch.module(i, "v")(x).view(B, T, h, dh).transpose(1, 2)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, h, T, d_h)
    return ctx.transpose(1, 2).reshape(B, T, h * dh)


def ffn_activations(arch: Arch, i: int, x: torch.Tensor) -> torch.Tensor:
    """FFN activations after the nonlinearity: (B, T, d) -> (B, T, N)."""
    return arch.module(i, "act")(arch.module(i, "ffn_in")(x))


def kept_ffn_activations(arch: Arch, i: int, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The activations of layer i's FFN neurons idx (k,) only: (B, T, d) -> (B, T, k), k of the N rows of its input
    projection (the others are never formed)."""
    lin = arch.module(i, "ffn_in")
    return arch.module(i, "act")(F.linear(x, lin.weight[idx], None if lin.bias is None else lin.bias[idx]))


def projection_input(arch: Arch, s: int, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """a_s, the input of sublayer s's output projection."""
    s = Sublayer(s)
    return mha_context(arch, s.layer, x, bias) if s.is_mha else ffn_activations(arch, s.layer, x)


def sublayer(arch: Arch, s: int, x: torch.Tensor, bias: torch.Tensor):
    """One sublayer: returns (LayerNorm(Y), Y, a) with Y = X + W_s·a + b_s. Mask hooks act on a."""
    return sublayer_from_input(arch, s, x, projection_input(arch, s, x, bias))


def sublayer_from_input(arch: Arch, s: int, x: torch.Tensor, a: torch.Tensor):
    """The rest of sublayer s once its projection input a = projection_input(x) is known: (LayerNorm(Y), Y, a)."""
    y = x + arch.out_proj(s)(a)
    s = Sublayer(s)
    ln = arch.module(s.layer, s.pick("attn_ln", "ffn_ln"))
    return ln(y), y, a


def encode(arch: Arch, batch: dict, start: int = 0, x: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states, from the embeddings (start=0) or from the input x of sublayer `start`."""
    bias = attention_bias(batch["attention_mask"], arch.model.dtype)
    if x is None:
        x = arch.embed(batch["input_ids"], batch.get("token_type_ids"))
    for s in range(start, 2 * arch.num_layers):
        x = sublayer(arch, s, x, bias)[0]
    return x
