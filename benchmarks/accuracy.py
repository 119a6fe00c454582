"""The accuracy protocol: tasks × constraints × seeds × methods on the shared MiniLM-L6 fixtures.

    python benchmarks/accuracy.py                      # mrpc,stsb,sst2 × 0.4,0.6,0.8 × seeds 0,1,2 × 5 methods
    python benchmarks/accuracy.py --quick              # smoke: mrpc, 0.8, seeds 0,1, 5000 tokens
    python benchmarks/accuracy.py --report-only        # aggregate what exists under --out, run nothing

Each point is one `python -m kprune_lib.cli prune … --quiet` subprocess writing
OUT/<task>/<method>/c<constraint>/seed<seed>/; a point whose summary.json exists is reused, never rerun.
A failing point is recorded (OUT/failures.json) and listed in the report; the others go on; the exit status
is 1 if any point failed. Then: results/<name>.csv, the Markdown report (mean ± sd over seeds, paired
differences of --compare A,B, the summary over constraints ≥ 0.6 and the "done when" checks) and
figures/<name>.png, all next to the report (<name> is the report's file name in lower case).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from kprune_lib.workbook.points import PointKey as Point  # one pruning run of the protocol: its key and folder

ROOT = Path(__file__).resolve().parents[1]

DEFAULTS = dict(tasks="mrpc,stsb,sst2", constraints="0.4,0.6,0.8", seeds="0,1,2",
                methods="kprune,kprune-plus,kwon,kcm,kwon-fisher", num_tokens=20000,
                out=ROOT / "runs" / "accuracy", report=ROOT / "benchmarks" / "ACCURACY.md")
QUICK = dict(tasks="mrpc", constraints="0.8", seeds="0,1", num_tokens=5000,
             out=ROOT / "runs" / "accuracy-quick", report=ROOT / "benchmarks" / "ACCURACY-quick.md")
DEFAULT_COMPARE = ("kprune-plus", "kprune")
CSV_COLUMNS = ("task", "method", "constraint", "seed", "metric", "dense", "pruned", "delta", "flops_removed",
               "pruning_seconds", "collapsed")
HIGH_CONSTRAINT = 0.6          # the summary line: points with constraint ≥ this
DONE_CONSTRAINTS = (0.6, 0.8)  # done-when (a): mean paired difference at these constraints …
DONE_MIN_GAIN = 1.0            # … is at least this many points
DONE_MAX_DROP = 0.3            # done-when (b): no (task, constraint) mean of A more than this below B's
FAILURES_FILE = "failures.json"


class AccuracyError(ValueError):
    """Bad input: reported as one line `accuracy: error: …`, exit status 2."""


# ---------------------------------------------------------------------------------------------- inputs

def shared_dir() -> Path:
    """The shared fixtures: $KPRUNE_SHARED, else ../shared next to the repository."""
    return Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))


def parse_list(text: str, kind: type, name: str) -> list:
    """'a,b,c' -> [kind(a), …]; one-line error on an empty list or a bad item."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise AccuracyError(f"--{name} is empty")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise AccuracyError(f"--{name}: cannot read {text!r} as a comma-separated list of {kind.__name__}") from None
    if len(set(values)) != len(values):
        raise AccuracyError(f"--{name} lists a value twice: {text!r}")
    return values


def check_constraints(constraints: list[float]) -> None:
    """Every constraint is a fraction of FLOPs to remove, in (0, 1)."""
    bad = [c for c in constraints if not 0 < c < 1]
    if bad:
        raise AccuracyError(f"constraint {bad[0]:g} is outside (0, 1)")


def check_shared(shared: Path, tasks: list[str]) -> None:
    """The shared folder, its GLUE data and a minilm-l6-<task> model for every task exist."""
    if not shared.is_dir():
        raise AccuracyError(f"shared folder {shared} is missing (set KPRUNE_SHARED)")
    if not (shared / "data" / "glue").is_dir():
        raise AccuracyError(f"shared GLUE data {shared / 'data' / 'glue'} is missing")
    available = sorted(p.name.removeprefix("minilm-l6-") for p in (shared / "models").glob("minilm-l6-*") if p.is_dir())
    for task in tasks:
        if task not in available:
            raise AccuracyError(f"unknown task {task!r}: no shared model {shared / 'models' / f'minilm-l6-{task}'} "
                                f"(available: {', '.join(available) or 'none'})")


