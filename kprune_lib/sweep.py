"""Papermill sweeps: notebook 04 for every point of a YAML grid, then results/results.csv and the report (notebook 05).

A point is (task, method, constraint, seed); it runs in OUTPUT_DIR/<task>/<method>/c<constraint>/seed<seed>/:
the executed notebook, summary.json (written last by the notebook: its existence marks the point finished),
report.html (nbconvert, inputs hidden), pruned/model/. A failed point leaves error.txt and the sweep goes on;
re-running a sweep skips finished points. Grid format: see papermill_runs/grid_minilm.yaml and docs/workbook.md.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import yaml

from .config import METHODS

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
POINT_NOTEBOOK = "04_prune_and_evaluate.py"
RESULTS_NOTEBOOK = "05_results.py"
GRID_KEYS = {"tasks", "constraints", "methods", "seeds", "model", "data_dir", "num_tokens", "device", "parameters",
             "output_dir", "results_dir"}
TASK_KEYS = {"model", "data_dir", "num_tokens", "device", "parameters"}
SUMMARY, ERROR, EXECUTED, HTML = "summary.json", "error.txt", "04_prune_and_evaluate.ipynb", "report.html"


class GridError(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    task: str
    method: str
    constraint: float
    seed: int
    model: str
    data_dir: str | None
    num_tokens: int
    device: str = "auto"
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # further notebook-04 parameters

    @property
    def relative_dir(self) -> Path:
        return Path(self.task) / self.method / f"c{self.constraint:g}" / f"seed{self.seed}"

    def parameters(self, run_dir: Path) -> dict:
        return {**self.extra, "model": self.model, "task": self.task, "data_dir": self.data_dir,
                "output_dir": str(run_dir), "method": self.method, "constraint": self.constraint,
                "num_tokens": self.num_tokens, "seed": self.seed, "device": self.device}

    def label(self) -> str:
        return f"{self.task}/{self.method}/c{self.constraint:g}/seed{self.seed}"


@dataclass
class Grid:
    points: list[Point]
    output_dir: Path
    results_dir: Path


def _local(path: str | None, base: Path, must_exist: bool) -> str | None:
    """Relative paths are relative to the working directory; a model that is no local folder stays a hub id."""
    if path is None:
        return None
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base / p
    return str(p.resolve()) if (must_exist or p.exists()) else str(path)


def load_grid(path: str | Path, base: str | Path | None = None) -> Grid:
    """Parse and validate a grid file; the points are the product tasks × methods × constraints × seeds."""
    path = Path(path)
    base = Path(base or os.getcwd())
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GridError(f"cannot read grid {path}: {e}") from None
    if not isinstance(spec, dict):
        raise GridError(f"{path}: expected a mapping at the top level")
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise GridError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(GRID_KEYS)}")
    tasks = spec.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise GridError(f"{path}: 'tasks' must map each task to its settings (at least a model)")
    constraints = spec.get("constraints")
    if not isinstance(constraints, list) or not constraints:
        raise GridError(f"{path}: 'constraints' must be a non-empty list of fractions of FLOPs removed")
    for c in constraints:
        if not isinstance(c, (int, float)) or not 0 < c < 1:
            raise GridError(f"{path}: constraint {c!r} is not in (0, 1)")
    methods = spec.get("methods", ["kprune"])
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise GridError(f"{path}: unknown method(s) {bad}; choose from {list(METHODS)}")
    seeds = spec.get("seeds", [0])
    if not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: seeds must be integers")
    points = []
    for task, settings in tasks.items():
        settings = settings or {}
        if not isinstance(settings, dict) or set(settings) - TASK_KEYS:
            raise GridError(f"{path}: settings of task {task!r} must be a mapping with keys from {sorted(TASK_KEYS)}")
        model = settings.get("model", spec.get("model"))
        if not model:
            raise GridError(f"{path}: no model for task {task!r}")
        data_dir = settings.get("data_dir", spec.get("data_dir"))
        num_tokens = settings.get("num_tokens", spec.get("num_tokens", 100_000))
        device = settings.get("device", spec.get("device", "auto"))
        extra = {**(spec.get("parameters") or {}), **(settings.get("parameters") or {})}
        for method in methods:
            for c in constraints:
                for seed in seeds:
                    points.append(Point(str(task), method, float(c), seed, _local(model, base, False),
                                        _local(data_dir, base, True), int(num_tokens), device, extra))
    return Grid(points, Path(_local(spec.get("output_dir", "papermill_runs"), base, True)),
                Path(_local(spec.get("results_dir", "results"), base, True)))


# ---- running -------------------------------------------------------------------------------------------------
def _execute(notebook: Path, output: Path, parameters: dict) -> None:
    import jupytext
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)  # per-point progress is logged by run_sweep
    nb = jupytext.read(notebook)
    papermill.execute_notebook(nb, str(output), parameters=parameters, kernel_name="python3", progress_bar=False,
                               cwd=str(notebook.parent))


def render_html(notebook: Path, html: Path) -> Path:
    """nbconvert --to html --no-input: outputs only (stderr logs and progress bars stay in the .ipynb)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    tmp = html.with_name(f".{html.name}.tmp-{os.getpid()}")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, html)
    return html


