"""One point of a sweep: what it is, where it lives and how it runs (notebook 04 through papermill).

Imported by both the sweep (which plans points and aggregates them) and the executors (which run them), so that
neither imports the other.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from kprune_lib._atomic import write_json, write_text
from kprune_lib.config import KERNEL_START_TRIES
from kprune_lib.workbook.identity import differences, identity_key

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
POINT_NOTEBOOK = "04_prune_and_evaluate.py"
SUMMARY, ERROR, EXECUTED, HTML = "summary.json", "error.txt", "04_prune_and_evaluate.ipynb", "report.html"
POINT_JSON = "point.json"  # the point's identity (workbook/identity.py) and how it was run (grid, command, wall time)
OUTPUTS = (SUMMARY, ERROR, EXECUTED, HTML, POINT_JSON, "pruned")  # what a run leaves; cleared before a rerun


def point_dir(task: str, method: str, constraint: float, seed: int) -> Path:
    """Where a point lives under a sweep's (or the accuracy protocol's) output folder."""
    return Path(task) / method / f"c{constraint:g}" / f"seed{seed}"


@dataclass(frozen=True)
class PointKey:
    """What names a point: (task, method, constraint, seed); its folder under an output folder and its label.
    The accuracy protocol (benchmarks/accuracy.py) uses it as is; a sweep's Point adds where its inputs come from."""
    task: str
    method: str
    constraint: float
    seed: int

    @property
    def relative_dir(self) -> Path:
        return point_dir(self.task, self.method, self.constraint, self.seed)

    def out_dir(self, root: Path) -> Path:
        return Path(root) / self.relative_dir

    def label(self) -> str:
        return f"{self.task}/{self.method}/c{self.constraint:g}/seed{self.seed}"


@dataclass(frozen=True)
class Point(PointKey):
    """A sweep point: its key, its model, data, sample size and device, further notebook-04 parameters, and (from
    load_grid) its identity and context."""
    model: str
    data_dir: str | None
    num_tokens: int
    device: str = "auto"
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # further notebook-04 parameters
    identity: dict = field(default_factory=dict, compare=False, hash=False)  # workbook/identity.point_identity
    context: dict = field(default_factory=dict, compare=False, hash=False)  # grid, grid_sha256, command, sources,
    #   defaults (identity.default_values: knobs added since a point ran count as unchanged at their default)

    def parameters(self, run_dir: Path) -> dict:
        return {**self.extra, "model": self.model, "task": self.task, "data_dir": self.data_dir,
                "output_dir": str(run_dir), "method": self.method, "constraint": self.constraint,
                "num_tokens": self.num_tokens, "seed": self.seed, "device": self.device}


def execute_notebook(notebook: Path, output: Path, parameters: dict) -> None:
    import jupytext
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)  # per-point progress is logged by run_sweep
    nb = jupytext.read(notebook)
    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            papermill.execute_notebook(nb, str(output), parameters=parameters, kernel_name="python3",
                                       progress_bar=False, cwd=str(notebook.parent))
            return
        except RuntimeError as e:
            # kernels started at the same moment by parallel workers can be handed the same free TCP port; the
            # loser dies before it answers (ZMQError: Address already in use). Nothing ran yet: start another.
            if "before replying to kernel_info" not in str(e) or attempt == KERNEL_START_TRIES:
                raise
            logging.getLogger(__name__).warning("%s: the kernel died while starting (%s); starting another",
                                                notebook.name, e)


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
    return write_text(html, body)


def read_record(run_dir: Path) -> dict | None:
    """The point.json of a point folder, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / POINT_JSON).read_text())
    except (OSError, ValueError):
        return None


def reuse_reason(point: Point, run_dir: Path) -> str | None:
    """None when the folder holds this very point, finished; else why it must run (one phrase)."""
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).exists():
        return "failed before" if (run_dir / ERROR).exists() else "not run yet"
    record = read_record(run_dir)
    return differences(None if record is None else record.get("identity"), point.identity,
                       point.context.get("defaults"))


def clear_outputs(run_dir: Path) -> None:
    """Remove what an earlier run of a point left (another identity's results must not survive a rerun)."""
    for name in OUTPUTS:
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def point_record(point: Point, **more) -> dict:
    """What point.json holds: the label, the identity and its key, the context (grid, command, sources), `more`."""
    context = {k: v for k, v in point.context.items() if k != "defaults"}
    return {"label": point.label(), "key": identity_key(point.identity), "identity": point.identity, **context, **more}


def run_point(point: Point, run_dir: Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    """Execute notebook 04 for one point: 'ran', 'skipped' (this point, finished) or 'failed' (error.txt).

    A folder holding another identity's results (or none recorded) is cleared first, so a failed rerun leaves no
    stale summary.json behind. point.json is written before the notebook runs and again, with the wall time, after."""
    run_dir = Path(run_dir)
    if reuse_reason(point, run_dir) is None:
        if not (run_dir / HTML).exists() and (run_dir / EXECUTED).exists():
            render_html(run_dir / EXECUTED, run_dir / HTML)
        return "skipped"
    clear_outputs(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(run_dir / POINT_JSON, point_record(point, started=started))
    t0 = time.perf_counter()
    try:
        execute_notebook(notebooks_dir / POINT_NOTEBOOK, run_dir / EXECUTED, point.parameters(run_dir))
        if not (run_dir / SUMMARY).exists():
            raise RuntimeError(f"notebook finished without writing {run_dir / SUMMARY}")
        write_json(run_dir / POINT_JSON, point_record(point, started=started,
                                                 wall_seconds=round(time.perf_counter() - t0, 1)))
        render_html(run_dir / EXECUTED, run_dir / HTML)
        return "ran"
    except Exception as e:  # record and go on with the sweep
        (run_dir / ERROR).write_text(f"{point.label()}\n{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        return "failed"
