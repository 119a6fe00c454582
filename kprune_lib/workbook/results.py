"""Notebook 05's views of a sweep's results.csv: means over seeds, paired differences, kept units per layer,
speed-ups, pruning times, the latency-budget record and what produced the results (fingerprint, provenance)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kprune_lib import config
from kprune_lib.data.tasks import QA_TASK_TABLE
from kprune_lib.method.methods import METHOD_NAMES
from kprune_lib.workbook import plots
from kprune_lib.workbook.plots import TASK_NAMES, Note, metric_name, ordered, task_name

# Convention: the data tables here (load_results, mean_over_seeds, paired_differences …) hold metrics ×1 (fractions:
# 0.853, not 85.3), the sweep's scale; what the report shows (figures and the "report tables": seed_table,
# speedup_table, pruning_time_table, paired_view, latency_budget_means) is ×100, with task display names.
_SUBLAYER_KIND = {"mha": "heads", "ffn": "neurons"}  # summary sublayer kind -> heatmap panel


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a results table into one convention: metrics ×1 (fractions), one row per point.

    Two formats are accepted:
    - the sweep's `results.csv` (`kprune sweep`): metrics ×1 (SQuAD's, percentages in summary.json, are divided by
      100 here), a `run_dir` per point (relative to the csv's folder, or absolute), latency and provenance columns;
    - the accuracy protocol's csv (`benchmarks/accuracy.py`, `benchmarks/results/accuracy.csv`): metrics ×100 and a
      `delta` column, recognised by `delta` without `run_dir`; its dense, pruned and delta are divided by 100.
    The result always has `delta` (pruned − dense), `run_dir` (absolute; NaN where the format lacks it) and
    `latency_speedup`; `df.attrs["source"]` is "sweep" or "accuracy", `df.attrs["path"]` the csv.
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
    else:
        qa = df.task.isin(list(QA_TASK_TABLE))
        for col in [c for c in df.columns if c in ("dense", "pruned") or c.startswith(("dense_", "pruned_"))]:
            if pd.api.types.is_numeric_dtype(df[col]):
                df.loc[qa, col] = df.loc[qa, col] / 100.0
    df["delta"] = df["pruned"] - df["dense"]
    for col in ("run_dir", "latency_speedup", "flops_removed", "pruning_seconds"):
        if col not in df.columns:
            df[col] = np.nan
    base = Path(path).resolve().parent
    df["run_dir"] = [str(base / d) if isinstance(d, str) and d and not Path(d).is_absolute() else d
                     for d in df["run_dir"]]
    df.attrs.update(source=source, path=str(path))
    return df


def mean_over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample sd (0 for one seed) of the main metric, and mean costs, per (task, method, constraint);
    `seeds` is the number of rows (seeds) averaged."""
    df = df.assign(**{c: np.nan for c in ("flops_removed", "pruning_seconds", "latency_speedup") if c not in df})
    df = df.assign(collapsed=_flags(df["collapsed"]) if "collapsed" in df else False)
    g = df.groupby(["task", "method", "constraint"], as_index=False)
    out = g.agg(metric=("metric", "first"), dense=("dense", "mean"), pruned=("pruned", "mean"),
                pruned_std=("pruned", "std"), flops_removed=("flops_removed", "mean"),
                pruning_seconds=("pruning_seconds", "mean"), latency_speedup=("latency_speedup", "mean"),
                seeds=("seed", "count"), collapsed=("collapsed", "sum"))
    out["pruned_std"] = out["pruned_std"].fillna(0.0)
    return out


def _flags(values: pd.Series) -> pd.Series:
    """The csv's `collapsed` column as booleans (True / False / empty where not recorded -> False)."""
    return values.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def _label(df: pd.DataFrame) -> pd.DataFrame:
    """task -> its display name (MRPC, STS-B …) and metric -> '<metric as words> (×100)', for report tables."""
    return df.assign(task=df.task.map(task_name), metric=[f"{metric_name(m)} (×100)" for m in df.metric])


