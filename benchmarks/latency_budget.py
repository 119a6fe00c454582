"""Prune to a latency budget, measured (issue #14): the shared MiniLM-L6 MRPC checkpoint on the CPU, 2 threads,
batch 32 × sequence length 128.

    python benchmarks/latency_budget.py            # budgets 60 / 45 / 30 % of the measured dense latency, 20 000
                                                   # tokens, seeds 0, 1, 2
    python benchmarks/latency_budget.py --quick    # smoke: batch 4 × 32 tokens, 1 000 sample tokens, one FLOPs try

1. The latency table of the dense model (`kprune_lib.costs.latency`, measured afresh): its dense latency sets the budgets.
2. Per seed and budget fraction: K-prune with `latency_budget_ms = fraction × dense` -> OUT/seed<n>/latency-<pct>/
   (summary.json holds the budget, the table's prediction, the pruned model's measured latency and the dense model's
   re-measured in the same rounds).
3. Per seed and budget: FLOPs-constrained K-prune (same seed) at constraints found by a secant search on the
   *measured* latency, each try timed in the same interleaved rounds as the latency-budget model, until the two are
   within --match-tol (at most --max-tries prunes; every try is kept and drawn) -> OUT/seed<n>/flops-c<constraint>/.
4. Every model (dense, latency-budget, every FLOPs try) re-measured in one set of interleaved rounds: each model's
   latency as a fraction of the dense model's in those rounds is compared with the budget fraction (the machine's
   speed drifts by 10-20 % over minutes on a shared VM; a ratio within the same rounds does not).
5. One table (budget, prediction, measured latency, dev accuracy; the FLOPs-constrained model of the same measured
   latency and its accuracy; means over seeds) -> benchmarks/LATENCY.md, the figure accuracy vs measured latency ->
   benchmarks/figures/latency_budget.png, everything -> benchmarks/results/<date>-latency-budget.json.
   (--quick writes its report and figure under OUT instead.)

Points whose summary.json exists under OUT are reused, never rerun (then the cached latency table is reused too;
otherwise the table is measured afresh). Run it on an otherwise idle machine: a table measured under load is wrong
(its fixed part can even come out negative, which the log warns about).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kprune_lib import api
from kprune_lib.costs import latency
from kprune_lib.workbook import plots  # noqa: E402
from kprune_lib._atomic import write_text  # noqa: E402
from kprune_lib.artifacts.checkpoint import load_model, load_pruned  # noqa: E402

SHARED = Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))
DEFAULTS = dict(model=str(SHARED / "models" / "minilm-l6-mrpc"), data_dir=str(SHARED / "data" / "glue"), task="mrpc",
                fractions="0.60,0.45,0.30", batch=32, seq=128, threads=2, num_tokens=20000, seeds="0,1,2", max_tries=3,
                match_tol=0.02, out=ROOT / "runs" / "latency-budget", report=ROOT / "benchmarks" / "LATENCY.md",
                figure=ROOT / "benchmarks" / "figures" / "latency_budget.png",
                results=ROOT / "benchmarks" / "results")
QUICK = dict(batch=4, seq=32, num_tokens=1000, max_tries=1, seeds="0", out=ROOT / "runs" / "latency-budget-quick")
WITHIN = 0.10  # the criterion: measured latency within 10 % of the budget


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()
                                                                                if k != "out"))
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v) if not isinstance(v, Path) else Path, default=None,
                       help=f"default {v}")
    args = p.parse_args(argv)
    settings = {**DEFAULTS, **(QUICK if args.quick else {})}
    if args.quick:
        settings.update(report=settings["out"] / "LATENCY-quick.md", figure=settings["out"] / "latency_budget.png",
                        results=settings["out"])
    for k in DEFAULTS:
        if getattr(args, k) is not None:
            settings[k] = getattr(args, k)
    ns = argparse.Namespace(**settings, quick=args.quick)
    ns.fractions = [float(f) for f in str(ns.fractions).split(",")]
    ns.seeds = [int(x) for x in str(ns.seeds).split(",")]
    return ns


def prune_point(a, out: Path, seed: int, **budget) -> dict:
    """One K-prune run (reused when its summary.json exists); budget: constraint=… or latency_budget_ms=…."""
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    lat = dict(latency_batch=a.batch, latency_seq=a.seq, threads=a.threads, latency_device="cpu")
    return api.prune(a.model, a.task, str(out), data_dir=a.data_dir, device="cpu", overwrite=True,
                     num_tokens=a.num_tokens, seed=seed, **budget, **(lat if "latency_budget_ms" in budget else {}))


def measured_pair(a, reference: Path, candidate: Path) -> float:
    """Measured latency ratio candidate / reference (same interleaved rounds)."""
    t = latency.measure_latencies({"ref": load_pruned(reference / "model"), "cand": load_pruned(candidate / "model")},
                                  a.batch, a.seq, "cpu", a.threads)
    return t["cand"] / t["ref"]


def match_flops(a, seed_dir: Path, seed: int, lat_dir: Path, lat_summary: dict, table) -> list[dict]:
    """FLOPs-constrained K-prune tries whose measured latency approaches the latency-budget model's: a secant search
    on the constraint c (latency falls with c), starting at the latency model's own FLOPs removed."""
    tries: list[dict] = []
    span = (table.total_ms - table.floor_ms()) / table.total_ms  # d(latency/dense)/dc, roughly
    c = round(lat_summary["flops_removed"], 4)
    for _ in range(a.max_tries):
        out = seed_dir / f"flops-c{c:g}"
        s = prune_point(a, out, seed, constraint=c)
        ratio = measured_pair(a, lat_dir, out)
        tries.append({"constraint": c, "dir": str(out), "ratio_to_latency_model": ratio, "summary": s})
        if abs(ratio - 1) <= a.match_tol:
            break
        if len(tries) >= 2 and tries[-1]["ratio_to_latency_model"] != tries[-2]["ratio_to_latency_model"]:
            (c0, r0), (c1, r1) = ((t["constraint"], t["ratio_to_latency_model"]) for t in tries[-2:])
            c_next = c1 + (1 - r1) * (c1 - c0) / (r1 - r0)
        else:  # ratio r at c: remove (r − 1)·latency of sublayer time more
            lat_frac = lat_summary["measured_latency_ms"] / table.total_ms
            c_next = c + (ratio - 1) * lat_frac / span
        c_next = round(min(max(c_next, 0.05), 0.97), 4)
        if any(abs(t["constraint"] - c_next) < 1e-4 for t in tries):
            break
        c = c_next
    return tries


