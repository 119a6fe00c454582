"""How a latency table is measured (`measure_table`) and models are timed (`measure_latency(ies)`).

The table is measured on the target device with the model's own modules, physically shrunk
(`hf.modeling_kprune.keep_rows` / `keep_columns`, the code `prune_physically` uses): the attention sublayer
LayerNorm(X + O·SDPA(Q X, K X, V X)) for h = 0 … H heads (h = 0: LayerNorm(X + b), no Q/K/V work, as `NoAttention`;
DeBERTa: the layer's own attention module shrunk as a pruned model's, its relative-position terms in; ModernBERT: the
pre-norm attention sublayer of the layer's own block, shrunk likewise, rotary positions in)
and the FFN sublayer LayerNorm(X + W₂ act(W₁ X)) (pre-norm: X + W₂ act(W₁ LayerNorm(X))) for n on a grid (every
width up to `LATENCY_PER_UNIT_MAX` neurons, else a step of `LATENCY_FFN_STEP` neurons, always 0 and the widest; linear interpolation in between), each n timed at
the physical width a pruned model gets (`physical.aligned_width`: padded up to a multiple of 16), on all-real
inputs of the budget's batch and sequence length. Protocol: `LATENCY_WARMUP` untimed calls of every point, then
`LATENCY_REPEATS` rounds that time every point once (alternating order, so that a change of the machine's load hits
all points alike; CUDA synchronised around each call), the median per point, made monotone (`latency_model.monotone`).
The whole model's forward is timed in the same rounds, at the calibration shapes of `latency_model`.
"""
from __future__ import annotations

import copy
import datetime
import logging
import os
import statistics
import time
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.sublayer import FFN, KINDS, MHA, Sublayer
from kprune_lib.config import (LATENCY_CALIBRATION, LATENCY_FFN_STEP, LATENCY_PER_UNIT_MAX, LATENCY_REPEATS,
                               LATENCY_WARMUP)
from kprune_lib.encoder.forward import activate, window_bias
from kprune_lib.encoder.hf.modeling_kprune import keep_columns, keep_rows, part_rows, prune_block
from kprune_lib.encoder.physical import aligned_width, prune_physically

from kprune_lib.costs.latency_model import LatencyTable, monotone

log = logging.getLogger(__name__)

# timer(kind, units, fn) -> seconds of one call fn(); kind "mha" | "ffn" (units: int, heads or the FFN's
# physical width, `physical.aligned_width`) or "model" (units: the
# (heads_per_layer, neurons_per_layer) of the timed model). Tests inject a deterministic fake.
Timer = Callable[[str, object, Callable[[], object]], float]


def wall_timer(device: torch.device) -> Timer:
    """Wall time of one call, CUDA synchronised before and after."""
    cuda = device.type == "cuda"

    def timer(kind, units, fn):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return timer


@contextmanager
def num_threads(n: int | None):
    """torch's intra-op threads set to n (None: unchanged) inside the block."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def shape_of(arch: Arch) -> tuple[list[int], list[int]]:
    """(heads per layer, neurons per layer) of a model as it is now."""
    L = arch.num_layers
    return [arch.heads_in_layer(i) for i in range(L)], [arch.neurons_in_layer(i) for i in range(L)]


def max_positions(arch: Arch) -> int:
    """Longest sequence the model's position embeddings take (RoBERTa-style ids start after the padding index)."""
    cfg = arch.model.config
    n = int(getattr(cfg, "max_position_embeddings", 10**9))
    if arch.model_type in ("roberta", "xlm-roberta"):
        n -= int(cfg.pad_token_id) + 1
    return n


def ffn_grid(width: int, device_type: str) -> list[int]:
    """FFN widths measured: every width up to LATENCY_PER_UNIT_MAX, else 0, step, 2·step, …, and `width` itself."""
    if width <= LATENCY_PER_UNIT_MAX:
        return list(range(width + 1))
    step = LATENCY_FFN_STEP.get(device_type, LATENCY_FFN_STEP["cpu"])
    return sorted(set(range(0, width, step)) | {width})


