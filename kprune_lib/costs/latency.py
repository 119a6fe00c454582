"""Latency tables: what one attention sublayer with h heads and one FFN sublayer with n neurons cost on a device.

The table is measured on the target device with the model's own modules, physically shrunk
(`hf.modeling_kprune.keep_rows` / `keep_columns`, the code `prune_physically` uses): the attention sublayer
LayerNorm(X + O·SDPA(Q X, K X, V X)) for h = 0 … H heads (h = 0: LayerNorm(X + b), no Q/K/V work, as `NoAttention`)
and the FFN sublayer LayerNorm(X + W₂ act(W₁ X)) for n on a grid (every width up to `LATENCY_PER_UNIT_MAX` neurons,
else a step of `LATENCY_FFN_STEP` neurons, always 0 and the widest; linear interpolation in between), each n timed at
the physical width a pruned model gets (`physical.aligned_width`: padded up to a multiple of 16), on all-real
inputs of the budget's batch and sequence length. Protocol: `LATENCY_WARMUP` untimed calls of every point, then
`LATENCY_REPEATS` rounds that time every point once (alternating order, so that a change of the machine's load hits
all points alike; CUDA synchronised around each call), the median per point, made monotone (`monotone`: isotonic
regression over the units, so a wider sublayer never costs less). The whole model's forward is timed in the same rounds.

Latency model: S(shape) = Σ_layers C_attn(h_i) + C_ffn(n_i), the sublayers' table costs, and
total(shape) = G(S(shape)), where G is calibrated in situ: a sublayer timed alone runs faster than inside the whole
forward (its weights stay in cache; the whole model's need not) and the difference shrinks with the model, so the whole
model is also timed, in the same rounds, at uniform shapes keeping a fraction f ∈ {0} ∪ LATENCY_CALIBRATION ∪ {1} of
every layer's heads and neurons (f = 0: every head and neuron removed, the floor). G interpolates those measured
totals (made monotone) linearly in S; the model thus predicts the floor and the given model exactly, and its
inverse turns a latency budget into a budget on S for KPMS. The fixed part reported (embeddings, classifier, the
rest) is T_floor − S(floor). Tables are cached as JSON per device (and its name), dtype,
threads, batch, sequence length and architecture shape under `cache_dir()`.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kprune_lib._atomic import write_json
from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.sublayer import KINDS, MHA
from kprune_lib.config import (LATENCY_CACHE_ENV, LATENCY_CALIBRATION, LATENCY_FFN_STEP, LATENCY_PER_UNIT_MAX,
                               LATENCY_REPEATS, LATENCY_STALE_TOLERANCE, LATENCY_TABLE_POLICIES, LATENCY_WARMUP)
from kprune_lib.encoder.hf.modeling_kprune import keep_columns, keep_rows
from kprune_lib.encoder.physical import aligned_width, prune_physically

log = logging.getLogger(__name__)

TABLE_VERSION = 4  # bump when the measurement protocol changes: older cached tables are then not reused

# timer(kind, units, fn) -> seconds of one call fn(); kind "mha" | "ffn" (units: int, heads or the FFN's
# physical width, `physical.aligned_width`) or "model" (units: the
# (heads_per_layer, neurons_per_layer) of the timed model). Tests inject a deterministic fake.
Timer = Callable[[str, object, Callable[[], object]], float]


def cache_dir() -> Path:
    """$KPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/kprune, else ~/.cache/kprune."""
    if os.environ.get(LATENCY_CACHE_ENV):
        return Path(os.environ[LATENCY_CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kprune"


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def shape_of(arch: Arch) -> tuple[list[int], list[int]]:
    """(heads per layer, neurons per layer) of a model as it is now."""
    L = arch.num_layers
    return [arch.heads_in_layer(i) for i in range(L)], [arch.neurons_in_layer(i) for i in range(L)]


def max_positions(model) -> int:
    """Longest sequence the model's position embeddings take (RoBERTa-style ids start after the padding index)."""
    cfg = model.config
    n = int(getattr(cfg, "max_position_embeddings", 10**9))
    if Arch(model).model_type in ("roberta", "xlm-roberta"):
        n -= int(cfg.pad_token_id) + 1
    return n


def ffn_grid(width: int, device_type: str) -> list[int]:
    """FFN widths measured: every width up to LATENCY_PER_UNIT_MAX, else 0, step, 2·step, …, and `width` itself."""
    if width <= LATENCY_PER_UNIT_MAX:
        return list(range(width + 1))
    step = LATENCY_FFN_STEP.get(device_type, LATENCY_FFN_STEP["cpu"])
    return sorted(set(range(0, width, step)) | {width})