def _task_order(df: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Rows in the GLUE papers' task order and the registry's method order (by the raw names)."""
    order = {"task": ordered(df.task, TASK_NAMES), "method": ordered(df.method, METHOD_NAMES)}
    key = lambda col: col.map({n: i for i, n in enumerate(order[col.name])}) if col.name in order else col  # noqa: E731
    return df.sort_values(index, key=key, kind="stable")


def seed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Report table: per task (display name), metric and method, the pruned metric ×100 at each constraint
    (columns: % of FLOPs removed) as 'mean ± sd (n=seeds)'; 'mean (n=1)' for one seed, '–' where not run;
    'collapsed k/n' where k seeds' models predict one class for the whole dev set (data.evaluate.collapsed)."""
    mean = _task_order(mean_over_seeds(df), ["task", "method", "constraint"])
    text = [f"{100 * m:.2f}" + (f" ± {100 * s:.2f}" if n > 1 else "") + f" (n={n})"
            + (f" collapsed {int(k)}/{n}" if k else "")
            for m, s, n, k in zip(mean.pruned, mean.pruned_std, mean.seeds, mean.collapsed)]
    mean = _label(mean).assign(pruned=text, constraint=[f"{100 * c:g} %" for c in mean.constraint])
    table = mean.pivot_table(index=["task", "metric", "method"], columns="constraint", values="pruned",
                             aggfunc="first", sort=False)
    table = table[sorted(table.columns, key=lambda c: float(c.split()[0]))].fillna("–")
    table.columns.name = "FLOPs removed"
    return table


def speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Report table: per task and method, the most compressed model whose mean metric is within
    `config.ACCURACY_DROP_POINTS` (3) points of dense, absolute: pruned ×100 ≥ dense ×100 − 3. Its metric ×100
    (mean over n seeds), % of FLOPs removed, FLOPs speedup 1 / (1 − removed) and measured latency speedup (sweeps
    only). Methods without such a model have no row (`none_within` names them); all-NaN columns are left out."""
    mean = mean_over_seeds(df)
    ok = mean[100 * mean.pruned >= 100 * mean.dense - config.ACCURACY_DROP_POINTS - 1e-9]
    best = ok.loc[ok.groupby(["task", "method"]).flops_removed.idxmax()] if len(ok) else ok
    best = _label(_task_order(best, ["task", "method"]))
    table = pd.DataFrame({"task": best.task, "metric": best.metric, "method": best.method,
                          "dense (×100)": 100 * best.dense, "pruned (×100)": 100 * best.pruned, "n seeds": best.seeds,
                          "FLOPs removed (%)": 100 * best.flops_removed,
                          "FLOPs speedup (×)": 1.0 / (1.0 - best.flops_removed),
                          "latency speedup (×)": best.latency_speedup})
    return table.set_index(["task", "metric", "method"]).dropna(axis=1, how="all").round(2)


def none_within(df: pd.DataFrame):
    """A `Note` naming the (task, method) pairs of `df` with no model within ACCURACY_DROP_POINTS of dense."""
    have = set(speedup_table(df).index.droplevel("metric"))
    pairs = _task_order(df[["task", "method"]].drop_duplicates(), ["task", "method"])
    lost = [f"{task_name(t)} {m}" for t, m in zip(pairs.task, pairs.method) if (task_name(t), m) not in have]
    drop = config.ACCURACY_DROP_POINTS
    if not lost:
        return Note(f"Every method has a model within {drop:g} points of dense on every task.")
    return Note(f"No model within {drop:g} points of dense (so no row above): {', '.join(lost)}.")


def latency_budget_misses(df: pd.DataFrame):
    """The points pruned to a latency budget, with budget, predicted and measured latency and the miss flag; a
    `Note` when the results hold none."""
    if "latency_budget_ms" not in df or df.latency_budget_ms.isna().all():
        return Note("No point of these results was pruned to a latency budget.")

    names = {"task": "task", "method": "method", "seed": "seed", "latency_budget_ms": "budget (ms)",
             "predicted_latency_ms": "predicted (ms)", "measured_latency_ms": "measured (ms)",
             "measured_over_budget": "measured / budget", "budget_miss": "miss"}
    out = df[df.latency_budget_ms.notna()][[c for c in names if c in df]].rename(columns=names)
    return out.assign(task=out.task.map(task_name)).reset_index(drop=True)


def pruning_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per task and method: mean, sample sd (NaN for one) and n of the pruning time (s) over the points (constraints ×
    seeds). Columns task, method, mean, sd, n."""
    g = df.dropna(subset=["pruning_seconds"]).groupby(["task", "method"]).pruning_seconds
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(), "n": g.count()}).reset_index()


