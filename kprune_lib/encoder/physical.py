"""Physical pruning: shrink the Linear layers so the model really is smaller and faster.

The shrinking itself (`prune_block`: Linear row/column selection, `NoAttention` for a layer with no head) lives in
the standalone model code `hf/modeling_kprune.py`, which stock transformers also runs when it loads a pruned folder.
"""
from __future__ import annotations

import torch
from torch import nn

from kprune_lib.encoder.arch import Arch
from kprune_lib.config import FFN_WIDTH_MULTIPLE
from kprune_lib.encoder.hf.modeling_kprune import part_rows, prune_block
from kprune_lib.encoder.masks import head_dims


def aligned_width(kept: int, width: int, multiple: int = FFN_WIDTH_MULTIPLE) -> int:
    """The physical width of an FFN keeping `kept` of its `width` neurons: rounded up to a multiple of `multiple`
    (at most `width`); 0 stays 0 (the sublayer does no FFN work at all)."""
    if multiple < 1:
        raise ValueError(f"FFN width multiple must be ≥ 1, got {multiple}")
    return 0 if kept == 0 else min(width, -(-kept // multiple) * multiple)


def prune_physically(model: nn.Module | Arch, head_mask: torch.Tensor, neuron_mask: torch.Tensor,
                     width_multiple: int = FFN_WIDTH_MULTIPLE) -> nn.Module:
    """Remove the heads / neurons whose mask is 0 from a dense-shaped model (or the model of an `Arch`, which stays
    valid: see `Arch`), in place; returns the model.

    head_mask: (L, H) bool/0-1 over the model's current heads; neuron_mask: (L, N) likewise.
    A layer left with no head gets `NoAttention` (no Q/K/V work) and an output projection of
    width 0 whose bias is zero; a layer with no neuron keeps FFN projections of width 0, output bias zero:
    a fully pruned sublayer adds nothing and becomes LayerNorm(X) (spec; the authors' rule).
    Each FFN's width is padded up to a multiple of `width_multiple` (`aligned_width`) with inert neurons (zero input
    row, zero bias, zero output column: they add exactly 0): matrix kernels run aligned widths faster than the few
    neurons cost (measured in benchmarks/RESULTS.md); `width_multiple=1` keeps exactly the masked neurons.
    """
    arch = Arch.of(model)
    for i in range(arch.num_layers):
        heads = head_mask[i].bool().to("cpu")
        if heads.numel() != arch.heads_in_layer(i):
            raise ValueError(f"layer {i}: head mask has {heads.numel()} entries, layer has {arch.heads_in_layer(i)} heads")
        neurons = neuron_mask[i].bool().to("cpu")
        if neurons.numel() != arch.neurons_in_layer(i):
            raise ValueError(f"layer {i}: neuron mask has {neurons.numel()} entries, layer has {arch.neurons_in_layer(i)}")
        device = arch.module(i, "o").weight.device
        dims = head_dims(heads, arch.head_size).nonzero().flatten().to(device)
        kept = neurons.nonzero().flatten()
        pad = aligned_width(kept.numel(), neurons.numel(), width_multiple) - kept.numel()
        keep = torch.cat([kept, (~neurons).nonzero().flatten()[:pad]]).to(device)  # the padding neurons last
        prune_block(arch.layer(i), arch.table, dims, keep, int(heads.sum()), arch.head_size)
        if pad:
            zero_neurons(arch, i, slice(kept.numel(), None))
    return arch.model


@torch.no_grad()
def zero_neurons(arch: Arch, i: int, idx) -> None:
    """Make layer i's FFN neurons idx inert: zero input rows (both halves of a gated FFN's) and biases, zero output
    columns."""
    ffn_in, ffn_out = arch.module(i, "ffn_in"), arch.module(i, "ffn_out")
    rows = part_rows(idx, ffn_out.in_features, arch.table.ffn_in_parts).to(ffn_in.weight.device)
    ffn_in.weight[rows] = 0
    if ffn_in.bias is not None:
        ffn_in.bias[rows] = 0
    ffn_out.weight[:, idx] = 0


def shape_masks(heads_per_layer: list[int], neurons_per_layer: list[int], num_heads: int, ffn_size: int):
    """(L, H) and (L, N) masks keeping the first k units of each layer: rebuilds a saved pruned shape."""
    L = len(heads_per_layer)
    hm = torch.arange(num_heads).expand(L, -1) < torch.tensor(heads_per_layer)[:, None]
    nm = torch.arange(ffn_size).expand(L, -1) < torch.tensor(neurons_per_layer)[:, None]
    return hm, nm