@dataclass
class LatencyTable:
    """Milliseconds per forward of one (batch, seq) input: per sublayer kind on a grid of units, and the fixed part."""

    key: dict  # what the table is valid for (device, dtype, threads, batch, seq, architecture shape, …)
    grid: dict[str, list[int]]  # kind -> units measured, ascending from 0
    measured_ms: dict[str, list[float]]  # kind -> median per grid point
    cost_ms: dict[str, list[float]]  # kind -> the monotone table: `monotone(measured_ms)`
    total_ms: float  # measured forward of the whole model the table was measured on (its own shape)
    fixed_ms: float  # embeddings, classifier, the rest: T_floor − S(floor) (without calibration: total − S(model))
    # G: {"fractions": [0, …, 1], "sublayer_ms": S of each uniform shape, "measured_ms": its measured total, made
    # monotone}; None: the plain additive model total = fixed + S
    calibration: dict | None = None
    seconds: float = 0.0  # wall time the measurement took
    measured_at: str | None = None  # when (ISO 8601, local time with offset)
    loadavg: list[float] | None = None  # the machine's 1-minute load average before and after measuring, if known
    # when read from the cache: the dense model re-timed now against the table's total (`check_staleness`)
    check: dict | None = None
    path: str | None = None  # where it is cached

    def cost(self, kind: str, units: float) -> float:
        """C_kind(units): the monotone table, linearly interpolated between grid points."""
        grid = self.grid[kind]
        if not 0 <= units <= grid[-1]:
            raise ValueError(f"{kind} with {units} units is outside the latency table (0 … {grid[-1]})")
        return float(np.interp(units, grid, self.cost_ms[kind]))

    def sublayer_ms(self, heads_per_layer, neurons_per_layer) -> float:
        return sum(self.cost(MHA, h) + self.cost("ffn", n) for h, n in zip(heads_per_layer, neurons_per_layer))

    def predict(self, heads_per_layer, neurons_per_layer) -> float:
        """Predicted latency (ms) of a shape: G(S(shape)), S = Σ_layers C_attn(h_i) + C_ffn(n_i) (module docstring);
        without calibration fixed + S."""
        return self.total_of(self.sublayer_ms(heads_per_layer, neurons_per_layer))

    def total_of(self, sublayer_ms: float) -> float:
        """G: the whole model's latency (ms) for sublayer costs summing to sublayer_ms."""
        if self.calibration is None:
            return self.fixed_ms + sublayer_ms
        c = self.calibration
        return float(np.interp(sublayer_ms, c["sublayer_ms"], c["measured_ms"]))

    def sublayer_budget(self, budget_ms: float) -> float:
        """G⁻¹: the largest Σ of sublayer costs whose predicted latency is budget_ms (KPMS walks against it)."""
        if self.calibration is None:
            return budget_ms - self.fixed_ms
        c = self.calibration
        return float(np.interp(budget_ms, c["measured_ms"], c["sublayer_ms"]))

    def floor_ms(self) -> float:
        """The least any pruning reaches: every sublayer at zero units (LayerNorm(X) only)."""
        L = self.key["layers"]
        return self.total_of(L * (self.cost(MHA, 0) + self.cost("ffn", 0)))

    def average_unit_cost(self, kind: str, units: int) -> float:
        """KPMS's score denominator for a sublayer at `units` units: (C(units) − C(0)) / units, the mean marginal
        cost of its units (for a linear cost, the cost of one unit, as F_head / F_neuron). Floored at 1e-9 ms so that
        a flat table cannot divide by zero."""
        if units == 0:
            return 1.0  # no unit to score
        return max((self.cost(kind, units) - self.cost(kind, 0)) / units, 1e-9)

    def rank_costs(self, kind: str, scores: torch.Tensor) -> torch.Tensor:
        """Per-unit costs (units,) float64 for KPMS's budget walk: the unit ranked r-th by score within its sublayer
        (r = 1 the highest; ties broken by index) costs C(r) − C(r−1) ≥ 0. Units above any threshold are a top-k of
        their sublayer, so their costs sum to C(k) − C(0) exactly (a telescoping sum)."""
        n = scores.numel()
        c = torch.tensor([self.cost(kind, u) for u in range(n + 1)], dtype=torch.float64, device=scores.device)
        order = torch.argsort(scores.double().flatten(), descending=True, stable=True)
        out = torch.empty(n, dtype=torch.float64, device=scores.device)
        out[order] = c[1:] - c[:-1]
        return out

    @property
    def disturbed(self) -> bool:
        """The machine's load changed while the table was measured: the whole model timed faster at a larger
        uniform shape than at a smaller one, or the fixed part came out negative."""
        c = self.calibration
        return self.fixed_ms < 0 or (c is not None and c.get("measured_raw_ms", c["measured_ms"]) != c["measured_ms"])

    def feasible(self) -> tuple[float, float]:
        return self.floor_ms(), self.total_ms

    def check_budget(self, budget_ms: float) -> None:
        """One-line ValueError unless floor < budget < dense."""
        lo, hi = self.feasible()
        k = self.key
        if not lo < budget_ms < hi:
            raise ValueError(
                f"latency budget {budget_ms:.4g} ms is outside the feasible range ({lo:.4g}, {hi:.4g}) ms of this "
                f"model at batch {k['batch']}, sequence length {k['seq']}, {k['device']} ({k['threads']} threads): "
                f"{lo:.4g} ms is its fixed part with every head and neuron removed, {hi:.4g} ms its measured latency; "
                "choose a budget in between")

    def rows(self) -> list[dict]:
        return [{"kind": kind, "units": u, "measured_ms": m, "cost_ms": c}
                for kind in KINDS for u, m, c in zip(self.grid[kind], self.measured_ms[kind], self.cost_ms[kind])]

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("path")
        d.pop("check")
        return d


