"""Papermill sweeps: notebook 04 for every point of a YAML grid, then results/results.csv and the report (notebook 05).

A point is (task, method, constraint, seed); it runs in OUTPUT_DIR/<task>/<method>/c<constraint>/seed<seed>/:
the executed notebook, summary.json (written last by the notebook: its existence marks the point finished),
report.html (nbconvert, inputs hidden), pruned/model/. A failed point leaves error.txt and the sweep goes on;
re-running a sweep skips finished points. Grid format: see papermill_runs/grid_minilm.yaml and docs/workbook.md.

Fallbacks (papermill_runs/grid_demo.yaml): a task's `fallback:` (a hub id) replaces its `model:` when that is no local
folder, and `data_dir_fallback:` (null: the hub's nyu-mll/glue) replaces a `data_dir:` that does not exist; see
resolve_sources. A sweep that needs such a fallback checks the hub first (check_fallbacks) and stops before running
anything when the hub is offline or unreachable and the fallback is not in the local Hugging Face cache.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kprune_lib.workbook import executors
from kprune_lib.workbook import slurm as slurm_jobs
from kprune_lib.workbook.points import (ERROR, NOTEBOOKS_DIR, SUMMARY, Point, execute_notebook, render_html,
                                        run_point)
from kprune_lib.method.methods import METHOD_NAMES

RESULTS_NOTEBOOK = "05_results.py"
GRID_KEYS = {"tasks", "constraints", "methods", "seeds", "model", "data_dir", "data_dir_fallback", "num_tokens",
             "device", "parameters", "output_dir", "results_dir", "executor", "slurm"}
TASK_KEYS = {"model", "fallback", "data_dir", "data_dir_fallback", "num_tokens", "device", "parameters"}
HUB_GLUE = "nyu-mll/glue"  # where GLUE data come from without a data_dir (kprune_lib.data.glue.load_hub)
NO_FALLBACK = object()  # data_dir_fallback not given: a missing data_dir stays as written (its points fail)


class GridError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    """Where one task's model and data come from (resolve_sources)."""
    task: str
    model: str  # an absolute local folder, or a hub id
    data_dir: str | None  # an absolute local folder, or None: the hub's nyu-mll/glue
    model_missing: str | None = None  # the grid's model path, when it is absent and `fallback` replaced it
    data_missing: str | None = None  # the grid's data_dir, when it is absent and `data_dir_fallback` replaced it

    def hub_fallbacks(self) -> list[tuple[str, str]]:
        """(repo type, repo id) of every fallback that comes from the hub."""
        out = []
        if self.model_missing is not None and not Path(self.model).is_dir():
            out.append(("model", self.model))
        if self.data_missing is not None and self.data_dir is None:
            out.append(("dataset", HUB_GLUE))
        return out

    def describe(self) -> str:
        """One log line: the model and data this task uses, and which fallback replaced a missing local folder."""
        model = f"{'local folder' if Path(self.model).is_dir() else 'hub id'} {self.model}"
        if self.model_missing is not None:
            model += f" (fallback: {self.model_missing} not found)"
        if self.data_dir is None:
            data = f"hub {HUB_GLUE}"
        else:
            data = f"local folder {self.data_dir}" if Path(self.data_dir).is_dir() else f"{self.data_dir} (not found)"
        if self.data_missing is not None:
            data += f" (fallback: {self.data_missing} not found)"
        return f"sweep: {self.task}: model {model}; data {data}"


@dataclass
class Grid:
    points: list[Point]
    output_dir: Path
    results_dir: Path
    sources: dict[str, Source] = field(default_factory=dict)  # task -> where its model and data come from
    executor: str = "local"  # where points run: local worker processes or SLURM jobs (kprune_lib.workbook.executors)
    slurm: dict = field(default_factory=dict)  # the grid's `slurm:` options (slurm_jobs.SlurmOptions)


def _local(path: str | None, base: Path, must_exist: bool) -> str | None:
    """Relative paths are relative to the working directory; a model that is no local folder stays a hub id."""
    if path is None:
        return None
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base / p
    return str(p.resolve()) if (must_exist or p.exists()) else str(path)


