"""Masks as forward pre-hooks on the output projections (transformers 5.x has no `head_mask`).

A mask for sublayer s is a vector over the input dims of its output projection: one entry per
FFN neuron, or one entry per context dimension for MHA (a head owns d_h consecutive dims). A (B, dims)
mask gives every example of the batch its own row (per-example mask gradients from one backward).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Union

import torch

from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.sublayer import FFN, MHA, Sublayer


UnitMasks = Union[torch.Tensor, list]  # (L, units) when every layer has as many units, else one (units_i,) row per layer


def per_layer(rows: list[torch.Tensor]) -> UnitMasks:
    """Per-layer unit masks: stacked (L, units) when every layer has the same width (a dense model), else the list of
    rows (a model pruned before: its layers differ). Either is indexed by layer, `mask[i]`."""
    return torch.stack(rows) if len({r.numel() for r in rows}) == 1 else list(rows)


def kept_per_layer(mask: UnitMasks) -> list[int]:
    """Units kept per layer of a (L, units) mask or a list of rows."""
    return [int(r.sum()) for r in mask]


def head_dims(head_mask_row: torch.Tensor, head_size: int) -> torch.Tensor:
    """(H,) per-head mask -> (H·d_h,) per-context-dim mask."""
    return head_mask_row.repeat_interleave(head_size)


def sublayer_masks(arch: Arch, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """(L, H) head mask and (L, N) neuron mask (or per-layer rows, `per_layer`) -> {sublayer s: per-dim mask vector}."""
    masks = {}
    for i in range(arch.num_layers):
        masks[Sublayer.at(i, MHA)] = head_dims(head_mask[i], arch.head_size)
        masks[Sublayer.at(i, FFN)] = neuron_mask[i]
    return masks


class _Probe(torch.autograd.Function):
    """x ↦ x · m for a mask m that is all ones: the forward is the identity, the backward passes x's gradient on
    unchanged and gives m the gradient that multiplying by m would give, Σ_tokens ∂L/∂(x·m) ⊙ x — without forming
    the two products. x: (B, T, w); m: (B, w) per-example rows or (w,)."""

    @staticmethod
    def forward(ctx, x, m):
        ctx.save_for_backward(x)
        ctx.per_example = m.dim() == 2
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return grad, None
        prod = grad * x
        return grad, (prod.sum(1) if ctx.per_example else prod.sum((0, 1)))


def _drop_bias(module, _inputs, output):
    """Forward hook of a fully pruned sublayer: it contributes nothing, its bias goes with its units (spec)."""
    return output - module.bias.to(output.dtype)  # W·0 + b − b: exactly zero, and the mask stays in the graph


def _projection(arch: Arch, s: int, m: torch.Tensor, what: str) -> torch.nn.Linear:
    """Sublayer s's output projection, once the mask or probe m for it has a shape (w,) or (B, w) it can take."""
    proj = arch.out_proj(s)
    if m.shape[-1:] != (proj.in_features,) or m.dim() > 2:
        raise ValueError(f"{what} for sublayer {s} has shape {tuple(m.shape)}, expected ({proj.in_features},) "
                         f"or (batch, {proj.in_features})")
    return proj


@contextmanager
def apply_masks(arch: Arch, masks: Mapping[int, torch.Tensor],
                probes: Mapping[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Multiply the input of each sublayer's output projection by its mask; hooks always removed.

    A mask with no unit left makes the sublayer contribute nothing at all (its output projection's bias is
    dropped too), so that it becomes LayerNorm(X), as in the spec and the physically pruned model.
    probes: {s: all-ones mask leaf} whose gradient is wanted (the undecided sublayers of the pruning loop): the same
    gradient as a mask of ones, without the multiplications (`_Probe`)."""
    handles = []
    try:
        for s, m in (probes or {}).items():
            proj = _projection(arch, s, m, "probe")
            if s in masks:
                raise ValueError(f"sublayer {s} has both a mask and a probe")
            handles.append(proj.register_forward_pre_hook(lambda _mod, inp, m=m: (_Probe.apply(inp[0], m),)
                                                          + tuple(inp[1:])))
        for s, m in masks.items():
            proj = _projection(arch, s, m, "mask")
            m = m if m.dim() == 1 else m[:, None, :]  # (B, w): one row per example, broadcast over its tokens
            handles.append(proj.register_forward_pre_hook(lambda _mod, inp, m=m: (inp[0] * m,) + tuple(inp[1:])))
            if proj.bias is not None and not bool(m.detach().any()):
                handles.append(proj.register_forward_hook(_drop_bias))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def masked_model(arch: Arch, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> Iterator[None]:
    """The whole model with (L, H) / (L, N) 0-1 unit masks applied."""
    with apply_masks(arch, sublayer_masks(arch, head_mask, neuron_mask)):
        yield
