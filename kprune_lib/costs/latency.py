"""Latency tables: measured once per model shape and machine state (`timing`), cached as JSON (`latency_table`),
checked against the model re-timed before use (`check_staleness`), read back (`load_table`) and shown
(`format_table`). The model they hold: `latency_model.LatencyTable`.

Tables are cached per device (and its name), dtype, threads, batch, sequence length, architecture shape, attention
kernel and torch version under `cache_dir()`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from kprune_lib._atomic import write_json
from kprune_lib.config import LATENCY_CACHE_ENV, LATENCY_STALE_TOLERANCE, LATENCY_TABLE_POLICIES
from kprune_lib.costs.latency_model import LatencyTable, monotone
from kprune_lib._provenance import device_name
from kprune_lib.costs.timing import (Timer, ffn_grid, max_positions, measure_latencies, measure_latency,
                                     measure_table, shape_of, uniform_shape)
from kprune_lib.encoder.arch import Arch
from kprune_lib.encoder.sublayer import MHA

__all__ = ["LatencyTable", "monotone", "measure_latency", "measure_latencies", "uniform_shape", "latency_table",
           "check_staleness", "load_table", "format_table", "cache_dir", "TABLE_VERSION"]  # the timing helpers
#   re-exported here are the ones callers of tables use; the protocol itself lives in `timing`

log = logging.getLogger(__name__)

TABLE_VERSION = 4  # bump when the measurement protocol changes: older cached tables are then not reused


def cache_dir() -> Path:
    """$KPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/kprune, else ~/.cache/kprune."""
    if os.environ.get(LATENCY_CACHE_ENV):
        return Path(os.environ[LATENCY_CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kprune"


def table_key(arch: Arch, batch: int, seq: int, device: torch.device, threads: int) -> dict:
    model = arch.model
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




def latency_table(model: nn.Module | Arch, batch: int, seq: int, device: torch.device | str | None = None,
                  threads: int | None = None, *, timer: Timer | None = None, refresh: bool = False,
                  progress: bool = True, policy: str = "remeasure",
                  tolerance: float = LATENCY_STALE_TOLERANCE) -> LatencyTable:
    """The latency table of `model` (a model or its Arch; its shape as it is now) on `device` (default: the
    model's) with `threads` CPU threads (default: torch's), at `batch` examples × `seq` real tokens: from the cache
    when a table with the same key is there (unless refresh), else measured and cached (written atomically).

    A cached table is checked first (`check_staleness`): the dense model is re-timed once; if it runs more than
    `tolerance` away from the table's total, the table was measured in another machine state (load, clocks,
    thermals), and with policy "remeasure" it is measured again, with "keep" it is kept; either way one log line says
    so, and `table.check` records what was seen (summary.json's `latency.table_check`)."""
    if policy not in LATENCY_TABLE_POLICIES:
        raise ValueError(f"latency table policy must be one of {LATENCY_TABLE_POLICIES}, got {policy!r}")
    arch = Arch.of(model)
    device = torch.device(device) if device is not None else next(arch.model.parameters()).device
    threads = threads or torch.get_num_threads()
    if seq > (most := max_positions(arch)):
        raise ValueError(f"latency sequence length {seq} exceeds the model's {most} positions; "
                         f"use --latency-seq {most} or less")
    key = table_key(arch, batch, seq, device, threads)
    path = cache_path(key)
    check = None
    if not refresh and (table := _load(path, key)) is not None:
        check = check_staleness(table, measure_latency(arch, batch, seq, device, threads, timer=timer), tolerance,
                                policy)
        if check["action"] != "remeasured":
            table.check = check
            return table
    table = measure_table(arch, batch, seq, device, threads, timer=timer, progress=progress)
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
