"""The teaching notebooks for reading: 01–04 executed through papermill on one model (by default the shared MiniLM
MRPC fixture) and exported as HTML **with their inputs** (the equations, the code and its outputs), for `make report`:

    python -m kprune_lib.workbook.render [--out results/notebooks] [--work-dir runs/notebooks]
                                         [--model DIR|HUB_ID] [--data-dir DIR] [--num-tokens 20000] [--only 01,03]

writes OUT/<name>.html; the executed notebooks (and notebook 04's pruned model) go to the git-ignored work folder.
Without the local model (no ../shared) the model falls back to a hub id and the data to the hub, as the notebooks and
`make demo` do (`steps.resolve_inputs`); that needs the hub or its local cache.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kprune_lib._atomic import write_text
from kprune_lib.workbook.identity import notebook_parameters
from kprune_lib.workbook.points import NOTEBOOKS_DIR, execute_notebook

TEACHING = ("01_knowledge_measurement", "02_mask_search", "03_weight_tuning", "04_prune_and_evaluate")
NUM_TOKENS = 20_000  # the workbook's sample size: the default of notebooks 01–03 and of the rendered notebooks
MODEL = "../shared/models/minilm-l6-mrpc"  # relative to the working directory (make: the repository root)
FALLBACK_MODEL = "M-FAC/bert-mini-finetuned-mrpc"  # the hub checkpoint of papermill_runs/grid_demo.yaml
DATA_DIR = "../shared/data/glue"
OUT, WORK_DIR = "results/notebooks", "runs/notebooks"


def export_html(notebook: Path, html: Path) -> Path:
    """An executed notebook as HTML with its inputs shown (nbconvert's classic `--to html`); stderr streams (logs,
    progress bars) are left out. The sweep's point reports hide the inputs instead (`points.render_html`)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
    body, _ = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    return write_text(html, body)


def render_notebooks(out_dir: str | Path = OUT, work_dir: str | Path = WORK_DIR, names=TEACHING,
                     parameters: dict | None = None, notebooks_dir: Path = NOTEBOOKS_DIR, log=print) -> dict[str, Path]:
    """Execute each notebook `names` (stems under notebooks_dir) with `parameters` (plus, for notebook 04, its
    output_dir under work_dir) into work_dir/<name>.ipynb and write out_dir/<name>.html. Parameters a notebook does
    not have are not passed to it. Raises on the first notebook that fails (papermill's error names the cell)."""
    out_dir, work_dir = Path(out_dir), Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names:
        source = Path(notebooks_dir) / f"{name}.py"
        accepted = notebook_parameters(source)  # its parameters cell, read once
        params = {k: v for k, v in (parameters or {}).items() if k in accepted}
        if "output_dir" in accepted:
            params["output_dir"] = str(work_dir / name)
        executed = work_dir / f"{name}.ipynb"
        t0 = time.perf_counter()
        execute_notebook(source, executed, params)
        written[name] = export_html(executed, out_dir / f"{name}.html")
        log(f"render: {name} executed in {time.perf_counter() - t0:.0f} s -> {written[name]}")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kprune_lib.workbook.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=OUT, help=f"folder of the HTML files (default {OUT})")
    p.add_argument("--work-dir", default=WORK_DIR,
                   help=f"executed notebooks and notebook 04's model (default {WORK_DIR})")
    p.add_argument("--model", default=MODEL, help=f"fine-tuned MRPC checkpoint, folder or hub id (default {MODEL})")
    p.add_argument("--fallback-model", default=FALLBACK_MODEL,
                   help=f"hub id used when --model is no local folder (default {FALLBACK_MODEL})")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"GLUE root (default {DATA_DIR}; missing: the hub)")
    p.add_argument("--num-tokens", type=int, default=NUM_TOKENS, help=f"sample size (default {NUM_TOKENS})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03 (default: 01-04)")
    args = p.parse_args(argv)
    from kprune_lib.workbook.steps import resolve_inputs

    names = [n for n in TEACHING if args.only is None or n[:2] in args.only.split(",")]
    if not names:
        p.error(f"--only {args.only}: no notebook among {', '.join(n[:2] for n in TEACHING)}")
    model, data_dir = resolve_inputs(args.model, args.data_dir, args.fallback_model)
    parameters = {"model": model, "data_dir": data_dir, "fallback_model": None, "task": "mrpc",
                  "num_tokens": args.num_tokens, "device": args.device}
    render_notebooks(args.out, args.work_dir, names, parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