def grid(tasks: list[str], methods: list[str], constraints: list[float], seeds: list[int]) -> list[Point]:
    """Every point, task-major (task, constraint, seed, method)."""
    return [Point(t, m, c, s) for t in tasks for c in constraints for s in seeds for m in methods]


# ---------------------------------------------------------------------------------------------- running

def point_command(point: Point, shared: Path, num_tokens: int, out: Path) -> list[str]:
    """The `kprune prune` subprocess of one point (with --overwrite only for a leftover unfinished folder)."""
    target = point.out_dir(out)
    cmd = [sys.executable, "-m", "kprune_lib.cli", "prune", "--model", str(shared / "models" / f"minilm-l6-{point.task}"),
           "--task", point.task, "--data-dir", str(shared / "data" / "glue"), "--constraint", f"{point.constraint:g}",
           "--num-tokens", str(num_tokens), "--seed", str(point.seed), "--method", point.method,
           "--output", str(target), "--quiet"]
    if target.is_dir() and any(target.iterdir()):
        cmd.append("--overwrite")
    return cmd


def point_env(workers: int) -> dict[str, str]:
    """The subprocess environment: offline hub; one BLAS/OpenMP thread each when points run side by side."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if workers > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def last_line(text: str) -> str:
    """The last non-empty line of a stream ('' if none)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def spawn(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The one place that starts a point's subprocess (stdout and stderr captured)."""
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)


def run_point(point: Point, shared: Path, num_tokens: int, out: Path, workers: int) -> tuple[float, str | None]:
    """Run one point; (seconds, None) on success, (seconds, last stderr line) on failure."""
    start = time.perf_counter()
    try:
        proc = spawn(point_command(point, shared, num_tokens, out), point_env(workers))
    except OSError as e:
        return time.perf_counter() - start, f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not (point.out_dir(out) / "summary.json").exists():
        return seconds, last_line(proc.stderr) or f"exit status {proc.returncode}, no summary.json"
    return seconds, None


def same_settings(method: str) -> str | None:
    """The method whose points `method` shares: it runs exactly the same settings (kprune-plus and the K-prune+
    candidate it is made of), so its finished points are reused rather than rerun."""
    from kprune_lib.method.methods import same_settings as library_same_settings

    return library_same_settings(method)


def finished(point: Point, out: Path) -> bool:
    source = same_settings(point.method)
    twins = [point] + ([Point(point.task, source, point.constraint, point.seed)] if source else [])
    return any((p.out_dir(out) / "summary.json").exists() for p in twins)


def unfinished(points: list[Point], out: Path) -> list[Point]:
    """The points without a summary.json under OUT (their own, or that of a method with the same settings)."""
    return [p for p in points if not finished(p, out)]


def with_shared_points(rows: list[dict], methods: list[str]) -> list[dict]:
    """Rows plus, for each requested method that shares another's settings, that method's rows under its name
    (marked "shared_from") where it has no point of its own."""
    out = list(rows)
    for m in methods:
        source = same_settings(m)
        if source is None:
            continue
        own = {(r["task"], r["constraint"], r["seed"]) for r in rows if r["method"] == m}
        out += [{**r, "method": m, "shared_from": source} for r in rows
                if r["method"] == source and (r["task"], r["constraint"], r["seed"]) not in own]
    return out


def run_points(points: list[Point], shared: Path, num_tokens: int, out: Path, workers: int) -> list[dict]:
    """Run the unfinished points (workers at a time); print one line per point; return the failures."""
    todo = unfinished(points, out)
    print(f"accuracy: {len(points) - len(todo)} of {len(points)} points already finished under {out}; "
          f"running {len(todo)} with {workers} worker(s)", flush=True)
    failures = []
    bar = tqdm(total=len(points), initial=len(points) - len(todo), unit="point", desc="accuracy")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run_point, p, shared, num_tokens, out, workers): p for p in todo}
        for done, fut in enumerate(as_completed(futures), 1):
            point = futures[fut]
            seconds, error = fut.result()
            status = "ok" if error is None else f"FAILED: {error}"
            tqdm.write(f"[{done}/{len(todo)}] {point.label()}: {status} ({seconds:.1f} s)")
            if error is not None:
                failures.append({"task": point.task, "method": point.method, "constraint": point.constraint,
                                 "seed": point.seed, "error": error})
            bar.update(1)
    bar.close()
    return failures