def _exists(path: str, base: Path) -> bool:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else base / p).exists()


def resolve_sources(task: str, model: str, data_dir: str | None, base: str | Path, fallback: str | None = None,
                    data_dir_fallback=NO_FALLBACK) -> Source:
    """The model and data of one task: the grid's local folders where they exist, else their fallbacks.

    model: used when it is an existing local path (relative to base); otherwise `fallback` (a hub id, or another
    folder) when the task has one, else the value as written (a hub id). data_dir: used when it exists; otherwise
    `data_dir_fallback` when the grid has one (None: the hub's nyu-mll/glue), else the folder as written (its points
    then fail). Without fallbacks, or with local paths that exist, the result is what it always was."""
    base = Path(base)
    model_missing = data_missing = None
    if fallback is not None and not _exists(model, base):
        model_missing, model = model, fallback
    if data_dir is not None and data_dir_fallback is not NO_FALLBACK and not _exists(data_dir, base):
        data_missing, data_dir = data_dir, data_dir_fallback
    return Source(task, _local(model, base, False), _local(data_dir, base, True), model_missing, data_missing)


def load_grid(path: str | Path, base: str | Path | None = None) -> Grid:
    """Parse and validate a grid file; the points are the product tasks × methods × constraints × seeds."""
    path = Path(path)
    base = Path(base or os.getcwd())
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        what = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GridError(f"cannot read grid {path}{at}: {what}; fix the file (YAML)") from None
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
    bad = [m for m in methods if m not in METHOD_NAMES]
    if bad:
        raise GridError(f"{path}: unknown method(s) {bad}; choose from {list(METHOD_NAMES)}")
    seeds = spec.get("seeds", [0])
    if not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: seeds must be integers")
    points, sources = [], {}
    for task, settings in tasks.items():
        settings = settings or {}
        if not isinstance(settings, dict) or set(settings) - TASK_KEYS:
            raise GridError(f"{path}: settings of task {task!r} must be a mapping with keys from {sorted(TASK_KEYS)}")
        model = settings.get("model", spec.get("model"))
        if not model:
            raise GridError(f"{path}: no model for task {task!r}")
        fallback = settings.get("fallback")
        if fallback is not None and not (isinstance(fallback, str) and fallback):
            raise GridError(f"{path}: 'fallback' of task {task!r} must be a hub id or a folder")
        data_dir = settings.get("data_dir", spec.get("data_dir"))
        data_fallback = settings.get("data_dir_fallback", spec.get("data_dir_fallback", NO_FALLBACK))
        if data_fallback is not NO_FALLBACK and data_fallback is not None and not isinstance(data_fallback, str):
            raise GridError(f"{path}: 'data_dir_fallback' must be a folder or null (the hub's {HUB_GLUE})")
        src = sources[str(task)] = resolve_sources(str(task), str(model), data_dir, base, fallback, data_fallback)
        num_tokens = settings.get("num_tokens", spec.get("num_tokens", 100_000))
        device = settings.get("device", spec.get("device", "auto"))
        extra = {**(spec.get("parameters") or {}), **(settings.get("parameters") or {})}
        for method in methods:
            for c in constraints:
                for seed in seeds:
                    points.append(Point(str(task), method, float(c), seed, src.model, src.data_dir, int(num_tokens),
                                        device, extra))
    try:
        executor = executors.check_executor(spec.get("executor", "local"))
        slurm_jobs.slurm_options(spec.get("slurm"))
    except executors.ExecutorError as e:
        raise GridError(f"{path}: {e}") from None
    return Grid(points, Path(_local(spec.get("output_dir", "papermill_runs"), base, True)),
                Path(_local(spec.get("results_dir", "results"), base, True)), sources, executor,
                dict(spec.get("slurm") or {}))


# ---- fallbacks need the hub: check it before running anything ---------------------------------------------------
_TRUE = {"1", "ON", "YES", "TRUE"}


