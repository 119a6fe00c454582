"""Notebook 05's views of a sweep's results.csv: means over seeds, paired differences, kept units per layer,
speed-ups, pruning times and the latency-budget record."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# Convention: every table returned here holds metrics ×1 (fractions: 0.853, not 85.3), the sweep's scale;
# figures and the paired-difference view show them ×100 ("points").
_SUBLAYER_KIND = {"mha": "heads", "ffn": "neurons"}  # summary sublayer kind -> heatmap panel


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results table into one convention: metrics ×1 (fractions), one row per point.

    Two formats are accepted:
    - the sweep's `results.csv` (`kprune sweep`): metrics ×1, a `run_dir` per point, latency columns;
    - the accuracy protocol's csv (`benchmarks/accuracy.py`, `benchmarks/results/accuracy.csv`): metrics ×100 and a
      `delta` column, recognised by `delta` without `run_dir`; its dense, pruned and delta are divided by 100.
    The result always has `delta` (pruned − dense), `run_dir` and `latency_speedup` (NaN where the format lacks them);
    `df.attrs["source"]` is "sweep" or "accuracy".
    """
    df = pd.read_csv(path)
    if df.empty:
        raise ValueError(f"{path} has no rows: run a sweep first (kprune sweep GRID.yaml)")
    missing = {"task", "method", "constraint", "seed", "metric", "dense", "pruned"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a results table: no column(s) {', '.join(sorted(missing))}")
    source = "accuracy" if "delta" in df.columns and "run_dir" not in df.columns else "sweep"
    if source == "accuracy":
        for col in ("dense", "pruned", "delta"):
            df[col] = df[col] / 100.0
    df["delta"] = df["pruned"] - df["dense"]
    for col in ("run_dir", "latency_speedup", "flops_removed", "pruning_seconds"):
        if col not in df.columns:
            df[col] = np.nan
    df.attrs["source"] = source
    return df


def mean_over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd (0 for one seed) of the main metric, and mean costs, per (task, method, constraint);
    `seeds` is the number of rows (seeds) averaged."""
    g = df.groupby(["task", "method", "constraint"], as_index=False)
    out = g.agg(metric=("metric", "first"), dense=("dense", "mean"), pruned=("pruned", "mean"),
                pruned_std=("pruned", "std"), flops_removed=("flops_removed", "mean"),
                pruning_seconds=("pruning_seconds", "mean"), latency_speedup=("latency_speedup", "mean"),
                seeds=("seed", "count"))
    out["pruned_std"] = out["pruned_std"].fillna(0.0)
    return out


def seed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method) × constraint: the pruned metric ×100 as 'mean ± sd (n=seeds)'; 'mean (n=1)' for one."""
    mean = mean_over_seeds(df)
    text = [f"{100 * m:.2f}" + (f" ± {100 * s:.2f}" if n > 1 else "") + f" (n={n})"
            for m, s, n in zip(mean.pruned, mean.pruned_std, mean.seeds)]
    return mean.assign(pruned=text).pivot(index=["task", "method"], columns="constraint", values="pruned").fillna("–")


def speedup_table(df: pd.DataFrame, within: float = 0.03) -> pd.DataFrame:
    """Per task and method, the most compressed model whose metric is within `within` (3 points) of dense."""
    mean = mean_over_seeds(df)
    ok = mean[mean.pruned >= mean.dense - within]
    rows = []
    for (task, method), g in mean.groupby(["task", "method"]):
        good = ok[(ok.task == task) & (ok.method == method)]
        row = {"task": task, "method": method, "dense": g.dense.iloc[0]}
        if good.empty:
            row.update(constraint=np.nan, pruned=np.nan, flops_removed=np.nan, flops_speedup=np.nan,
                       latency_speedup=np.nan)
        else:
            best = good.loc[good.flops_removed.idxmax()]
            row.update(constraint=best.constraint, pruned=best.pruned, flops_removed=best.flops_removed,
                       flops_speedup=1.0 / (1.0 - best.flops_removed), latency_speedup=best.latency_speedup)
        rows.append(row)
    return pd.DataFrame(rows).set_index(["task", "method"])


def latency_budget_misses(df: pd.DataFrame) -> pd.DataFrame | str:
    """The points pruned to a latency budget, with budget, predicted and measured latency and the miss flag; a
    sentence when the results hold none."""
    if "latency_budget_ms" not in df or df.latency_budget_ms.isna().all():
        return "No point of these results was pruned to a latency budget."
    cols = ["task", "method", "seed", "latency_budget_ms", "predicted_latency_ms", "measured_latency_ms",
            "measured_over_budget", "budget_miss"]
    return df[df.latency_budget_ms.notna()][[c for c in cols if c in df]].reset_index(drop=True)


def pruning_time_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean pruning time (s) per task and method."""
    return df.pivot_table(index="task", columns="method", values="pruning_seconds", aggfunc="mean")


def _rounded(constraint) -> pd.Series | float:
    return np.round(constraint, 6)


def paired_differences(df: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per (task, constraint): mean, standard error and n of the per-seed differences pruned(a) − pruned(b).

    Only seeds that both methods have in that (task, constraint) are paired; unmatched seeds are dropped, and cells
    without a single pair are left out. se = sample sd / √n (NaN for n = 1). Metrics on the scale of `df`
    (×1 after load_results). Columns: task, constraint, mean, se, n.
    """
    if a == b:
        raise ValueError(f"paired differences need two different methods, got {a!r} twice")
    part = df[df.method.isin([a, b])].assign(constraint=lambda d: _rounded(d.constraint))
    wide = part.groupby(["task", "constraint", "seed", "method"]).pruned.mean().unstack("method")
    if a not in wide.columns or b not in wide.columns:
        return pd.DataFrame(columns=["task", "constraint", "mean", "se", "n"])
    g = (wide[a] - wide[b]).dropna().groupby(level=["task", "constraint"])
    out = pd.DataFrame({"mean": g.mean(), "se": g.std(ddof=1) / np.sqrt(g.count()), "n": g.count()})
    return out.reset_index()


def paired_summary(paired: pd.DataFrame, min_constraint: float = 0.6) -> dict:
    """Over the cells of `paired_differences` with constraint ≥ min_constraint: the mean of their mean differences,
    its standard error (sd of the cell means / √k) and k, the number of (task, constraint) cells (as
    benchmarks/accuracy.py summarises)."""
    means = paired[paired.constraint >= min_constraint - 1e-9]["mean"].astype(float)
    k = len(means)
    se = float(means.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    return {"mean": float(means.mean()) if k else float("nan"), "se": se, "n": k}


def paired_view(df: pd.DataFrame, compare: list[str], min_constraint: float = 0.6):
    """The notebook's paired-difference table for compare = [A, B], in points (×100): one row per (task, constraint)
    with the mean of the per-seed differences A − B, its standard error and n seed pairs, then one row with the
    mean over the cells with constraint ≥ min_constraint (n = cells); rounded to 3 decimals. A Markdown `Note`
    instead when A or B has no rows, or no seed has both."""
    from kprune_lib.workbook.plots import Note

    if len(compare) != 2 or compare[0] == compare[1]:
        return Note(f"**Paired differences skipped**: `compare` must name two different methods, got {compare!r}.")
    a, b = compare
    present = sorted(df.method.unique())
    missing = [m for m in (a, b) if m not in present]
    if missing:
        return Note(f"**Paired differences {a} − {b} skipped**: no rows of {', '.join(missing)} in the results table "
                    f"(methods present: {', '.join(present)}).")
    paired = paired_differences(df, a, b)
    if paired.empty:
        return Note(f"**Paired differences {a} − {b} skipped**: no seed has both methods in any (task, constraint).")
    s = paired_summary(paired, min_constraint)
    label = f"{a} − {b}"
    table = pd.DataFrame({"task": paired.task, "constraint": paired.constraint.map(lambda c: f"{c:g}"),
                          f"{label}: mean (points)": 100 * paired["mean"].astype(float),
                          "standard error (points)": 100 * paired.se.astype(float), "n": paired.n.astype(int),
                          "n counts": "seed pairs"})
    summary = {"task": "all tasks", "constraint": f"≥ {min_constraint:g}", f"{label}: mean (points)": 100 * s["mean"],
               "standard error (points)": 100 * s["se"], "n": s["n"], "n counts": "(task, constraint) cells"}
    out = pd.concat([table, pd.DataFrame([summary])], ignore_index=True).set_index(["task", "constraint"])
    return out.round(3)


def point_summaries(df: pd.DataFrame, points_dir: str | Path | None = None) -> list[dict]:
    """The summary.json of each point (row) of `df` that can be found, with task/method/constraint/seed set from
    the row: the row's `run_dir`/summary.json when it exists, else
    points_dir/<task>/<method>/c<constraint>/seed<seed>/summary.json (the accuracy protocol's and the sweep's layout).
    Points without a summary are skipped; one summary per (task, method, constraint, seed)."""
    found, seen = [], set()
    for row in df.itertuples(index=False):
        key = (row.task, row.method, round(float(row.constraint), 6), int(row.seed))
        if key in seen:
            continue
        candidates = []
        run_dir = getattr(row, "run_dir", None)
        if isinstance(run_dir, str) and run_dir:
            candidates.append(Path(run_dir) / "summary.json")
        if points_dir is not None:
            candidates.append(Path(points_dir) / row.task / row.method / f"c{float(row.constraint):g}"
                              / f"seed{int(row.seed)}" / "summary.json")
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            continue
        seen.add(key)
        found.append({**json.loads(path.read_text()), "task": row.task, "method": row.method,
                      "constraint": float(row.constraint), "seed": int(row.seed)})
    return found


def kept_per_layer(summaries: list[dict]) -> pd.DataFrame:
    """Long table of kept units per point and layer: task, method, constraint, seed, kind ('heads' | 'neurons'),
    layer, kept, total, fraction = kept / total. Counts from `heads_kept` / `neurons_kept`, totals from the
    summary's per-sublayer records (`units`); NaN total and fraction where a summary has none."""
    rows = []
    for s in summaries:
        totals = {(_SUBLAYER_KIND.get(r.get("kind")), int(r["layer"])): r["units"]
                  for r in s.get("sublayers", []) if "units" in r and "layer" in r}
        for kind, key in (("heads", "heads_kept"), ("neurons", "neurons_kept")):
            for layer, kept in enumerate(s.get(key, [])):
                total = totals.get((kind, layer), np.nan)
                rows.append({"task": s["task"], "method": s.get("method", "kprune"),
                             "constraint": float(s["constraint"]), "seed": int(s["seed"]), "kind": kind,
                             "layer": layer, "kept": int(kept), "total": total, "fraction": kept / total})
    columns = ["task", "method", "constraint", "seed", "kind", "layer", "kept", "total", "fraction"]
    return pd.DataFrame(rows, columns=columns)


def mean_kept(kept: pd.DataFrame, constraint: float | None = None) -> pd.DataFrame:
    """Mean over seeds of `kept_per_layer` at one constraint: `constraint`, or where None each task's largest one.

    Columns: task, constraint, kind, method, layer, fraction (mean), fraction_sd (sample sd, 0 for one seed),
    kept (mean count), total, seeds. Empty when no point has that constraint."""
    columns = ["task", "constraint", "kind", "method", "layer", "fraction", "fraction_sd", "kept", "total", "seeds"]
    if kept.empty:
        return pd.DataFrame(columns=columns)
    kept = kept.assign(constraint=_rounded(kept.constraint))
    if constraint is None:
        chosen = kept.constraint == kept.groupby("task").constraint.transform("max")
    else:
        chosen = np.isclose(kept.constraint, float(constraint))
    g = kept[chosen].groupby(["task", "constraint", "kind", "method", "layer"], as_index=False)
    out = g.agg(fraction=("fraction", "mean"), fraction_sd=("fraction", "std"), kept=("kept", "mean"),
                total=("total", "first"), seeds=("seed", "nunique"))
    out["fraction_sd"] = out["fraction_sd"].fillna(0.0)
    return out[columns]


def kept_matrix(mean: pd.DataFrame, task: str, kind: str) -> pd.DataFrame:
    """Methods × layers matrix of the mean fraction kept, of one task and kind ('heads' | 'neurons') of `mean_kept`."""
    part = mean[(mean.task == task) & (mean.kind == kind)]
    return part.pivot(index="method", columns="layer", values="fraction").sort_index()


def kept_fractions(df: pd.DataFrame, points_dir: str | Path | None = None,
                   constraint: float | None = None) -> pd.DataFrame:
    """The notebook's heatmap data: `mean_kept(kept_per_layer(point_summaries(df, points_dir)), constraint)`."""
    return mean_kept(kept_per_layer(point_summaries(df, points_dir)), constraint)


def latency_budget_record(results_dir: str | Path):
    """The newest full record `<date>-latency-budget.json` of benchmarks/latency_budget.py under results_dir (dict,
    its path under "path"), or a Markdown `Note` saying how to make one."""
    from kprune_lib.workbook.plots import Note

    found = sorted(Path(results_dir).glob("*-latency-budget.json"))  # `--quick` runs end in -latency-budget-quick
    if not found:
        return Note(f"**Accuracy at equal latency skipped**: no `*-latency-budget.json` under `{results_dir}` — run "
                    "`make latency-budget` (benchmarks/latency_budget.py, ~30 min on 2 cores) first.")
    return json.loads(found[-1].read_text()) | {"path": str(found[-1])}


def latency_budget_points(record: dict) -> pd.DataFrame:
    """The latency-budget benchmark's models as points for `plots.accuracy_vs_latency`: kind ("dense", "latency
    budget", "FLOPs constraint": the FLOPs-constrained model matched to each latency-budget one), seed, budget
    fraction, measured_ms (all timed in the benchmark's final interleaved rounds) and metric (×1). The dense point
    needs the record's `dense_metric` (records before 2026-11-26 lack it: no dense point)."""
    rows = record["rows"]
    if not rows:
        raise ValueError(f"the latency-budget record {record.get('path', '')} has no rows; rerun "
                         "benchmarks/latency_budget.py")
    pts = [{"kind": "dense", "seed": None, "budget_fraction": 1.0, "measured_ms": record["dense_ms"],
            "metric": record["dense_metric"]}] if record.get("dense_metric") is not None else []
    pts += [{"kind": "latency budget", "seed": r["seed"], "budget_fraction": r["budget_fraction"],
             "measured_ms": r["measured_ms"], "metric": r["accuracy"]} for r in rows]
    pts += [{"kind": "FLOPs constraint", "seed": r["seed"], "budget_fraction": r["budget_fraction"],
             "measured_ms": r["flops_measured_ms"], "metric": r["flops_accuracy"]} for r in rows]
    return pd.DataFrame(pts)


def latency_budget_figure(record):
    """Accuracy vs measured latency of a latency-budget record, latency budgets against the FLOPs-constrained
    models of the same measured latency, one line per seed (a `Note` is passed through)."""
    from kprune_lib.workbook import plots

    if isinstance(record, plots.Note):
        return record
    fig = plots.accuracy_vs_latency(latency_budget_points(record))
    fig.axes[0].set_title(f"Accuracy vs measured latency ({Path(record['path']).name})", fontsize="small")
    return fig


def latency_budget_means(record):
    """Per budget fraction, the means over seeds: measured / budget (final interleaved rounds), the metric (×100) of
    the latency-budget and FLOPs-constrained models of equal measured latency and their difference, n seeds."""
    from kprune_lib.workbook.plots import Note

    if isinstance(record, Note):
        return record
    rows = pd.DataFrame(record["rows"])
    g = rows.groupby("budget_fraction", sort=False)
    out = pd.DataFrame({"measured / budget": g.measured_over_budget.mean(),
                        "worst measured / budget": g.measured_over_budget.max(),
                        "latency budget (×100)": 100 * g.accuracy.mean(),
                        "FLOPs-constrained (×100)": 100 * g.flops_accuracy.mean(),
                        "Δ (points)": 100 * g.delta_accuracy.mean(),
                        "sd of Δ (points)": 100 * g.delta_accuracy.std(),
                        "n seeds": g.seed.nunique()})
    out.index = [f"{100 * f:.0f} % of dense" for f in out.index]
    return out.round(3)