def monotone(values: list[float]) -> list[float]:
    """The non-decreasing sequence closest to `values` in least squares (isotonic regression, pool-adjacent-
    violators): a run that decreases is replaced by its mean. Unlike a cumulative maximum, one slow outlier does not
    lift every wider grid point."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(n)]


def table_key(model, batch: int, seq: int, device: torch.device, threads: int) -> dict:
    arch = Arch(model)
    heads, neurons = shape_of(arch)
    return {"version": TABLE_VERSION, "device": device.type, "device_name": device_name(device),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "threads": threads,
            "batch": batch, "seq": seq, "model_type": arch.model_type, "hidden": arch.hidden,
            "heads": arch.num_heads, "head_size": arch.head_size, "ffn": arch.ffn_size, "layers": arch.num_layers,
            "heads_per_layer": heads, "neurons_per_layer": neurons,
            "ffn_grid": ffn_grid(max(neurons), device.type)[:3],  # the grid's step
            "attention": getattr(model.config, "_attn_implementation", None) or "eager",  # the kernel timed
            "torch": torch.__version__}


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "latency" / f"{key['model_type']}-{key['device']}-b{key['batch']}-t{key['seq']}-{digest}.json"


def _load(path: Path, key: dict) -> LatencyTable | None:
    try:
        d = json.loads(path.read_text())
        if d.get("key") != key:
            return None
        return LatencyTable(**d, path=str(path))
    except (OSError, ValueError, TypeError):
        return None


def load_table(path: str | Path) -> LatencyTable:
    """A cached table file (e.g. summary.json's latency.table) as a LatencyTable."""
    fields = json.loads(Path(path).read_text())
    for name in ("grid", "measured_ms", "cost_ms"):  # tables of version <= 3 called the attention sublayer "attention"
        if "attention" in fields.get(name, {}):
            fields[name][MHA] = fields[name].pop("attention")
    return LatencyTable(**fields, path=str(path))




def latency_table(model, batch: int, seq: int, device: torch.device | str | None = None, threads: int | None = None,
                  *, timer: Timer | None = None, refresh: bool = False, progress: bool = True,
                  policy: str = "remeasure", tolerance: float = LATENCY_STALE_TOLERANCE) -> LatencyTable:
    """The latency table of `model` (its shape as it is now) on `device` (default: the model's) with `threads` CPU
    threads (default: torch's), at `batch` examples × `seq` real tokens: from the cache when a table with the same
    key is there (unless refresh), else measured and cached (written atomically).

    A cached table is checked first (`check_staleness`): the dense model is re-timed once; if it runs more than
    `tolerance` away from the table's total, the table was measured in another machine state (load, clocks,
    thermals), and with policy "remeasure" it is measured again, with "keep" it is kept; either way one log line says
    so, and `table.check` records what was seen (summary.json's `latency.table_check`)."""
    if policy not in LATENCY_TABLE_POLICIES:
        raise ValueError(f"latency table policy must be one of {LATENCY_TABLE_POLICIES}, got {policy!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    threads = threads or torch.get_num_threads()
    if seq > max_positions(model):
        raise ValueError(f"latency sequence length {seq} exceeds the model's {max_positions(model)} positions; "
                         f"use --latency-seq {max_positions(model)} or less")
    key = table_key(model, batch, seq, device, threads)
    path = cache_path(key)
    check = None
    if not refresh and (table := _load(path, key)) is not None:
        check = check_staleness(table, measure_latency(model, batch, seq, device, threads, timer=timer), tolerance,
                                policy)
        if check["action"] != "remeasured":
            table.check = check
            return table
    table = measure_table(model, batch, seq, device, threads, timer=timer, progress=progress)
    table.key = key
    write_json(path, table.to_json(), indent=1)
    table.path = str(path)
    table.check = check
    log.info("latency table measured in %.1f s, cached at %s", table.seconds, path)
    return table


def check_staleness(table: LatencyTable, dense_now_ms: float, tolerance: float, policy: str) -> dict:
    """Compare a cached table's dense total with the same model timed now; decide (ok / remeasured / kept) and say
    so in one log line."""
    ratio = dense_now_ms / table.total_ms
    age = None
    if table.measured_at:
        try:
            age = time.time() - datetime.datetime.fromisoformat(table.measured_at).timestamp()
        except ValueError:
            age = None
    stale = abs(ratio - 1.0) > tolerance
    action = "ok" if not stale else ("remeasured" if policy == "remeasure" else "kept")
    when = f"measured {table.measured_at}" if table.measured_at else "measured at an unknown time"
    load = f", load {table.loadavg[0]:.1f}" if table.loadavg else ""
    if not stale:
        log.info("latency table from the cache (%s%s): the model runs %.4g ms now, %.4g ms then (×%.2f): %s",
                 when, load, dense_now_ms, table.total_ms, ratio, table.path)
    else:
        what = ("measuring it again" if action == "remeasured" else
                "kept (--latency-table-policy keep): its predictions will be off by about this factor")
        log.warning("the cached latency table (%s%s) timed the model at %.4g ms; it runs %.4g ms now (×%.2f, beyond "
                    "±%.0f %%): the machine's state changed since; %s", when, load, table.total_ms, dense_now_ms,
                    ratio, 100 * tolerance, what)
    return {"cached_table": table.path, "cached_measured_at": table.measured_at, "cached_loadavg": table.loadavg,
            "age_seconds": age, "cached_dense_ms": table.total_ms, "dense_now_ms": dense_now_ms, "ratio": ratio,
            "tolerance": tolerance, "action": action}


def random_inputs(model, batch: int, seq: int, device: torch.device) -> dict:
    """A batch of `batch` examples × `seq` real tokens (random ids; no padding)."""
    arch = Arch(model)
    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, seq), generator=g)
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device)}
    if arch.table.token_types:
        inputs["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long, device=device)
    return inputs


def _attention_fn(arch: Arch, i: int, heads: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Layer i's attention sublayer shrunk to its first `heads` heads, on x (B, T, d)."""
    dh = arch.head_size
    dims = torch.arange(heads * dh, device=x.device)
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


def _ffn_fn(arch: Arch, i: int, neurons: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Layer i's FFN sublayer shrunk to its first `neurons` neurons, on x (B, T, d), at the physical width a pruned
    model gets (`physical.aligned_width`: padded up to a multiple of FFN_WIDTH_MULTIPLE)."""
    keep = torch.arange(aligned_width(neurons, arch.neurons_in_layer(i)), device=x.device)
    w1, w2 = keep_rows(arch.module(i, "ffn_in"), keep), keep_columns(arch.module(i, "ffn_out"), keep)
    act, ln = arch.module(i, "act"), arch.module(i, "ffn_ln")
    return lambda: ln(x + w2(act(w1(x))))


def measure_table(model, batch: int, seq: int, device: torch.device, threads: int, *, timer: Timer | None = None,
                  progress: bool = True) -> LatencyTable:
    """Measure the table (no cache): see the module docstring for the protocol."""
    t_start = time.perf_counter()
    load_before = _loadavg()
    if next(model.parameters()).device != device:
        model = copy.deepcopy(model).to(device)
    model.eval()
    arch = Arch(model)
    heads, neurons = shape_of(arch)
    timer = timer or wall_timer(device)
    # the layers with the most heads / neurons are shrunk to every grid point
    i_attn, i_ffn = int(np.argmax(heads)), int(np.argmax(neurons))
    grid = {MHA: list(range(max(heads) + 1)), "ffn": ffn_grid(max(neurons), device.type)}
    dtype = next(model.parameters()).dtype
    x = torch.randn(batch, seq, arch.hidden, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    inputs = random_inputs(model, batch, seq, device)
    with torch.inference_mode(), num_threads(threads):
        points = [(MHA, h, _attention_fn(arch, i_attn, h, x)) for h in grid[MHA]]
        # an FFN point is timed at the physical width it gets (the timer is told that width)
        points += [("ffn", aligned_width(n, neurons[i_ffn]), _ffn_fn(arch, i_ffn, n, x)) for n in grid["ffn"]]
        fractions = [0.0, *LATENCY_CALIBRATION, 1.0]
        shapes = [uniform_shape(heads, neurons, f) for f in fractions]
        for f, shape in zip(fractions, shapes):
            m = model if f == 1.0 else _shrunk_copy(model, heads, neurons, *shape)
            points.append(("model", shape_of(Arch(m)), lambda m=m: m(**inputs)))  # its physical shape
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


def _shrunk_copy(model, heads: list[int], neurons: list[int], keep_heads: list[int], keep_neurons: list[int]):
    """A physically pruned copy of the model keeping the first keep_heads[i] of layer i's heads[i] heads and the
    first keep_neurons[i] of its neurons[i] neurons."""
    head_mask = [torch.arange(h) < k for h, k in zip(heads, keep_heads)]
    neuron_mask = [torch.arange(n) < k for n, k in zip(neurons, keep_neurons)]
    return prune_physically(copy.deepcopy(model), head_mask, neuron_mask)


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


def measure_latency(model, batch: int, seq: int, device: torch.device | str | None = None, threads: int | None = None,
                    *, timer: Timer | None = None, progress: bool = False) -> float:
    """Median milliseconds of the model's whole forward on `batch` × `seq` real tokens (same protocol as the table)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if next(model.parameters()).device != device:
        model = copy.deepcopy(model).to(device)
    model.eval()
    inputs = random_inputs(model, batch, seq, device)
    shape = shape_of(Arch(model))
    with torch.inference_mode(), num_threads(threads):
        times = _timed_rounds([("model", shape, lambda: model(**inputs))], timer or wall_timer(device),
                              f"latency ({device.type}, batch {batch}, seq {seq})", progress)
    return 1e3 * statistics.median(times[0])


def measure_latencies(models: dict, batch: int, seq: int, device: torch.device | str, threads: int | None = None,
                      *, timer: Timer | None = None, progress: bool = False) -> dict[str, float]:
    """Median milliseconds of each model's forward (name -> ms), the models timed in the same interleaved rounds so
    that a change of the machine's load hits them alike (for comparisons at equal measured latency)."""
    device = torch.device(device)
    points = []
    with torch.inference_mode(), num_threads(threads):
        for name, model in models.items():
            model = model if next(model.parameters()).device == device else copy.deepcopy(model).to(device)
            inputs = random_inputs(model.eval(), batch, seq, device)
            points.append(("model", shape_of(Arch(model)), lambda m=model, x=inputs: m(**x)))
        times = _timed_rounds(points, timer or wall_timer(device), f"latency of {len(models)} models", progress)
    return {name: 1e3 * statistics.median(t) for name, t in zip(models, times)}


def format_table(table: LatencyTable) -> str:
    """The table as text; its last line is `dense: <X> ms`."""
    k = table.key
    lines = [f"latency table: {k['model_type']} (hidden {k['hidden']}, {k['layers']} layers, heads {k['heads']} × "
             f"{k['head_size']}, FFN {k['ffn']}), {k['device']} ({k['device_name']}), {k['dtype']}, "
             f"{k['threads']} threads, batch {k['batch']}, sequence length {k['seq']}",
             f"cached at: {table.path}",
             f"{'sublayer':<10} {'units':>6} {'median ms':>11} {'monotone ms':>12}"]
    lines += [f"{r['kind']:<10} {r['units']:>6} {r['measured_ms']:>11.4f} {r['cost_ms']:>12.4f}" for r in table.rows()]
    if table.calibration is not None:
        c = table.calibration
        lines += [f"{'whole model':<10} {round(100 * f):>5}% {t:>11.4f}   (Σ sublayers {s:.4f} ms)"
                  for f, s, t in zip(c["fractions"], c["sublayer_ms"], c["measured_raw_ms"])]
    lines += [f"fixed: {table.fixed_ms:.4f} ms (embeddings, classifier, the rest: measured floor − Σ empty sublayers)",
              f"floor: {table.floor_ms():.4f} ms (every head and neuron removed)",
              f"dense: {table.total_ms:.4f} ms"]
    return "\n".join(lines)