def failure_key(f: dict) -> tuple:
    return f["task"], f["method"], round(float(f["constraint"]), 6), int(f["seed"])


def merge_failures(out: Path, attempted: list[Point], new: list[dict]) -> list[dict]:
    """OUT/failures.json: earlier failures of points not attempted now, plus this run's; written back."""
    path = Path(out) / FAILURES_FILE
    old = json.loads(path.read_text()) if path.exists() else []
    tried = {(p.task, p.method, round(p.constraint, 6), p.seed) for p in attempted}
    merged = [f for f in old if failure_key(f) not in tried] + new
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1))
    return merged


def load_failures(out: Path) -> list[dict]:
    """The recorded failures of OUT ([] if none)."""
    path = Path(out) / FAILURES_FILE
    return json.loads(path.read_text()) if path.exists() else []


# ---------------------------------------------------------------------------------------------- aggregation

def load_summaries(out: Path) -> list[dict]:
    """Every summary.json under OUT (sorted by path; one per (task, method, constraint, seed))."""
    seen, result = set(), []
    for path in sorted(Path(out).rglob("summary.json")):
        s = json.loads(path.read_text())
        key = (s["task"], s.get("method", "kprune"), round(float(s["constraint"]), 6), int(s["seed"]))
        if key not in seen:
            seen.add(key)
            result.append(s)
    return result


def point_row(summary: dict) -> dict:
    """One csv row of a summary: the metric (its name) and dense / pruned / delta ×100."""
    metric = summary["metric"]
    dense, pruned = 100 * float(summary["dense"][metric]), 100 * float(summary["pruned"][metric])
    return {"task": summary["task"], "method": summary.get("method", "kprune"),
            "constraint": float(summary["constraint"]), "seed": int(summary["seed"]), "metric": metric,
            "dense": dense, "pruned": pruned, "delta": pruned - dense,
            "flops_removed": float(summary["flops_removed"]), "pruning_seconds": float(summary["pruning_seconds"]),
            "num_tokens": summary.get("num_tokens"), "collapsed": (summary.get("collapsed") or {}).get("pruned")}


def select_rows(rows: list[dict], tasks: list[str], methods: list[str], constraints: list[float],
                seeds: list[int]) -> list[dict]:
    """The rows of the requested grid, in grid order (task, constraint, method, seed)."""
    cs = [round(c, 6) for c in constraints]
    keep = [r for r in rows if r["task"] in tasks and r["method"] in methods and round(r["constraint"], 6) in cs
            and r["seed"] in seeds]
    return sorted(keep, key=lambda r: (tasks.index(r["task"]), cs.index(round(r["constraint"], 6)),
                                       methods.index(r["method"]), seeds.index(r["seed"])))


def select_failures(failures: list[dict], rows: list[dict], tasks: list[str], methods: list[str],
                    constraints: list[float], seeds: list[int]) -> list[dict]:
    """Recorded failures inside the requested grid whose point has no summary since."""
    finished = {(r["task"], r["method"], round(r["constraint"], 6), r["seed"]) for r in rows}
    wanted = {(p.task, p.method, round(p.constraint, 6), p.seed) for p in grid(tasks, methods, constraints, seeds)}
    return [f for f in failures if failure_key(f) in wanted and failure_key(f) not in finished]


def mean_sd(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample sd, n); sd is None for n < 2, mean is None for n = 0."""
    n = len(values)
    if n == 0:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if n > 1 else None), n


def mean_se(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, standard error sd/√n, n); se is None for n < 2."""
    mean, sd, n = mean_sd(values)
    return mean, (sd / math.sqrt(n) if sd is not None else None), n


def cells(rows: list[dict]) -> list[tuple[str, float]]:
    """The (task, constraint) pairs present, in row order."""
    return list(dict.fromkeys((r["task"], r["constraint"]) for r in rows))


def cell_rows(rows: list[dict], task: str, constraint: float, method: str | None = None) -> list[dict]:
    return [r for r in rows if r["task"] == task and math.isclose(r["constraint"], constraint)
            and (method is None or r["method"] == method)]