def random_inputs(arch: Arch, batch: int, seq: int, device: torch.device) -> dict:
    """A batch of `batch` examples × `seq` real tokens (random ids; no padding)."""
    g = torch.Generator().manual_seed(0)
    vocab = int(arch.model.config.vocab_size)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, seq), generator=g)
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device)}
    if arch.table.token_types:
        inputs["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long, device=device)
    return inputs


def _attention_fn(arch: Arch, i: int, heads: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Layer i's attention sublayer shrunk to its first `heads` heads, on x (B, T, d)."""
    dh = arch.head_size
    dims = torch.arange(heads * dh, device=x.device)
    if arch.relative is not None:
        return _relative_attention_fn(arch, i, heads, x, dims)
    if arch.rotary:
        return _rotary_attention_fn(arch, i, heads, x, dims)
    o = keep_columns(arch.module(i, "o"), dims)
    ln = arch.module(i, "attn_ln")
    B, T, _ = x.shape
    if heads == 0:
        return lambda: ln(x + o(x.new_zeros(B, T, 0)))
    q, k, v = (keep_rows(arch.module(i, name), dims) for name in ("q", "k", "v"))

    def fn():
        qh, kh, vh = (lin(x).view(B, T, heads, dh).transpose(1, 2) for lin in (q, k, v))
        ctx = F.scaled_dot_product_attention(qh, kh, vh)  # all tokens real: no mask
        return ln(x + o(ctx.transpose(1, 2).reshape(B, T, heads * dh)))

    return fn


def _relative_attention_fn(arch: Arch, i: int, heads: int, x: torch.Tensor,
                           dims: torch.Tensor) -> Callable[[], torch.Tensor]:
    """DeBERTa: a copy of layer i's own attention module (disentangled attention, output projection and LayerNorm)
    shrunk to its first `heads` heads as a pruned model's is (`prune_block`: position projections included), on x
    with every token real; the relative positions and their embeddings, which the encoder computes once per forward
    for all layers, are computed here once."""
    block = copy.deepcopy(arch.layer(i))
    prune_block(block, arch.table, dims, slice(None), heads, arch.head_size)
    encoder = arch.base.encoder  # DebertaV2Encoder
    B, T, _ = x.shape
    mask = encoder.get_attention_mask(torch.ones(B, T, dtype=torch.long, device=x.device))
    rel_pos, rel_emb = encoder.get_rel_pos(x), encoder.get_rel_embedding()
    return lambda: block.attention(x, mask, relative_pos=rel_pos, rel_embeddings=rel_emb)[0]


def _rotary_attention_fn(arch: Arch, i: int, heads: int, x: torch.Tensor,
                         dims: torch.Tensor) -> Callable[[], torch.Tensor]:
    """ModernBERT: a copy of layer i's own block shrunk to its first `heads` heads as a pruned model's is
    (`prune_block`: the fused Wqkv's three parts), its attention sublayer X + Wo·attn(LayerNorm(X)) on x with every
    token real; the rotary embeddings (computed once per forward for all layers) and a local layer's window mask
    computed here once."""
    block = copy.deepcopy(arch.layer(i))
    prune_block(block, arch.table, dims, slice(None), heads, arch.head_size)
    B, T, _ = x.shape
    rotary = arch.rotary_embeddings(i, T, x)
    window = arch.attention_window(i)
    mask = None if window is None else window_bias(T, window, x)[None, None]
    return lambda: x + block.attn(block.attn_norm(x), position_embeddings=rotary, attention_mask=mask)[0]


def _ffn_fn(arch: Arch, i: int, neurons: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Layer i's FFN sublayer shrunk to its first `neurons` neurons, on x (B, T, d), at the physical width a pruned
    model gets (`physical.aligned_width`: padded up to a multiple of FFN_WIDTH_MULTIPLE): LayerNorm(X + W₂ act(W₁ X)),
    or X + W₂ act(W₁ LayerNorm(X)) in a pre-norm block (a gated FFN: act(input) · gate, `forward.activate`)."""
    width = arch.neurons_in_layer(i)
    keep = torch.arange(aligned_width(neurons, width), device=x.device)
    ffn_in = arch.module(i, "ffn_in")
    w1 = keep_rows(ffn_in, part_rows(keep, width, arch.table.ffn_in_parts).to(ffn_in.weight.device))
    w2 = keep_columns(arch.module(i, "ffn_out"), keep)
    s = Sublayer.at(i, FFN)
    pre, post = arch.input_norm(s), arch.output_norm(s)
    return lambda: post(x + w2(activate(arch, i, w1(pre(x)))))


def measure_table(model: nn.Module | Arch, batch: int, seq: int, device: torch.device, threads: int, *,
                  timer: Timer | None = None, progress: bool = True) -> LatencyTable:
    """Measure the table (no cache): see the module docstring for the protocol."""
    t_start = time.perf_counter()
    load_before = _loadavg()
    arch = _on_device(Arch.of(model), device)
    model = arch.model.eval()
    heads, neurons = shape_of(arch)
    timer = timer or wall_timer(device)
    # the layers with the most heads / neurons are shrunk to every grid point
    i_attn, i_ffn = int(np.argmax(heads)), int(np.argmax(neurons))
    grid = {MHA: list(range(max(heads) + 1)), "ffn": ffn_grid(max(neurons), device.type)}
    dtype = next(model.parameters()).dtype
    x = torch.randn(batch, seq, arch.hidden, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    inputs = random_inputs(arch, batch, seq, device)
    with torch.inference_mode(), num_threads(threads):
        points = [(MHA, h, _attention_fn(arch, i_attn, h, x)) for h in grid[MHA]]
        # an FFN point is timed at the physical width it gets (the timer is told that width)
        points += [("ffn", aligned_width(n, neurons[i_ffn]), _ffn_fn(arch, i_ffn, n, x)) for n in grid["ffn"]]
        fractions = [0.0, *LATENCY_CALIBRATION, 1.0]
        shapes = [uniform_shape(heads, neurons, f) for f in fractions]
        for f, shape in zip(fractions, shapes):
            a = arch if f == 1.0 else _shrunk_copy(arch, heads, neurons, *shape)
            points.append(("model", shape_of(a), lambda m=a.model: m(**inputs)))  # its physical shape
        times = _timed_rounds(points, timer, f"latency table ({device.type}, batch {batch}, seq {seq})", progress)
    medians = [1e3 * statistics.median(t) for t in times]
    measured = {kind: [m for (k, _, _), m in zip(points, medians) if k == kind] for kind in KINDS}
    cost = {kind: monotone(measured[kind]) for kind in KINDS}
    totals = medians[-len(fractions):]
    table = LatencyTable({}, grid, measured, cost, total_ms=totals[-1], fixed_ms=0.0)
    table.calibration = {"fractions": fractions, "sublayer_ms": [table.sublayer_ms(*shape) for shape in shapes],
                         "measured_ms": monotone(totals), "measured_raw_ms": totals}
    table.total_ms = table.calibration["measured_ms"][-1]
    table.fixed_ms = table.calibration["measured_ms"][0] - table.calibration["sublayer_ms"][0]
    table.seconds = time.perf_counter() - t_start
    table.measured_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_after = _loadavg()
    table.loadavg = None if load_before is None or load_after is None else [load_before, load_after]
    if table.disturbed:
        log.warning("the whole model timed faster at a larger shape than at a smaller one, or its fixed part came out "
                    "negative (%.3g ms), so the machine's load changed while the latency table was measured; measure "
                    "again on an idle machine (kprune latency-table --remeasure)", table.fixed_ms)
    return table


def _loadavg() -> float | None:
    """The 1-minute load average (None where the OS does not say)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def uniform_shape(heads: list[int], neurons: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """Each layer keeping round(fraction · its units) heads and neurons (a calibration shape of the table)."""
    return [round(fraction * h) for h in heads], [round(fraction * n) for n in neurons]


def _on_device(arch: Arch, device: torch.device) -> Arch:
    """`arch` if its model is on `device`, else a copy of the model moved there (a new model: its own Arch)."""
    if next(arch.model.parameters()).device == device:
        return arch
    return Arch(copy.deepcopy(arch.model).to(device))


def _shrunk_copy(arch: Arch, heads: list[int], neurons: list[int], keep_heads: list[int],
                 keep_neurons: list[int]) -> Arch:
    """A physically pruned copy of the model (a new model: its own Arch) keeping the first keep_heads[i] of layer
    i's heads[i] heads and the first keep_neurons[i] of its neurons[i] neurons."""
    head_mask = [torch.arange(h) < k for h, k in zip(heads, keep_heads)]
    neuron_mask = [torch.arange(n) < k for n, k in zip(neurons, keep_neurons)]
    shrunk = Arch(copy.deepcopy(arch.model))
    prune_physically(shrunk, head_mask, neuron_mask)
    return shrunk


def _timed_rounds(points: list[tuple], timer: Timer, desc: str, progress: bool,
                  repeats: int = LATENCY_REPEATS, warmup: int = LATENCY_WARMUP) -> list[list[float]]:
    """Warm-up calls of every point, then `repeats` rounds timing each point once (order alternating)."""
    for _, _, fn in points:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in points]
    order = list(range(len(points)))
    for r in tqdm(range(repeats), desc=desc, unit="round", disable=not progress):
        for j in (order if r % 2 == 0 else order[::-1]):
            kind, units, fn = points[j]
            times[j].append(timer(kind, units, fn))
    return times


def measure_latency(model: nn.Module | Arch, batch: int, seq: int, device: torch.device | str | None = None,
                    threads: int | None = None, *, timer: Timer | None = None, progress: bool = False) -> float:
    """Median milliseconds of the model's whole forward on `batch` × `seq` real tokens (same protocol as the table)."""
    arch = Arch.of(model)
    device = torch.device(device) if device is not None else next(arch.model.parameters()).device
    arch = _on_device(arch, device)
    model = arch.model.eval()
    inputs = random_inputs(arch, batch, seq, device)
    shape = shape_of(arch)
    with torch.inference_mode(), num_threads(threads):
        times = _timed_rounds([("model", shape, lambda: model(**inputs))], timer or wall_timer(device),
                              f"latency ({device.type}, batch {batch}, seq {seq})", progress)
    return 1e3 * statistics.median(times[0])


def measure_latencies(models: dict[str, nn.Module | Arch], batch: int, seq: int, device: torch.device | str,
                      threads: int | None = None, *, timer: Timer | None = None,
                      progress: bool = False) -> dict[str, float]:
    """Median milliseconds of each model's forward (name -> ms; a model or its Arch), the models timed in the same
    interleaved rounds so that a change of the machine's load hits them alike (for comparisons at equal measured
    latency)."""
    device = torch.device(device)
    points = []
    with torch.inference_mode(), num_threads(threads):
        for name, model in models.items():
            arch = _on_device(Arch.of(model), device)
            arch.model.eval()
            inputs = random_inputs(arch, batch, seq, device)
            points.append(("model", shape_of(arch), lambda m=arch.model, x=inputs: m(**x)))
        times = _timed_rounds(points, timer or wall_timer(device), f"latency of {len(models)} models", progress)
    return {name: 1e3 * statistics.median(t) for name, t in zip(models, times)}