def main(argv=None) -> int:
    a = parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    dense, _ = load_model(a.model, device="cpu")
    # a fresh table, measured now (idle machine), unless points of an earlier run are resumed: their budgets were
    # fractions of the cached table's dense latency
    resumed = any(a.out.glob("seed*/latency-*/summary.json"))
    table = latency.latency_table(dense, a.batch, a.seq, "cpu", a.threads, refresh=not resumed)
    print(latency.format_table(table).splitlines()[-1], f"(batch {a.batch}, seq {a.seq}, {a.threads} threads)")
    points = []
    for seed in a.seeds:
        for frac in a.fractions:
            budget = frac * table.total_ms
            lat_dir = a.out / f"seed{seed}" / f"latency-{round(100 * frac)}"
            s = prune_point(a, lat_dir, seed, latency_budget_ms=budget)
            tries = match_flops(a, lat_dir.parent, seed, lat_dir, s, table)
            points.append({"seed": seed, "fraction": frac, "budget_ms": budget, "dir": str(lat_dir), "summary": s,
                           "flops_tries": tries})
    # every model in one set of interleaved rounds
    models = {"dense": dense}
    models |= {p["dir"]: load_pruned(Path(p["dir"]) / "model") for p in points}
    models |= {t["dir"]: load_pruned(Path(t["dir"]) / "model") for p in points for t in p["flops_tries"]}
    ms = latency.measure_latencies(models, a.batch, a.seq, "cpu", a.threads, progress=True)
    write_outputs(a, table, points, ms)
    return 0