def method_stats(rows: list[dict], task: str, constraint: float, method: str) -> tuple:
    """(mean, sd, n) of the pruned metric of one method in one (task, constraint) over seeds."""
    return mean_sd([r["pruned"] for r in cell_rows(rows, task, constraint, method)])


def paired_differences(rows: list[dict], task: str, constraint: float, a: str, b: str) -> list[float]:
    """Per-seed pruned(A) − pruned(B) in one (task, constraint), over the seeds both have, by seed."""
    pa = {r["seed"]: r["pruned"] for r in cell_rows(rows, task, constraint, a)}
    pb = {r["seed"]: r["pruned"] for r in cell_rows(rows, task, constraint, b)}
    return [pa[s] - pb[s] for s in sorted(pa.keys() & pb.keys())]


def paired_table(rows: list[dict], a: str, b: str) -> list[dict]:
    """Per (task, constraint) with at least one seed pair: mean, se and n of the paired differences A − B."""
    table = []
    for task, c in cells(rows):
        mean, se, n = mean_se(paired_differences(rows, task, c, a, b))
        if n:
            table.append({"task": task, "constraint": c, "mean": mean, "se": se, "n": n})
    return table


def high_summary(rows: list[dict], methods: list[str], pair: tuple[str, str] | None,
                 min_constraint: float = HIGH_CONSTRAINT) -> dict:
    """Over the points with constraint ≥ min_constraint: each method's mean pruned metric (and n), and the mean
    with its standard error of the per-(task, constraint) mean paired differences of `pair` (None if no pair)."""
    high = [r for r in rows if r["constraint"] >= min_constraint - 1e-9]
    per_method = {m: mean_sd([r["pruned"] for r in high if r["method"] == m]) for m in methods}
    paired = None
    if pair is not None:
        paired = mean_se([d["mean"] for d in paired_table(high, *pair)])
    return {"methods": per_method, "paired": paired}


def done_when(rows: list[dict], a: str, b: str, constraints: tuple[float, ...] = DONE_CONSTRAINTS,
              min_gain: float = DONE_MIN_GAIN, max_drop: float = DONE_MAX_DROP) -> dict:
    """The issue's "done when" checks for A against B.

    (a) the mean, over the (task, constraint) cells at `constraints`, of the per-cell mean paired difference
        A − B is ≥ min_gain;  (b) no (task, constraint) mean of A is more than max_drop below B's.
    Each is {"ok": True/False/None (not computable), …the numbers}."""
    at = [d for d in paired_table(rows, a, b) if any(math.isclose(d["constraint"], c) for c in constraints)]
    gain = statistics.fmean([d["mean"] for d in at]) if at else None
    check_a = {"ok": None if gain is None else gain >= min_gain, "mean": gain, "cells": len(at),
               "threshold": min_gain}
    gaps = []
    for task, c in cells(rows):
        ma, mb = method_stats(rows, task, c, a)[0], method_stats(rows, task, c, b)[0]
        if ma is not None and mb is not None:
            gaps.append({"task": task, "constraint": c, "gap": ma - mb})
    worst = min(gaps, key=lambda g: g["gap"]) if gaps else None
    below = [g for g in gaps if g["gap"] < -max_drop]
    check_b = {"ok": None if worst is None else not below, "worst": worst, "below": below, "threshold": max_drop}
    return {"a": check_a, "b": check_b}


# ---------------------------------------------------------------------------------------------- outputs

def write_csv(rows: list[dict], path: Path) -> None:
    """One row per point, CSV_COLUMNS (metrics ×100, flops_removed a fraction)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k in CSV_COLUMNS})


def fmt(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_stats(stats: tuple, n_asked: int) -> str:
    """'mean ± sd', with '(n=k)' when fewer seeds than asked; '–' when none."""
    mean, sd, n = stats
    if n == 0:
        return "–"
    text = fmt(mean) if sd is None else f"{fmt(mean)} ± {fmt(sd)}"
    return text + (f" (n={n})" if n < n_asked else "")


def main_table(rows: list[dict], methods: list[str], n_seeds: int) -> list[str]:
    """Markdown: per (task, constraint) the dense metric and each method's mean ± sd over seeds."""
    lines = ["| task | constraint | metric | FLOPs removed | dense | " + " | ".join(methods) + " |",
             "|---|---|---|---|---|" + "---|" * len(methods)]
    for task, c in cells(rows):
        cr = cell_rows(rows, task, c)
        dense = statistics.fmean(r["dense"] for r in cr)
        flops = statistics.fmean(100 * r["flops_removed"] for r in cr)
        stats = [fmt_stats(method_stats(rows, task, c, m), n_seeds) + collapse_mark(cell_rows(rows, task, c, m))
                 for m in methods]
        lines.append(f"| {task} | {c:g} | {cr[0]['metric']} | {flops:.1f} % | {fmt(dense)} | " + " | ".join(stats) + " |")
    return lines


