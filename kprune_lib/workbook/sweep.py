"""Papermill sweeps: notebook 04 for every point of a YAML grid, then results/results.csv and the report (notebook 05).

A point is (task, method, constraint, seed); it runs in OUTPUT_DIR/<task>/<method>/c<constraint>/seed<seed>/:
point.json (its identity: model and data fingerprints, every parameter; workbook/identity.py), the executed
notebook, summary.json (written last by the notebook), report.html (nbconvert, inputs hidden), pruned/model/. A
failed point leaves error.txt and the sweep goes on. A re-run reuses a finished point only when its recorded
identity equals the planned one, and says why it reruns any other (`--reuse never` reruns all; `--dry-run` lists
what would run and why). results.csv and the report hold the grid's own points only.
Grid format: see papermill_runs/grid_minilm.yaml and docs/workbook.md.

Where each task's model and data come from (local folders, hub fallbacks, a missing folder stopping the grid):
workbook/sources.py. Aggregation and the report: workbook/aggregate.py.
"""
from __future__ import annotations

import json
import os
import sys
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from kprune_lib._provenance import file_sha256
from kprune_lib.method.methods import METHOD_NAMES
from kprune_lib.workbook import executors
from kprune_lib.workbook import identity as ident
from kprune_lib.workbook import slurm as slurm_jobs
from kprune_lib.workbook.aggregate import aggregate, render_report
from kprune_lib.workbook.points import (ERROR, NOTEBOOKS_DIR, POINT_NOTEBOOK, Point, clear_outputs, reuse_reason,
                                        run_point)
from kprune_lib.workbook.sources import (HUB_GLUE, NO_FALLBACK, GridError, Source, check_fallbacks, check_sources,
                                         local_path, resolve_sources)

# a task entry of your own data: files, or a data set (`datasets.load_dataset`: a hub id or a local data-set folder)
OWN_FILE_KEYS = ("train_file", "validation_file")
OWN_DATASET_KEYS = ("dataset", "dataset_config", "train_split", "validation_split")
OWN_DATA_KEYS = (*OWN_FILE_KEYS, *OWN_DATASET_KEYS, "text_columns", "label_column", "metric")
GRID_KEYS = {"tasks", "constraints", "methods", "seeds", "model", "data_dir", "data_dir_fallback", "num_tokens",
             "device", "parameters", "output_dir", "results_dir", "executor", "slurm"}
TASK_KEYS = {"model", "fallback", "data_dir", "data_dir_fallback", "num_tokens", "device", "parameters",
             *OWN_DATA_KEYS}
REUSE = ("identical", "never")  # --reuse: a finished point whose identity matches is reused | every point reruns


@dataclass
class Grid:
    points: list[Point]
    output_dir: Path
    results_dir: Path
    path: Path | None = None  # the grid file
    sources: dict[str, Source] = field(default_factory=dict)  # task -> where its model and data come from
    executor: str = "local"  # where points run: local worker processes or SLURM jobs (kprune_lib.workbook.executors)
    slurm: dict = field(default_factory=dict)  # the grid's `slurm:` options (slurm_jobs.SlurmOptions)


def _identities(points: list[Point], defaults: dict, path: Path) -> list[Point]:
    """The points with their identity (model and data fingerprinted once per source) and context."""
    grid_hash, knob_defaults = file_sha256(path), ident.default_values(defaults)
    fps: dict[tuple, dict] = {}

    def fingerprint(kind, *args):
        if (kind, *args) not in fps:
            fps[(kind, *args)] = (ident.model_fingerprint(*args) if kind == "model" else
                                  ident.data_fingerprint(*args[:2], dict(args[2])))
        return fps[(kind, *args)]

    out = []
    for p in points:
        params = {**defaults, **p.parameters(Path("."))}
        data_opts = tuple((k, params.get(k)) for k in ("train_file", "eval_file", "validation_file", "dataset",
                                                       "dataset_config"))
        tok = params.get("tokenizer")
        try:
            identity = ident.point_identity(params, fingerprint("model", p.model),
                                            fingerprint("data", p.task, p.data_dir, data_opts),
                                            fingerprint("model", tok) if tok else None)
        except (TypeError, ValueError) as e:
            raise GridError(f"{path}: {p.label()}: {e}") from None
        context = {"grid": str(path), "grid_sha256": grid_hash, "command": sys.argv,
                   "sources": {"model": p.model, "data_dir": p.data_dir, "tokenizer": tok}, "defaults": knob_defaults}
        out.append(replace(p, identity=identity, context=context))
    return out