def _offline_reason(repo_type: str) -> str | None:
    """The environment variable that keeps this kind of hub download offline, if one does."""
    own = "TRANSFORMERS_OFFLINE" if repo_type == "model" else "HF_DATASETS_OFFLINE"
    for var in ("HF_HUB_OFFLINE", own):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var}={os.environ[var]}"
    return None


def hub_cached(repo_type: str, repo_id: str) -> bool:
    """Whether the local Hugging Face cache already holds this repo (then offline runs can use it)."""
    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or home / "hub").expanduser()
    snapshots = hub / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if repo_type == "model":
        return any(snapshots.glob("*/config.json"))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()
    return any(snapshots.glob("*/*")) or (datasets_cache / repo_id.replace("/", "___")).is_dir()


def _hub_problem(repo_type: str, repo_id: str) -> str | None:
    """Why this repo cannot be fetched now (offline, unreachable, not found), or None when it can."""
    reason = _offline_reason(repo_type)
    if reason:
        return f"the hub is offline ({reason})"
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, timeout=10)
    except Exception as e:  # connection refused, DNS, timeout, proxy, 404 ...
        if "NotFound" in type(e).__name__:
            return "the hub answers 'not found'"
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return f"the hub ({endpoint}) is unreachable ({type(e).__name__})"
    return None


def check_fallbacks(grid: Grid, grid_path: str | Path, tasks=None) -> None:
    """Raise GridError (one line) when a fallback of these tasks needs the hub and the hub cannot deliver it.

    Runs before any point: with the local fixtures missing and the hub offline or unreachable, the sweep would
    otherwise start every point only to fail each one. A fallback already in the local HF cache passes."""
    sources = [s for t, s in grid.sources.items() if tasks is None or t in tasks]
    needed = list(dict.fromkeys(hub for s in sources for hub in s.hub_fallbacks() if not hub_cached(*hub)))
    problems = {}
    for kind, repo in needed:
        problem = _hub_problem(kind, repo)
        if problem:
            problems.setdefault(problem, []).append(repo)
    if not problems:
        return
    missing = sorted({m for s in sources for m in (s.model_missing, s.data_missing) if m is not None})
    offline = sorted({r.split("=")[0] for r in map(_offline_reason, {kind for kind, _ in needed}) if r})
    why = "; ".join(f"{p} for {', '.join(repos)}" for p, repos in problems.items())
    todo = ("point the grid's tasks:/data_dir: at local folders, or go online"
            + (f" (unset {', '.join(offline)})" if offline else ""))
    raise GridError(f"{grid_path}: local fixtures missing ({', '.join(missing)}) and their hub fallbacks cannot be "
                    f"fetched: {why}; {todo}")