def collapse_mark(rows: list[dict]) -> str:
    """' (collapsed k/n)' where k of the cell's n seeds' pruned models predict one class for the whole dev set (a
    near-constant for regression; data.evaluate.collapsed); '' where none did or it was not recorded."""
    k = sum(1 for r in rows if r.get("collapsed") in (True, "True", "true"))
    return f" (collapsed {k}/{len(rows)})" if k else ""


def paired_section(rows: list[dict], methods: list[str], pair: tuple[str, str] | None) -> list[str]:
    """Markdown: the paired-difference table of A − B, or why it is skipped."""
    if pair is None:
        return ["No pair to compare (`--compare` empty)."]
    a, b = pair
    missing = [m for m in pair if m not in methods or not any(r["method"] == m for r in rows)]
    if missing:
        return [f"Paired differences {a} − {b} skipped: no finished points of {', '.join(missing)}."]
    table = paired_table(rows, a, b)
    if not table:
        return [f"Paired differences {a} − {b} skipped: no seed has both methods in any (task, constraint)."]
    lines = [f"Per seed, pruned({a}) − pruned({b}) on the same seed (pairs with both finished only); "
             "mean, its standard error sd/√n, and n pairs.", "",
             "| task | constraint | mean difference | standard error | n |", "|---|---|---|---|---|"]
    lines += [f"| {d['task']} | {d['constraint']:g} | {fmt(d['mean'], sign=True)} | {fmt(d['se'])} | {d['n']} |"
              for d in table]
    return lines


def summary_section(rows: list[dict], methods: list[str], pair: tuple[str, str] | None) -> list[str]:
    """Markdown: per method the mean over the points with constraint ≥ 0.6, and the mean paired difference."""
    s = high_summary(rows, methods, pair)
    lines = [f"Mean pruned metric over all points with constraint ≥ {HIGH_CONSTRAINT:g}:", ""]
    for m, (mean, _, n) in s["methods"].items():
        lines.append(f"- **{m}**: {fmt(mean)} (n = {n} points)")
    if pair is not None and s["paired"] is not None and s["paired"][2]:
        mean, se, k = s["paired"]
        lines.append(f"- **{pair[0]} − {pair[1]}** (mean of the per-(task, constraint) mean paired differences): "
                     f"{fmt(mean, sign=True)} ± {fmt(se)} (standard error over k = {k} cells)")
    return lines