def own_data(settings: dict, path: Path, task, base: Path) -> dict:
    """A task entry naming your own data (the task's key is then only its name): train_file and validation_file, or
    a dataset (a hub id, or a local data-set folder) with dataset_config / train_split / validation_split; and
    text_columns, label_column, metric. Notebook 04's own-data parameters, local paths absolute; {} for a GLUE
    task. A file that is not there, files and a data set together, or a split without a data set stop the grid (one
    line)."""
    given = {k: settings[k] for k in OWN_DATA_KEYS if settings.get(k) is not None}
    if not given:
        return {}
    files = [k for k in OWN_FILE_KEYS if k in given]
    if "dataset" in given:
        if files:
            raise GridError(f"{path}: task {task!r} names both a dataset and {', '.join(files)}; keep one of the two")
        given["dataset"] = local_path(str(given["dataset"]), base, must_exist=False)  # a folder, else a hub id
        return given
    if parts := [k for k in OWN_DATASET_KEYS if k in given]:
        raise GridError(f"{path}: task {task!r} names {', '.join(parts)} without a dataset; add `dataset:`")
    if len(files) < 2:
        raise GridError(f"{path}: task {task!r} names your own data: it needs both train_file and validation_file "
                        "(or a dataset)")
    for key in OWN_FILE_KEYS:
        given[key] = local_path(given[key], base, must_exist=False)
        if not Path(given[key]).is_file():
            raise GridError(f"{path}: {key} of task {task!r} not found: {given[key]}")
    return given


def load_grid(path: str | Path, base: str | Path | None = None, notebooks_dir: Path = NOTEBOOKS_DIR) -> Grid:
    """Parse and validate a grid file; the points are the product tasks × methods × constraints × seeds, each
    with its identity (workbook/identity.py). A local model or data folder that does not exist stops it here."""
    path = Path(path)
    base = Path(base or os.getcwd())
    defaults = ident.notebook_parameters(Path(notebooks_dir) / POINT_NOTEBOOK)
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
        own = own_data(settings, path, task, base)
        data_dir = None if own else settings.get("data_dir", spec.get("data_dir"))
        data_fallback = settings.get("data_dir_fallback", spec.get("data_dir_fallback", NO_FALLBACK))
        if data_fallback is not NO_FALLBACK and data_fallback is not None and not isinstance(data_fallback, str):
            raise GridError(f"{path}: 'data_dir_fallback' must be a folder or null (the hub's {HUB_GLUE})")
        src = sources[str(task)] = replace(resolve_sources(str(task), str(model), data_dir, base, fallback,
                                                           data_fallback),
                                           files=tuple(own[k] for k in OWN_FILE_KEYS if k in own),
                                           dataset=own.get("dataset"))
        check_sources(src, path, base)
        num_tokens = settings.get("num_tokens", spec.get("num_tokens", defaults["num_tokens"]))
        device = settings.get("device", spec.get("device", "auto"))
        extra = {**(spec.get("parameters") or {}), **(settings.get("parameters") or {}), **own}
        unknown = sorted(set(extra) - set(defaults))
        if unknown:
            raise GridError(f"{path}: unknown notebook-04 parameter(s) {unknown} in `parameters:` of {task!r}; "
                            f"allowed: {sorted(set(defaults) - {'output_dir'})}")
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
    return Grid(_identities(points, defaults, path),
                Path(local_path(spec.get("output_dir", "papermill_runs"), base, True)),
                Path(local_path(spec.get("results_dir", "results"), base, True)), path, sources, executor,
                dict(spec.get("slurm") or {}))