def _pick(p: dict, ms: dict) -> dict:
    """The FLOPs try whose re-measured latency is closest to the latency-budget model's."""
    return min(p["flops_tries"], key=lambda t: abs(ms[t["dir"]] - ms[p["dir"]]))


def write_outputs(a, table, points: list[dict], ms: dict) -> None:
    metric = points[0]["summary"]["metric"]
    dense_acc = points[0]["summary"]["dense"][metric]
    rows = []
    for p in points:
        s, f = p["summary"], _pick(p, ms)
        fs = f["summary"]
        frac = ms[p["dir"]] / ms["dense"]  # fraction of dense, both timed in the same rounds
        in_run = s.get("measured_fraction_of_dense")
        rows.append({
            "seed": p["seed"], "budget_fraction": p["fraction"], "budget_ms": p["budget_ms"],
            "predicted_ms": s["predicted_latency_ms"], "measured_in_run_ms": s["measured_latency_ms"],
            "measured_in_run_fraction": in_run, "measured_ms": ms[p["dir"]], "measured_fraction": frac,
            "measured_over_budget": frac / p["fraction"],
            "measured_in_run_over_budget": None if in_run is None else in_run / p["fraction"],
            "within_10pct": abs(frac / p["fraction"] - 1) <= WITHIN,
            "flops_removed": s["flops_removed"], "accuracy": s["pruned"][metric],
            "flops_constraint": f["constraint"], "flops_flops_removed": fs["flops_removed"],
            "flops_measured_ms": ms[f["dir"]], "flops_accuracy": fs["pruned"][metric],
            "delta_accuracy": s["pruned"][metric] - fs["pruned"][metric],
        })
    date = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    seeds = ", ".join(str(x) for x in a.seeds)
    setting = (f"{Path(a.model).name} on {a.task.upper()}, CPU ({table.key['device_name']}), {a.threads} threads, "
               f"batch {a.batch} × sequence length {a.seq}, {a.num_tokens:,} sample tokens, seeds {seeds}")
    cal = table.calibration or {}
    lines = [f"# Pruning to a latency budget{' (quick smoke run)' if a.quick else ''}", "",
             f"`python benchmarks/latency_budget.py{' --quick' if a.quick else ''}` ({date}): {setting}. Dense: "
             f"{table.total_ms:.1f} ms in the latency table (floor {table.floor_ms():.1f} ms, fixed part "
             f"{table.fixed_ms:.1f} ms; whole model timed at "
             + ", ".join(f"{round(100 * x)} % → {t:.1f} ms" for x, t in zip(cal.get("fractions", []),
                                                                         cal.get("measured_raw_ms", [])))
             + f"), {ms['dense']:.1f} ms in the final rounds; dev {metric} {100 * dense_acc:.2f}.", "",
             "**measured / budget** is the model's latency as a fraction of the dense model's, both timed in the "
             "final interleaved rounds over every model, divided by the budget fraction (the machine's speed drifts "
             "between the table and the end of the run; a ratio within the same rounds does not). \"in run\": the "
             "same ratio right after pruning (`measured_fraction_of_dense` in summary.json). The FLOPs-constrained "
             "model of each row is the FLOPs-constrained K-prune run of the same seed (constraint found by a secant "
             "search on the measured latency) whose latency is closest to the latency-budget model's.", "",
             "| budget | seed | budget ms | predicted ms | measured ms (final) | measured / budget (in run) "
             "| within 10 % | FLOPs removed | dev acc | FLOPs-constrained: constraint | its measured ms "
             "| its dev acc | Δ acc (latency − FLOPs) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        in_run = "" if r["measured_in_run_over_budget"] is None else f" ({r['measured_in_run_over_budget']:.3f})"
        lines.append(f"| {100 * r['budget_fraction']:.0f} % | {r['seed']} | {r['budget_ms']:.1f} | "
                     f"{r['predicted_ms']:.1f} | {r['measured_ms']:.1f} | {r['measured_over_budget']:.3f}{in_run} | "
                     f"{'yes' if r['within_10pct'] else '**no**'} | {100 * r['flops_removed']:.1f} % | "
                     f"{100 * r['accuracy']:.2f} | {r['flops_constraint']:g} | {r['flops_measured_ms']:.1f} | "
                     f"{100 * r['flops_accuracy']:.2f} | {100 * r['delta_accuracy']:+.2f} |")
    lines += ["", f"Means over seeds {seeds}:", "",
              "| budget | measured / budget | in run | dev acc, latency budget | dev acc, FLOPs-constrained "
              "| Δ acc (latency − FLOPs) |", "|---|---|---|---|---|---|"]
    summary_rows = []
    for frac in a.fractions:
        g = [r for r in rows if r["budget_fraction"] == frac]
        in_run = [r["measured_in_run_over_budget"] for r in g if r["measured_in_run_over_budget"] is not None]
        m = {"budget_fraction": frac, "measured_over_budget": _mean(r["measured_over_budget"] for r in g),
             "measured_in_run_over_budget": _mean(in_run) if in_run else None,
             "accuracy": _mean(r["accuracy"] for r in g), "flops_accuracy": _mean(r["flops_accuracy"] for r in g),
             "delta_accuracy": _mean(r["delta_accuracy"] for r in g)}
        summary_rows.append(m)
        lines.append(f"| {100 * frac:.0f} % | {m['measured_over_budget']:.3f} | "
                     f"{'' if m['measured_in_run_over_budget'] is None else format(m['measured_in_run_over_budget'], '.3f')} | "
                     f"{100 * m['accuracy']:.2f} | {100 * m['flops_accuracy']:.2f} | {100 * m['delta_accuracy']:+.2f} |")
    lines += ["", f"Every FLOPs-constrained try (constraint → measured ms, dev {metric}):", ""]
    for p in points:
        tries = ", ".join(f"{t['constraint']:g} → {ms[t['dir']]:.1f} ms, {100 * t['summary']['pruned'][metric]:.2f}"
                          for t in p["flops_tries"])
        lines.append(f"- seed {p['seed']}, budget {100 * p['fraction']:.0f} %: {tries}")
    figure = Path(a.figure)
    lines += ["", f"![accuracy vs measured latency]({os.path.relpath(figure, Path(a.report).parent)})", ""]

    import pandas as pd

    pts = [{"kind": "dense", "seed": None, "measured_ms": ms["dense"], "metric": dense_acc}]
    pts += [{"kind": "latency budget", "seed": p["seed"], "measured_ms": ms[p["dir"]],
             "metric": p["summary"]["pruned"][metric]} for p in points]
    pts += [{"kind": "FLOPs constraint", "seed": p["seed"], "measured_ms": ms[t["dir"]],
             "metric": t["summary"]["pruned"][metric]} for p in points for t in p["flops_tries"]]
    fig = plots.accuracy_vs_latency(pd.DataFrame(pts))
    fig.axes[0].set_ylabel(f"dev {metric} (×100)")
    plots.save(fig, figure)
    _write(Path(a.report), "\n".join(lines))
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    record = {"setting": setting, "date": date, "dense_ms": ms["dense"], "dense_metric": dense_acc, "table": table.to_json(), "rows": rows,
              "means": summary_rows, "measured_ms": ms, "points": [{k: v for k, v in p.items() if k != "summary"} | {
                  "flops_tries": [{k: v for k, v in t.items() if k != "summary"} for t in p["flops_tries"]]}
                  for p in points],
              "torch": torch.__version__, "python": platform.python_version()}
    _write(Path(a.results) / f"{stamp}-latency-budget{'-quick' if a.quick else ''}.json", json.dumps(record, indent=1))
    print("\n".join(lines))


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v)


def _write(path: Path, text: str) -> None:
    write_text(path, text)


if __name__ == "__main__":
    sys.exit(main())