def pruning_time_table(df: pd.DataFrame) -> pd.DataFrame:
    """Report table: task (display name) × method, the pruning time in s as 'mean ± sd (n=points)'."""
    t = _task_order(pruning_times(df), ["task", "method"])
    text = [f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 else "") + f" (n={n})" for m, s, n in zip(t["mean"], t.sd, t.n)]
    table = t.assign(task=t.task.map(task_name), time=text).pivot_table(
        index="task", columns="method", values="time", aggfunc="first", sort=False).fillna("–")
    table.columns.name = "pruning time (s)"
    return table


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
    table = pd.DataFrame({"task": paired.task.map(task_name), "constraint": paired.constraint.map(lambda c: f"{c:g}"),
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


def latency_budget_record(results_dir: str | Path | None):
    """The newest full record `<date>-latency-budget.json` of benchmarks/latency_budget.py under results_dir (dict,
    its path under "path"), or a Markdown `Note`: that results_dir is None (a sweep's report: its sweep has no such
    record), or how to make one."""
    if results_dir is None:
        return Note("**Accuracy at equal latency**: this sweep has no latency-budget record (`latency_results_dir` "
                    "is None; pass the folder of `make latency-budget`'s records to show one).")
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
    if isinstance(record, plots.Note):
        return record
    fig = plots.accuracy_vs_latency(latency_budget_points(record), label="accuracy")
    fig.axes[0].set_title(f"Accuracy vs measured latency ({Path(record['path']).name})", fontsize="small")
    return fig


def latency_budget_means(record):
    """Per budget fraction, the means over seeds: measured / budget (final interleaved rounds), the metric (×100) of
    the latency-budget and FLOPs-constrained models of equal measured latency and their difference, n seeds. None
    for a `Note` (the figure's cell has shown it already)."""
    if isinstance(record, Note):
        return None
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


# ---- what produced the results --------------------------------------------------------------------------------
PROVENANCE_COLUMNS = ("commit", "dirty", "kprune_lib", "python", "torch", "transformers", "device_name", "threads",
                      "date", "grid", "grid_sha256", "wall_seconds")


def csv_fingerprint(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes: names the exact results table a report was made from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _distinct(values: pd.Series) -> str:
    """The distinct values of a column, in a line: all of them up to 3, else a range (numbers) or first … last."""
    v = values.dropna()
    if v.empty:
        return "not recorded"
    uniq = sorted(v.astype(str).unique()) if not pd.api.types.is_numeric_dtype(v) else sorted(v.unique())
    if len(uniq) <= 3:
        return ", ".join(f"{u:g}" if isinstance(u, float) else str(u) for u in uniq)
    if pd.api.types.is_numeric_dtype(v):
        return f"{len(uniq)} values, {min(uniq):g} to {max(uniq):g} (sum {v.sum():g})"
    return f"{len(uniq)} values, {uniq[0]} … {uniq[-1]}"


def report_header(df: pd.DataFrame, csv_path: str | Path, grid_file: str | Path | None = None) -> str:
    """What produced a report, as text: the table read (its format and sha256), the number of points, tasks,
    methods, models, sample tokens and seeds, the distinct values of every provenance column (or "not recorded" for a
    column an older csv lacks), and the grid file's YAML (its sha256 checked against the csv's `grid_sha256`)."""
    def col(name):
        return _distinct(df[name]) if name in df else "not recorded"

    lines = [f"{len(df)} points from {csv_path} ({df.attrs.get('source', 'sweep')} format)",
             f"results.csv sha256: {csv_fingerprint(csv_path)}",
             f"tasks: {', '.join(task_name(t) for t in ordered(df.task, TASK_NAMES))}",
             f"methods: {', '.join(ordered(df.method, METHOD_NAMES))}", f"models: {col('model')}",
             f"sample tokens: {col('num_tokens')}", f"seeds: {col('seed')} (n = {df.seed.nunique()})",
             "provenance:"] + [f"  {name}: {col(name)}" for name in PROVENANCE_COLUMNS]
    if grid_file is None:
        return "\n".join(lines + ["grid: no grid file given"])
    grid = Path(grid_file)
    if not grid.is_file():
        return "\n".join(lines + [f"grid: {grid} not found"])
    digest = hashlib.sha256(grid.read_bytes()).hexdigest()
    recorded = set(df.grid_sha256.dropna().astype(str)) if "grid_sha256" in df else set()
    check = ("equals the csv's grid_sha256" if recorded == {digest} else
             "the csv records no grid_sha256" if not recorded else "DIFFERS from the csv's grid_sha256")
    return "\n".join(lines + [f"grid {grid} (sha256 {digest}; {check}):", "", grid.read_text().rstrip()])