def plan(grid: Grid, out: Path, reuse: str = "identical") -> dict[Point, str | None]:
    """Each point of the grid -> None (reuse its finished results) or why it runs (one phrase)."""
    if reuse not in REUSE:
        raise GridError(f"--reuse must be one of {list(REUSE)}, got {reuse!r}")
    why = {p: reuse_reason(p, out / p.relative_dir) for p in grid.points}
    if reuse == "never":
        why = {p: r or "--reuse never" for p, r in why.items()}
    return why


def run_sweep(grid_path: str | Path, workers: int | None = None, output_dir: str | Path | None = None,
              results_dir: str | Path | None = None, report: bool = True, report_only: bool = False,
              notebooks_dir: Path = NOTEBOOKS_DIR, log=print, executor: str | None = None,
              slurm: dict | None = None, reuse: str = "identical", dry_run: bool = False) -> dict[str, list[str]]:
    """Run every point that is not finished with the same identity, aggregate results.csv, render the report.

    executor (default: the grid's `executor:`, else local): "local" runs `workers` worker processes (default: one
    per GPU, else one); "slurm" submits one job per point with the grid's `slurm:` options, overridden by `slurm`
    (see slurm_jobs.SlurmOptions). Settings are checked before any point runs or is submitted.
    reuse: "identical" reuses a finished point whose point.json identity equals the planned one; "never" reruns
    every point. dry_run: log each point with what would happen and why, and change nothing."""
    grid = load_grid(grid_path, notebooks_dir=notebooks_dir)
    out = Path(output_dir) if output_dir else grid.output_dir
    res = Path(results_dir) if results_dir else grid.results_dir
    outcome: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": []}
    why = plan(grid, out, reuse)
    # seed-major: an interrupted sweep leaves whole seeds (every task, method and constraint) rather than whole tasks
    todo = sorted((p for p in grid.points if why[p] is not None), key=lambda p: p.seed)  # stable: grid order within
    if dry_run:
        for p in grid.points:
            log(f"{p.label()}: " + ("reuse (finished, same identity)" if why[p] is None else f"run ({why[p]})"))
        log(f"sweep (dry run): {len(grid.points)} points, {len(grid.points) - len(todo)} to reuse, {len(todo)} to "
            f"run; nothing was changed")
        return {"ran": [], "skipped": [p.label() for p in grid.points if why[p] is None],
                "failed": [], "to_run": [p.label() for p in todo]}
    if not report_only:
        check_fallbacks(grid.sources, grid_path, {p.task for p in todo})  # before anything runs or is written
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
        for p in todo:
            if why[p] not in ("not run yet", "failed before"):
                log(f"{p.label()}: {why[p]} — rerunning")
            clear_outputs(out / p.relative_dir)  # no other identity's results survive, even if this run fails
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
    rows = aggregate(grid.points, out, res / "results.csv")
    stale = len(grid.points) - len(rows)
    log(f"results: {len(rows)} finished point(s) of {len(grid.points)} -> {res / 'results.csv'}"
        + (f" ({stale} not finished with this identity: not in it)" if stale else ""))
    if report and len(rows):
        html = render_report(res, notebooks_dir, grid.path)
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


def main_sweep(grid: str, workers: int | None = None, output_dir: str | None = None, results_dir: str | None = None,
               report: bool = True, report_only: bool = False, executor: str | None = None,
               slurm: dict | None = None, reuse: str = "identical", dry_run: bool = False) -> int:
    outcome = run_sweep(grid, workers, output_dir, results_dir, report=report, report_only=report_only,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True), executor=executor, slurm=slurm,
                        reuse=reuse, dry_run=dry_run)
    print(json.dumps({k: len(v) for k, v in outcome.items()}))
    return 1 if outcome["failed"] else 0
