"""A sweep's results: one results.csv row per point of the grid finished with its own identity, and the report.

Rows carry the summary's figures, its provenance (commit, versions, device; kprune_lib/_provenance.py), the point's
identity key and how it was run (grid file and hash, wall time); local paths are relative to results.csv's folder.
The report (notebook 05) reads that csv and the grid beside it, and nothing else.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from kprune_lib._atomic import write_text
from kprune_lib.workbook.points import (ERROR, NOTEBOOKS_DIR, SUMMARY, Point, execute_notebook, read_record,
                                        render_html, reuse_reason)

RESULTS_NOTEBOOK = "05_results.py"
COLUMNS = ["task", "method", "constraint", "seed", "num_tokens", "metric", "dense", "pruned", "collapsed",
           "flops_removed",
           "flops_dense", "flops_pruned", "params_dense", "params_pruned", "pruning_seconds", "latency_dense_s",
           "latency_pruned_s", "latency_speedup", "sample_examples", "seq_len", "device", "model", "run_dir"]
PROVENANCE_COLUMNS = ["identity", "commit", "dirty", "kprune_lib", "python", "torch", "transformers",
                      "device_name", "threads", "date", "grid", "grid_sha256", "wall_seconds"]


LATENCY_COLUMNS = ["latency_budget_ms", "predicted_latency_ms", "measured_latency_ms", "measured_over_budget",
                   "budget_miss"]  # points pruned to a latency budget only


def _relative(path, start: Path) -> str | None:
    """A local path relative to `start` (results.csv's folder); hub ids and None unchanged."""
    if path is None or not Path(path).is_absolute():
        return path
    return os.path.relpath(path, start)


def summary_row(summary: dict, run_dir: Path, record: dict | None = None, csv_dir: Path | None = None) -> dict:
    """One results.csv row: the summary's figures, its provenance, the point's identity key and how it was run;
    local paths relative to csv_dir (results.csv's folder) when given."""
    m = summary["metric"]
    row = {k: summary.get(k) for k in COLUMNS}
    if summary.get("latency_budget_ms") is not None:
        row.update({k: summary.get(k) for k in LATENCY_COLUMNS})
    row.update(dense=summary["dense"][m], pruned=summary["pruned"][m], run_dir=str(run_dir),
               collapsed=(summary.get("collapsed") or {}).get("pruned"))
    prov, record = summary.get("provenance") or {}, record or {}
    row.update({k: prov.get(k) for k in PROVENANCE_COLUMNS if k in prov},
               identity=record.get("key"), grid=record.get("grid"), grid_sha256=record.get("grid_sha256"),
               wall_seconds=record.get("wall_seconds"))
    if csv_dir is not None:
        row.update(run_dir=_relative(row["run_dir"], csv_dir), model=_relative(row["model"], csv_dir),
                   grid=_relative(row["grid"] and str(Path(row["grid"]).resolve()), csv_dir))
    for name, v in summary["dense"].items():
        row[f"dense_{name}"] = v
    for name, v in summary["pruned"].items():
        row[f"pruned_{name}"] = v
    return row


def aggregate(points: list[Point], output_dir: str | Path, csv_path: str | Path):
    """One row per point of `points` finished with its own identity -> results.csv (nothing else under output_dir).

    Points of the list that failed (error.txt) are listed in failures.csv beside it."""
    import pandas as pd

    output_dir, csv_path = Path(output_dir), Path(csv_path)
    csv_dir = csv_path.parent.resolve()
    rows, failures = [], []
    for p in points:
        run_dir = (output_dir / p.relative_dir).resolve()
        if reuse_reason(p, run_dir) is None:
            rows.append(summary_row(json.loads((run_dir / SUMMARY).read_text()), run_dir, read_record(run_dir),
                                    csv_dir) | {"task": p.task})  # the grid's name (your own data: "custom")
        elif (run_dir / ERROR).exists() and not (run_dir / SUMMARY).exists():
            lines = (run_dir / ERROR).read_text().splitlines()
            failures.append({"run_dir": _relative(str(run_dir), csv_dir),
                             "error": lines[1] if len(lines) > 1 else ""})
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["task", "method", "constraint", "seed"])
        df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    else:
        df = pd.DataFrame(columns=COLUMNS)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(csv_path, df.to_csv(index=False))
    fail_path = csv_path.with_name("failures.csv")
    if failures:
        write_text(fail_path, pd.DataFrame(failures).to_csv(index=False))
    elif fail_path.exists():
        fail_path.unlink()
    return df


def render_report(results_dir: str | Path, notebooks_dir: Path = NOTEBOOKS_DIR, grid_path: str | Path | None = None
                  ) -> Path:
    """Execute notebook 05 on results_dir/results.csv -> results_dir/report.html and results_dir/figures/*.png.

    The grid is copied beside the csv (results_dir/grid.yaml) and printed at the top of the report; the report
    reads no other experiment's records (latency_results_dir None)."""
    results_dir = Path(results_dir).resolve()
    grid_copy = None
    if grid_path is not None:
        grid_copy = write_text(results_dir / "grid.yaml", Path(grid_path).read_text())
    executed = results_dir / "05_results.ipynb"
    execute_notebook(notebooks_dir / RESULTS_NOTEBOOK, executed,
                     {"results_csv": str(results_dir / "results.csv"), "figures_dir": str(results_dir / "figures"),
                      "grid_file": None if grid_copy is None else str(grid_copy), "latency_results_dir": None})
    return render_html(executed, results_dir / "report.html")
