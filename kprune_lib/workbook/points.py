"""One point of a sweep: what it is, where it lives and how it runs (notebook 04 through papermill).

Imported by both the sweep (which plans points and aggregates them) and the executors (which run them), so that
neither imports the other.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from kprune_lib._atomic import write_text
from kprune_lib.config import KERNEL_START_TRIES

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
POINT_NOTEBOOK = "04_prune_and_evaluate.py"
SUMMARY, ERROR, EXECUTED, HTML = "summary.json", "error.txt", "04_prune_and_evaluate.ipynb", "report.html"


def point_dir(task: str, method: str, constraint: float, seed: int) -> Path:
    """Where a point lives under a sweep's (or the accuracy protocol's) output folder."""
    return Path(task) / method / f"c{constraint:g}" / f"seed{seed}"


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
        return point_dir(self.task, self.method, self.constraint, self.seed)

    def parameters(self, run_dir: Path) -> dict:
        return {**self.extra, "model": self.model, "task": self.task, "data_dir": self.data_dir,
                "output_dir": str(run_dir), "method": self.method, "constraint": self.constraint,
                "num_tokens": self.num_tokens, "seed": self.seed, "device": self.device}

    def label(self) -> str:
        return f"{self.task}/{self.method}/c{self.constraint:g}/seed{self.seed}"


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
        execute_notebook(notebooks_dir / POINT_NOTEBOOK, run_dir / EXECUTED, point.parameters(run_dir))
        if not (run_dir / SUMMARY).exists():
            raise RuntimeError(f"notebook finished without writing {run_dir / SUMMARY}")
        render_html(run_dir / EXECUTED, run_dir / HTML)
        return "ran"
    except Exception as e:  # record and go on with the sweep
        (run_dir / ERROR).write_text(f"{point.label()}\n{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        return "failed"