def yes_no(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def done_section(rows: list[dict], pair: tuple[str, str] | None) -> list[str]:
    """Markdown: the two "done when" checks, yes/no with their numbers."""
    if pair is None:
        return ["No pair to compare: the checks are not computed."]
    a, b = pair
    d = done_when(rows, a, b)
    ca, cb = d["a"], d["b"]
    at = " and ".join(f"{100 * c:g} %" for c in DONE_CONSTRAINTS)
    worst = cb["worst"]
    worst_text = ("no (task, constraint) has both methods" if worst is None else
                  f"largest shortfall {fmt(worst['gap'], sign=True)} at {worst['task']} {worst['constraint']:g}")
    below = "; ".join(f"{g['task']} {g['constraint']:g}: {fmt(g['gap'], sign=True)}" for g in cb["below"])
    gain_text = (f"no (task, constraint) at {at} has both methods" if ca["mean"] is None else
                 f"{fmt(ca['mean'], sign=True)} over {ca['cells']} (task, constraint) cells")
    return [f"- (a) mean over the tasks at {at} of ({a} − {b}) ≥ {ca['threshold']:g} point? "
            f"**{yes_no(ca['ok'])}** — {gain_text}",
            f"- (b) no (task, constraint) mean of {a} more than {cb['threshold']:g} below {b}'s? "
            f"**{yes_no(cb['ok'])}** — {worst_text}" + (f" (below: {below})" if below else "")]


def failures_section(failures: list[dict]) -> list[str]:
    """Markdown: the failed points with the last line of their stderr."""
    if not failures:
        return ["None."]
    lines = ["| task | method | constraint | seed | error |", "|---|---|---|---|---|"]
    lines += [f"| {f['task']} | {f['method']} | {float(f['constraint']):g} | {f['seed']} | "
              f"{str(f['error']).replace('|', '/')} |" for f in failures]
    return lines


def render_report(rows: list[dict], failures: list[dict], *, methods: list[str], n_seeds: int,
                  pair: tuple[str, str] | None, command: str, date: str, csv_path: str, figure_path: str | None,
                  num_tokens: int) -> str:
    """The whole Markdown report (paths as they should appear in it, relative to the report)."""
    found = sorted({r["num_tokens"] for r in rows if r.get("num_tokens") is not None})
    tokens = ", ".join(str(t) for t in found) if found else str(num_tokens)
    lines = ["# Accuracy protocol", "",
             f"Command: `{command}`  ", f"Date: {date}  ",
             f"{tokens} sample tokens per point; metrics ×100 (accuracy; Spearman for STS-B); "
             f"mean ± sample sd over seeds, `(n=k)` when fewer than the {n_seeds} seeds asked finished.  ",
             f"Per-point data: [{csv_path}]({csv_path}).", ""]
    shared = sorted({(r["method"], r["shared_from"]) for r in rows if r.get("shared_from")})
    lines += [f"**{m}** runs exactly the settings of **{src}**: its points are {src}'s (shared, not rerun).  "
              for m, src in shared] + ([""] if shared else [])
    lines += ["## Pruned metric per task and constraint", ""]
    lines += main_table(rows, methods, n_seeds) if rows else ["No finished points."]
    if figure_path:
        lines += ["", f"![metric vs FLOPs removed]({figure_path})"]
    pairs = [pair] if isinstance(pair, tuple) else list(pair or [])  # one pair A,B or several
    for p in pairs or [None]:
        title = f"{p[0]} − {p[1]}" if p else "none"
        lines += ["", f"## Paired differences ({title})", ""] + paired_section(rows, methods, p)
        lines += ["", f"### Summary (constraint ≥ 0.6, {title})", ""] + summary_section(rows, methods, p)
        lines += ["", f"### Done when ({title})", ""] + done_section(rows, p)
    lines += ["", f"## Failed points ({len(failures)})", ""] + failures_section(failures)
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    """One panel (4.5 × 3.8 in) per task: metric vs % FLOPs removed, mean ± sd over seeds per method; the workbook's
    figure (kprune_lib.workbook.plots.metric_vs_flops: the methods' fixed styles, dense and dense − 3 points)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from kprune_lib.workbook import plots
    from kprune_lib.workbook import results as views

    df = pd.DataFrame([r for r in rows if r["method"] in methods])
    df[["dense", "pruned"]] = df[["dense", "pruned"]] / 100.0  # the workbook's tables hold metrics ×1
    fig = plots.metric_vs_flops(views.mean_over_seeds(df), panel=(4.5, 3.8))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def output_paths(report: Path) -> tuple[Path, Path]:
    """(csv, figure) next to the report: results/<name>.csv and figures/<name>.png."""
    name = report.stem.lower()
    return report.parent / "results" / f"{name}.csv", report.parent / "figures" / f"{name}.png"


def aggregate(out: Path, report: Path, *, tasks: list[str], methods: list[str], constraints: list[float],
              seeds: list[int], pair: tuple[str, str] | None, command: str, num_tokens: int,
              date: str | None = None) -> dict:
    """Read OUT, write the csv, the figure and the report; return {'rows', 'failures', 'csv', 'figure', 'report'}."""
    rows = select_rows(with_shared_points([point_row(s) for s in load_summaries(out)], methods), tasks, methods,
                       constraints, seeds)
    failures = select_failures(load_failures(out), rows, tasks, methods, constraints, seeds)
    csv_path, fig_path = output_paths(report)
    write_csv(rows, csv_path)
    if rows:
        plot(rows, methods, fig_path)
    rel = lambda p: os.path.relpath(p, report.parent)  # noqa: E731
    text = render_report(rows, failures, methods=methods, n_seeds=len(seeds), pair=pair, command=command,
                         date=date or dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                         csv_path=rel(csv_path), figure_path=rel(fig_path) if rows else None, num_tokens=num_tokens)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    return {"rows": rows, "failures": failures, "csv": csv_path, "figure": fig_path if rows else None,
            "report": report}


# ---------------------------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", help=f"comma-separated (default {DEFAULTS['tasks']})")
    p.add_argument("--constraints", help=f"fractions of FLOPs to remove (default {DEFAULTS['constraints']})")
    p.add_argument("--seeds", help=f"sample seeds (default {DEFAULTS['seeds']})")
    p.add_argument("--methods", help=f"methods of `kprune prune --method` (default {DEFAULTS['methods']})")
    p.add_argument("--num-tokens", type=int, help=f"sample tokens per point (default {DEFAULTS['num_tokens']})")
    p.add_argument("--out", help="one folder per point under it (default runs/accuracy)")
    p.add_argument("--workers", type=int, default=2, help="points run at a time (>1: one thread each)")
    p.add_argument("--quick", action="store_true", help="smoke: mrpc, 0.8, seeds 0,1, 5000 tokens, "
                                                         "runs/accuracy-quick, benchmarks/ACCURACY-quick.md")
    p.add_argument("--report-only", action="store_true", help="aggregate what exists under --out, run nothing")
    p.add_argument("--report", help="the Markdown report (default benchmarks/ACCURACY.md)")
    p.add_argument("--compare", default=",".join(DEFAULT_COMPARE),
                   help="A,B: paired differences and done-when checks of A − B; several pairs as 'A,B;C,D' ('' for none)")
    return p


def resolve(a: argparse.Namespace) -> dict:
    """The effective settings: explicit options, else --quick's, else the defaults; validated."""
    base = {**DEFAULTS, **(QUICK if a.quick else {})}
    pick = lambda k: getattr(a, k) if getattr(a, k) is not None else base[k]  # noqa: E731
    settings = dict(tasks=parse_list(pick("tasks"), str, "tasks"), methods=parse_list(pick("methods"), str, "methods"),
                    constraints=parse_list(pick("constraints"), float, "constraints"),
                    seeds=parse_list(pick("seeds"), int, "seeds"), num_tokens=int(pick("num_tokens")),
                    out=Path(pick("out")), report=Path(pick("report")))
    check_constraints(settings["constraints"])
    if settings["num_tokens"] <= 0:
        raise AccuracyError(f"--num-tokens must be positive, got {settings['num_tokens']}")
    if a.workers < 1:
        raise AccuracyError(f"--workers must be at least 1, got {a.workers}")
    pairs = []
    for text in a.compare.split(";"):
        compare = [m.strip() for m in text.split(",") if m.strip()]
        if compare and (len(compare) != 2 or compare[0] == compare[1]):
            raise AccuracyError(f"--compare takes two different methods A,B (pairs separated by ';'), got {a.compare!r}")
        if compare:
            pairs.append(tuple(compare))
    settings["pair"] = (pairs[0] if len(pairs) == 1 else pairs) if pairs else None
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parser().parse_args(argv)
    try:
        s = resolve(a)
        shared = shared_dir()
        failures = []
        if not a.report_only:
            check_shared(shared, s["tasks"])
            points = grid(s["tasks"], s["methods"], s["constraints"], s["seeds"])
            todo = unfinished(points, s["out"])
            failures = run_points(points, shared, s["num_tokens"], s["out"], a.workers)
            merge_failures(s["out"], todo, failures)
        elif not s["out"].is_dir():
            raise AccuracyError(f"nothing to report: {s['out']} does not exist")
        command = shlex.join(["python", "benchmarks/accuracy.py"] + [x for x in argv if x != "--report-only"])
        result = aggregate(s["out"], s["report"], tasks=s["tasks"], methods=s["methods"], constraints=s["constraints"],
                           seeds=s["seeds"], pair=s["pair"], command=command, num_tokens=s["num_tokens"])
    except AccuracyError as e:
        print(f"accuracy: error: {e}", file=sys.stderr)
        return 2
    print(f"accuracy: {len(result['rows'])} points, {len(result['failures'])} failed; report {result['report']}, "
          f"csv {result['csv']}" + (f", figure {result['figure']}" if result["figure"] else ""), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
