"""Physical pruning: shrink the Linear layers so the model really is smaller and faster."""
from __future__ import annotations

import torch
from torch import nn

from .arch import Arch, NoAttention
from .masks import head_dims


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear holding copies of the given weight (out × in) and bias."""
    new = nn.Linear(1, 1, bias=bias is not None, device="meta")  # shell only: no (zero-size) initialisation
    new.out_features, new.in_features = weight.shape
    new.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().clone())
    return new


def _rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """Keep output features idx of a Linear."""
    return _linear(lin.weight[idx], None if lin.bias is None else lin.bias[idx])


def _cols(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """Keep input features idx of a Linear (bias unchanged). With no input feature left the projection contributes
    nothing: its bias is zeroed (kept as a parameter, so saved shapes stay regular), and the sublayer is LayerNorm(X)."""
    bias = lin.bias if lin.bias is None or len(idx) else torch.zeros_like(lin.bias)
    return _linear(lin.weight[:, idx], bias)


def _set_head_count(module: nn.Module, heads: int, head_size: int) -> None:
    for name in ("num_attention_heads", "n_heads"):
        if hasattr(module, name):
            setattr(module, name, heads)
    if hasattr(module, "all_head_size"):
        module.all_head_size = heads * head_size


def prune_physically(model: nn.Module, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> nn.Module:
    """Remove the heads / neurons whose mask is 0 from a dense-shaped model, in place.

    head_mask: (L, H) bool/0-1 over the model's current heads; neuron_mask: (L, N) likewise.
    A layer left with no head gets `NoAttention` (no Q/K/V work) and an output projection of
    width 0 whose bias is zero; a layer with no neuron keeps FFN projections of width 0, output bias zero:
    a fully pruned sublayer adds nothing and becomes LayerNorm(X) (spec; the authors' rule).
    """
    arch = Arch(model)
    for i in range(arch.num_layers):
        heads = head_mask[i].bool().to("cpu")
        if heads.numel() != arch.heads_in_layer(i):
            raise ValueError(f"layer {i}: head mask has {heads.numel()} entries, layer has {arch.heads_in_layer(i)} heads")
        dims = head_dims(heads, arch.head_size).nonzero().flatten().to(arch.module(i, "o").weight.device)
        out_proj = _cols(arch.module(i, "o"), dims)
        if len(dims) == 0:
            inner = arch.o_inside_attn()
            arch.replace(i, "attn", NoAttention(inner, out_proj if inner else None))
        else:
            for name in ("q", "k", "v"):
                arch.replace(i, name, _rows(arch.module(i, name), dims))
            _set_head_count(arch.module(i, "attn"), int(heads.sum()), arch.head_size)
        arch.replace(i, "o", out_proj)
        neurons = neuron_mask[i].bool().to("cpu")
        if neurons.numel() != arch.neurons_in_layer(i):
            raise ValueError(f"layer {i}: neuron mask has {neurons.numel()} entries, layer has {arch.neurons_in_layer(i)}")
        keep = neurons.nonzero().flatten().to(arch.module(i, "ffn_out").weight.device)
        arch.replace(i, "ffn_in", _rows(arch.module(i, "ffn_in"), keep))
        arch.replace(i, "ffn_out", _cols(arch.module(i, "ffn_out"), keep))
    return model


def shape_masks(heads_per_layer: list[int], neurons_per_layer: list[int], num_heads: int, ffn_size: int):
    """(L, H) and (L, N) masks keeping the first k units of each layer: rebuilds a saved pruned shape."""
    L = len(heads_per_layer)
    hm = torch.arange(num_heads).expand(L, -1) < torch.tensor(heads_per_layer)[:, None]
    nm = torch.arange(ffn_size).expand(L, -1) < torch.tensor(neurons_per_layer)[:, None]
    return hm, nm