def run_sweep(grid_path: str | Path, workers: int | None = None, output_dir: str | Path | None = None,
              results_dir: str | Path | None = None, report: bool = True, report_only: bool = False,
              notebooks_dir: Path = NOTEBOOKS_DIR, log=print, executor: str | None = None,
              slurm: dict | None = None) -> dict[str, list[str]]:
    """Run every unfinished point, aggregate results.csv, render the report.

    executor (default: the grid's `executor:`, else local): "local" runs `workers` worker processes (default: one
    per GPU, else one); "slurm" submits one job per point with the grid's `slurm:` options, overridden by `slurm`
    (see slurm_jobs.SlurmOptions). Settings are checked before any point runs or is submitted."""
    grid = load_grid(grid_path)
    out = Path(output_dir) if output_dir else grid.output_dir
    res = Path(results_dir) if results_dir else grid.results_dir
    outcome: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": []}
    if not report_only:
        todo = [p for p in grid.points if not (out / p.relative_dir / SUMMARY).exists()]
        check_fallbacks(grid, grid_path, {p.task for p in todo})  # before anything runs or is written
        try:
            kind = executors.check_executor(executor or grid.executor)
            if kind == "slurm":
                options = slurm_jobs.slurm_options(grid.slurm, **(slurm or {}))
                if todo:
                    slurm_jobs.check_slurm(options)
                if workers:
                    log("sweep: --workers applies to the local executor; on SLURM, array_parallelism jobs run at once")
            else:
                gpus = executors.visible_gpus()
                workers = workers or executors.default_workers(gpus)
        except executors.ExecutorError as e:
            raise GridError(str(e)) from None
        for source in grid.sources.values():
            log(source.describe())
        outcome["skipped"] = [p.label() for p in grid.points if p not in todo]
        for p in grid.points:  # finished points: only (re)render a missing HTML
            if p not in todo:
                run_point(p, out / p.relative_dir, notebooks_dir)
        how = (f"SLURM jobs ({', '.join(f'{k} {v}' for k, v in vars(options).items() if v is not None)})"
               if kind == "slurm" else f"{workers} worker(s)")
        log(f"sweep: {len(grid.points)} points, {len(outcome['skipped'])} finished, {len(todo)} to run, {how}")
        if todo:
            try:
                runs = (slurm_jobs.run_slurm(todo, out, options, notebooks_dir, log=log) if kind == "slurm" else
                        executors.run_local(todo, out, workers, notebooks_dir, gpus=gpus, log=log))
            except executors.ExecutorError as e:
                raise GridError(str(e)) from None
            with closing(runs), _progress(len(todo), kind) as bar:
                for k, (p, status) in enumerate(_executor_errors(runs), 1):
                    outcome[status].append(p.label())
                    bar.update()
                    with bar.external_write_mode():
                        log(f"[{k}/{len(todo)}] {p.label()}: {status}")
        for label in outcome["failed"]:
            log(f"FAILED {label}: see {out / label / ERROR}")
    rows = aggregate(out, res / "results.csv")
    log(f"results: {len(rows)} finished point(s) -> {res / 'results.csv'}")
    if report and len(rows):
        html = render_report(res, notebooks_dir)
        log(f"report: {html}")
    return outcome


def _executor_errors(runs):
    """The executor's (point, status) pairs; its settings errors (e.g. sbatch refused the jobs) as GridError."""
    try:
        yield from runs
    except executors.ExecutorError as e:
        raise GridError(str(e)) from None


def _progress(total: int, kind: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"sweep ({kind})", unit="point", file=sys.stderr, dynamic_ncols=True,
                disable=None)  # drawn on a terminal only; the per-point log lines say the same in a log file


# ---- aggregation and report ----------------------------------------------------------------------------------
COLUMNS = ["task", "method", "constraint", "seed", "num_tokens", "metric", "dense", "pruned", "flops_removed",
           "flops_dense", "flops_pruned", "params_dense", "params_pruned", "pruning_seconds", "latency_dense_s",
           "latency_pruned_s", "latency_speedup", "sample_examples", "seq_len", "device", "model", "run_dir"]


LATENCY_COLUMNS = ["latency_budget_ms", "predicted_latency_ms", "measured_latency_ms", "measured_over_budget",
                   "budget_miss"]  # points pruned to a latency budget only


def summary_row(summary: dict, run_dir: Path) -> dict:
    m = summary["metric"]
    row = {k: summary.get(k) for k in COLUMNS}
    if summary.get("latency_budget_ms") is not None:
        row.update({k: summary.get(k) for k in LATENCY_COLUMNS})
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
    execute_notebook(notebooks_dir / RESULTS_NOTEBOOK, executed,
             {"results_csv": str(results_dir / "results.csv"), "figures_dir": str(results_dir / "figures")})
    return render_html(executed, results_dir / "report.html")


def main_sweep(grid: str, workers: int | None = None, output_dir: str | None = None, results_dir: str | None = None,
               report: bool = True, report_only: bool = False, executor: str | None = None,
               slurm: dict | None = None) -> int:
    outcome = run_sweep(grid, workers, output_dir, results_dir, report=report, report_only=report_only,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True), executor=executor, slurm=slurm)
    print(json.dumps({k: len(v) for k, v in outcome.items()}))
    return 1 if outcome["failed"] else 0