def run_point(point: Point, run_dir: Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    """Execute notebook 04 for one point: 'ran', 'skipped' (summary.json already there) or 'failed' (error.txt)."""
    run_dir = Path(run_dir)
    if (run_dir / SUMMARY).exists():
        if not (run_dir / HTML).exists() and (run_dir / EXECUTED).exists():
            render_html(run_dir / EXECUTED, run_dir / HTML)
        return "skipped"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR).unlink(missing_ok=True)
    try:
        _execute(notebooks_dir / POINT_NOTEBOOK, run_dir / EXECUTED, point.parameters(run_dir))
        if not (run_dir / SUMMARY).exists():
            raise RuntimeError(f"notebook finished without writing {run_dir / SUMMARY}")
        render_html(run_dir / EXECUTED, run_dir / HTML)
        return "ran"
    except Exception as e:  # record and go on with the sweep
        (run_dir / ERROR).write_text(f"{point.label()}\n{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        return "failed"


def _init_worker(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the kernels the worker starts
        os.environ[var] = str(threads)


def run_sweep(grid_path: str | Path, workers: int = 1, output_dir: str | Path | None = None,
              results_dir: str | Path | None = None, report: bool = True, report_only: bool = False,
              notebooks_dir: Path = NOTEBOOKS_DIR, log=print) -> dict[str, list[str]]:
    """Run every unfinished point (in `workers` processes), aggregate results.csv, render the report."""
    grid = load_grid(grid_path)
    out = Path(output_dir) if output_dir else grid.output_dir
    res = Path(results_dir) if results_dir else grid.results_dir
    outcome: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": []}
    if not report_only:
        todo = [p for p in grid.points if not (out / p.relative_dir / SUMMARY).exists()]
        outcome["skipped"] = [p.label() for p in grid.points if p not in todo]
        for p in grid.points:  # finished points: only (re)render a missing HTML
            if p not in todo:
                run_point(p, out / p.relative_dir, notebooks_dir)
        log(f"sweep: {len(grid.points)} points, {len(outcome['skipped'])} finished, {len(todo)} to run, "
            f"{workers} worker(s)")
        if workers <= 1:
            for k, p in enumerate(todo, 1):
                status = run_point(p, out / p.relative_dir, notebooks_dir)
                outcome[status].append(p.label())
                log(f"[{k}/{len(todo)}] {p.label()}: {status}")
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(threads,)) as pool:
                futures = {pool.submit(run_point, p, out / p.relative_dir, notebooks_dir): p for p in todo}
                for k, f in enumerate(as_completed(futures), 1):
                    p = futures[f]
                    try:
                        status = f.result()
                    except Exception as e:  # the worker process itself died (e.g. out of memory)
                        (out / p.relative_dir).mkdir(parents=True, exist_ok=True)
                        (out / p.relative_dir / ERROR).write_text(f"{p.label()}\n{type(e).__name__}: {e}\n")
                        status = "failed"
                    outcome[status].append(p.label())
                    log(f"[{k}/{len(todo)}] {p.label()}: {status}")
        for label in outcome["failed"]:
            log(f"FAILED {label}: see {out / label / ERROR}")
    rows = aggregate(out, res / "results.csv")
    log(f"results: {len(rows)} finished point(s) -> {res / 'results.csv'}")
    if report and len(rows):
        html = render_report(res, notebooks_dir)
        log(f"report: {html}")
    return outcome


# ---- aggregation and report ----------------------------------------------------------------------------------
COLUMNS = ["task", "method", "constraint", "seed", "num_tokens", "metric", "dense", "pruned", "flops_removed",
           "flops_dense", "flops_pruned", "params_dense", "params_pruned", "pruning_seconds", "latency_dense_s",
           "latency_pruned_s", "latency_speedup", "sample_examples", "seq_len", "device", "model", "run_dir"]


def summary_row(summary: dict, run_dir: Path) -> dict:
    m = summary["metric"]
    row = {k: summary.get(k) for k in COLUMNS}
    row.update(dense=summary["dense"][m], pruned=summary["pruned"][m], run_dir=str(run_dir))
    for name, v in summary["dense"].items():
        row[f"dense_{name}"] = v
    for name, v in summary["pruned"].items():
        row[f"pruned_{name}"] = v
    return row


def aggregate(output_dir: str | Path, csv_path: str | Path):
    """One row per finished point (every OUTPUT/<task>/<method>/c*/seed*/summary.json) -> results.csv.

    Unfinished points with an error.txt are listed in failures.csv beside it."""
    import pandas as pd

    output_dir, csv_path = Path(output_dir), Path(csv_path)
    rows, failures = [], []
    for path in sorted(output_dir.glob(f"*/*/c*/seed*/{SUMMARY}")):
        rows.append(summary_row(json.loads(path.read_text()), path.parent))
    for path in sorted(output_dir.glob(f"*/*/c*/seed*/{ERROR}")):
        if not (path.parent / SUMMARY).exists():
            lines = path.read_text().splitlines()
            failures.append({"run_dir": str(path.parent), "error": lines[1] if len(lines) > 1 else ""})
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["task", "method", "constraint", "seed"])
        df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    else:
        df = pd.DataFrame(columns=COLUMNS)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv_path, index=False)
    fail_path = csv_path.with_name("failures.csv")
    if failures:
        pd.DataFrame(failures).to_csv(fail_path, index=False)
    elif fail_path.exists():
        fail_path.unlink()
    return df


def render_report(results_dir: str | Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    """Execute notebook 05 on results_dir/results.csv -> results_dir/report.html and results_dir/figures/*.png."""
    results_dir = Path(results_dir).resolve()
    executed = results_dir / "05_results.ipynb"
    _execute(notebooks_dir / RESULTS_NOTEBOOK, executed,
             {"results_csv": str(results_dir / "results.csv"), "figures_dir": str(results_dir / "figures")})
    return render_html(executed, results_dir / "report.html")


def main_sweep(grid: str, workers: int = 1, output_dir: str | None = None, results_dir: str | None = None,
               report: bool = True, report_only: bool = False) -> int:
    outcome = run_sweep(grid, workers, output_dir, results_dir, report=report, report_only=report_only,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps({k: len(v) for k, v in outcome.items()}))
    return 1 if outcome["failed"] else 0
