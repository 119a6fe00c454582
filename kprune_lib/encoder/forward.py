"""Sublayer-level forward of an encoder, used by the pruning loop.

It calls the model's own Linear/LayerNorm modules (so mask hooks apply) and returns, for a
sublayer s, its output LayerNorm(Y), the pre-LayerNorm sum Y = X + W·a + b and the projection
input a. `tests/test_forward.py` checks it against the Hugging Face forward.

Pre-norm blocks (ModernBERT) normalise the sublayer's input instead, a = f(LayerNorm(X)), and output the sum
Y = X + W·a + b itself (`Arch.input_norm`, `Arch.output_norm`): K-prune's target, the sum Y, is the same quantity.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

from kprune_lib.encoder.arch import Arch, RelativeAttention
from kprune_lib.encoder.hf.modeling_kprune import part_rows
from kprune_lib.encoder.sublayer import FFN, MHA, Sublayer


def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) 0/1 padding mask -> (B, 1, 1, T) additive bias for attention scores."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def window_bias(seq_len: int, window: int, like: torch.Tensor) -> torch.Tensor:
    """(T, T) additive bias of a sliding-window attention layer: token i sees token j only when |i − j| ≤ window."""
    pos = torch.arange(seq_len, device=like.device)
    far = (pos[:, None] - pos[None, :]).abs() > window
    bias = torch.zeros(seq_len, seq_len, dtype=like.dtype, device=like.device)
    return bias.masked_fill(far, torch.finfo(like.dtype).min)


def queries_keys_values(arch: Arch, i: int, x: torch.Tensor, h: int) -> tuple[torch.Tensor, ...]:
    """Layer i's queries, keys and values (B, h, T, d_h) each, from its projections' input x (B, T, d): three
    projections, or one fused [Q; K; V] (ModernBERT's Wqkv); rotary positions applied to Q and K where the model
    has them."""
    B, T, _ = x.shape
    dh = arch.head_size
    if arch.table.fused_qkv:
        q, k, v = arch.module(i, "q")(x).view(B, T, 3, h, dh).unbind(2)
    else:
        q, k, v = (arch.module(i, name)(x).view(B, T, h, dh) for name in ("q", "k", "v"))
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if arch.rotary:
        cos, sin = arch.rotary_embeddings(i, T, x)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
    return q, k, v


def mha_context(arch: Arch, i: int, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Concatenated per-head context vectors of layer i from its sublayer input x: (B, T, d) -> (B, T, h·d_h)
    (a pre-norm block normalises x first)."""
    B, T, _ = x.shape
    h, dh = arch.heads_in_layer(i), arch.head_size
    if h == 0:  # fully pruned attention: no Q/K/V work
        return x.new_zeros(B, T, 0)
    q, k, v = queries_keys_values(arch, i, arch.input_norm(Sublayer.at(i, MHA))(x), h)
    window = arch.attention_window(i)
    if window is not None:  # a local layer: the padding bias and the window's, never below the dtype's least value
        bias = (bias + window_bias(T, window, bias)).clamp(min=torch.finfo(bias.dtype).min)
    if arch.relative is None:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, h, T, d_h)
    else:  # DeBERTa: the position terms join the scores, all under one wider scale. Written out rather than through
        # scaled_dot_product_attention, whose CPU kernel changes (and its last bits with it) when the position
        # terms carry gradients: the schedules' forwards must agree bit for bit (tests/test_schedule.py)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh * (1 + len(arch.relative.terms)))
        scores = scores + disentangled_scores(arch.relative, q, k, *arch.position_projections(i),
                                              arch.relative_embeddings())
        ctx = torch.softmax(scores + bias.to(q.dtype), dim=-1) @ v
    return ctx.transpose(1, 2).reshape(B, T, h * dh)


def disentangled_scores(rel: RelativeAttention, q: torch.Tensor, k: torch.Tensor, pos_q: nn.Linear | None,
                        pos_k: nn.Linear | None, rel_embeddings: torch.Tensor) -> torch.Tensor:
    """DeBERTa's position terms of the attention scores (He et al. 2021, eq. 4), scaled as the content term:

        Ã_ij = q_i·k_j + q_i·k^r_δ(i,j) + k_j·q^r_δ(j,i),   softmax(Ã / √(d_h·(1 + #terms)))

    this returns (q_i·k^r_δ(i,j) [c2p] + k_j·q^r_δ(j,i) [p2c]) / √(d_h·(1 + #terms)), shape (B, h, T, T), for
    q, k (B, h, T, d_h); k^r = pos_k(R), q^r = pos_q(R) for the relative-position embeddings R (2·span, d), each head
    its own d_h slice; δ(i,j) = clamp(bucket(i − j) + span, 0, 2·span − 1).
    """
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    B, h, T, dh = q.shape
    span = rel.span
    delta = build_relative_position(q, k, bucket_size=rel.buckets, max_position=rel.max_position)[0]  # (T, T): i − j
    scale = math.sqrt(dh * (1 + len(rel.terms)))
    scores = q.new_zeros(B, h, T, T)
    if pos_k is not None:  # c2p: query i against the key of position δ(i, j)
        keys = pos_k(rel_embeddings).view(-1, h, dh).transpose(0, 1)  # (h, 2·span, d_h)
        c2p = q @ keys.transpose(-1, -2)  # (B, h, T, 2·span)
        idx = (delta + span).clamp(0, 2 * span - 1)
        scores = scores + c2p.gather(-1, idx.expand(B, h, T, T)) / scale
    if pos_q is not None:  # p2c: key j against the query of position δ(j, i)
        queries = pos_q(rel_embeddings).view(-1, h, dh).transpose(0, 1)
        p2c = k @ queries.transpose(-1, -2)  # (B, h, T, 2·span), row j
        idx = (-delta + span).clamp(0, 2 * span - 1)  # [j, i]: the distance j − i
        scores = scores + p2c.gather(-1, idx.expand(B, h, T, T)).transpose(-1, -2) / scale
    return scores


def ffn_activations(arch: Arch, i: int, x: torch.Tensor) -> torch.Tensor:
    """FFN activations after the nonlinearity, from the sublayer input x: (B, T, d) -> (B, T, N); a gated FFN's
    are act(input) · gate (a pre-norm block normalises x first)."""
    return activate(arch, i, arch.module(i, "ffn_in")(arch.input_norm(Sublayer.at(i, FFN))(x)))


def kept_ffn_activations(arch: Arch, i: int, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The activations of layer i's FFN neurons idx (k,) only: (B, T, d) -> (B, T, k), from k of the N rows of its
    input projection (2k of its 2N for a gated FFN; the others are never formed)."""
    lin = arch.module(i, "ffn_in")
    parts = arch.table.ffn_in_parts
    rows = part_rows(idx, lin.out_features // parts, parts).to(lin.weight.device)
    x = arch.input_norm(Sublayer.at(i, FFN))(x)
    pre = F.linear(x, lin.weight[rows], None if lin.bias is None else lin.bias[rows])
    return activate(arch, i, pre)


def activate(arch: Arch, i: int, pre: torch.Tensor) -> torch.Tensor:
    """Layer i's FFN nonlinearity on its input projection's output (…, parts·n) -> (…, n): act, or act(input) · gate
    for a gated FFN ([inputs; gates])."""
    act = arch.module(i, "act")
    if not arch.table.gated_ffn:
        return act(pre)
    inputs, gates = pre.chunk(2, dim=-1)
    return act(inputs) * gates


def projection_input(arch: Arch, s: int, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """a_s, the input of sublayer s's output projection."""
    s = Sublayer(s)
    return mha_context(arch, s.layer, x, bias) if s.is_mha else ffn_activations(arch, s.layer, x)


def sublayer(arch: Arch, s: int, x: torch.Tensor, bias: torch.Tensor):
    """One sublayer: returns (LayerNorm(Y), Y, a) with Y = X + W_s·a + b_s. Mask hooks act on a."""
    return sublayer_from_input(arch, s, x, projection_input(arch, s, x, bias))


def sublayer_from_input(arch: Arch, s: int, x: torch.Tensor, a: torch.Tensor):
    """The rest of sublayer s once its projection input a = projection_input(x) is known: (LayerNorm(Y), Y, a)
    (pre-norm: (Y, Y, a))."""
    y = x + arch.out_proj(s)(a)
    return arch.output_norm(s)(y), y, a


def encode(arch: Arch, batch: dict, start: int = 0, x: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states, from the embeddings (start=0) or from the input x of sublayer `start`."""
    bias = attention_bias(batch["attention_mask"], arch.model.dtype)
    if x is None:
        x = arch.embed(batch["input_ids"], batch.get("token_type_ids"))
    for s in range(start, 2 * arch.num_layers):
        x = sublayer(arch, s, x, bias)[0]
    return x
