"""The workbook notebooks: text-tracked, a literal `parameters` cell with the library defaults, no algorithm code,
and every one of them executes through papermill on a tiny model; 01–03 recompute one iteration of the loop and
assert it equals the loop's record (the assert lives in the notebook), rendered to HTML as `make report` does."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch
import transformers

from conftest import GLUE_DIR, MODELS_DIR, ROOT, spread_weights
from kprune_lib import PruneConfig

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
PRUNING_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in ("01", "02", "03", "04")]
STEP_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in ("01", "02", "03")]  # recompute one iteration, assert it
CORE_FIELDS = {"constraint", "num_tokens", "seed", "lam_pred", "lam_rep", "mu", "temperature", "schedule"}
MINILM = MODELS_DIR / "minilm-l6-mrpc"
needs_fixtures = pytest.mark.skipif(not (MINILM.exists() and (GLUE_DIR / "MRPC").exists()),
                                    reason="needs the shared MiniLM tokenizer and MRPC data (../shared)")


# ---- helpers shared with test_sweep / test_report_browser ----------------------------------------------------
def make_tiny_checkpoint(out: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """A random 2-layer BERT (4 heads, 48 neurons) with the MiniLM tokenizer, saved like a fine-tuned checkpoint."""
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                  intermediate_size=48, max_position_embeddings=512, num_labels=num_labels)
    model = transformers.BertForSequenceClassification(cfg).eval()
    spread_weights(model)
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(MINILM / f, out / f)
    return out


def make_tiny_glue(out: Path, train_rows: int = 96, dev_rows: int = 64) -> Path:
    """The first rows of the real MRPC train/dev files, in the GLUE layout."""
    (out / "MRPC").mkdir(parents=True)
    for name, n in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = (GLUE_DIR / "MRPC" / name).read_text(encoding="utf-8-sig").splitlines(keepends=True)
        (out / "MRPC" / name).write_text("".join(lines[:n + 1]), encoding="utf-8")
    return out


def execute(notebook: Path, output: Path, parameters: dict) -> nbformat.NotebookNode:
    import papermill

    papermill.execute_notebook(jupytext.read(notebook), str(output), parameters=parameters, kernel_name="python3",
                               progress_bar=False, cwd=str(notebook.parent))
    return nbformat.read(str(output), as_version=4)


def parameters_cell(path: Path):
    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return nb, tagged


def literal_parameters(source: str) -> dict:
    """name -> value of a parameters cell; raises if a statement is anything but `name = literal`."""
    values = {}
    for stmt in ast.parse(source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), \
            f"parameters cell may only assign literals to names, got: {ast.unparse(stmt)}"
        values[stmt.targets[0].id] = ast.literal_eval(stmt.value)  # ValueError if derived from anything
    return values


def notebook_outputs_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why a tracked .ipynb is not clean: code cells with outputs or execution counts."""
    return [f"cell {i}: {what}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for what, bad in (("outputs", bool(c.get("outputs"))), ("execution_count", c.get("execution_count") is not None))
            if bad]


# ---- static checks -------------------------------------------------------------------------------------------
def test_numbered_notebooks_exist():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_first_code_cell_of_literals(path):
    nb, tagged = parameters_cell(path)
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is tagged[0], f"{path.name}: the parameters cell must be the first code cell"
    assert literal_parameters(tagged[0].source), f"{path.name}: empty parameters cell"


@pytest.mark.parametrize("path", PRUNING_NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_defaults_equal_prune_config(path):
    """The library's defaults, except the sample size of the notebooks 01–04: the workbook's 20 000 tokens
    (minutes on a CPU; render.NUM_TOKENS), not PruneConfig's 100 000."""
    from kprune_lib.workbook.render import NUM_TOKENS

    params = literal_parameters(parameters_cell(path)[1][0].source)
    defaults = PruneConfig(num_tokens=NUM_TOKENS)
    missing = CORE_FIELDS - set(params)
    assert not missing, f"{path.name}: parameters cell lacks {sorted(missing)}"
    for f in fields(PruneConfig):
        if f.name in params:
            assert params[f.name] == getattr(defaults, f.name), \
                f"{path.name}: {f.name} = {params[f.name]!r}, expected default {getattr(defaults, f.name)!r}"
            assert type(params[f.name]) is type(getattr(defaults, f.name)) or getattr(defaults, f.name) is None


@pytest.mark.parametrize("path", STEP_NOTEBOOKS, ids=lambda p: p.stem)
def test_step_notebooks_state_the_equations_and_assert_a_recomputed_step(path):
    """01–03 teach: LaTeX equations naming the library function that computes each, a `step` parameter, and an
    assert of the recomputed iteration against the loop's record in a code cell (executed below)."""
    nb = jupytext.read(path)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "$$" in markdown and "kprune_lib.method." in markdown
    assert isinstance(literal_parameters(parameters_cell(path)[1][0].source)["step"], int)
    asserts = [c for c in code if any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(c)))]
    assert any("Sublayer(step)" in c for c in asserts), f"{path.name}: no assert on the recomputed iteration `step`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_hold_no_algorithm_code(path):
    """Notebooks call the library: no function or class definitions, no loops."""
    nb = jupytext.read(path)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.For,
                                         ast.While)), f"{path.name}: move `{ast.unparse(node)[:60]}` into kprune_lib"


def test_tracked_ipynb_have_no_outputs(tmp_path):
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else []  # not a git checkout: nothing is tracked
    for name in names:
        problems = notebook_outputs_problems(nbformat.read(str(ROOT / name), as_version=4))
        assert not problems, f"{name} is tracked with outputs: {problems[:3]}; clear them (jupytext pairs .py)"
    # the check itself catches a notebook with outputs
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=1,
                                                                    outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)])])
    assert len(notebook_outputs_problems(nb)) == 2
    assert notebook_outputs_problems(jupytext.read(NOTEBOOKS[0])) == []


def test_jupytext_pairs_notebooks_folder():
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

    cfg_file = find_jupytext_configuration_file(str(ROOT / "notebooks"))
    assert Path(cfg_file) == ROOT / "jupytext.toml"
    formats = load_jupytext_configuration_file(cfg_file).default_formats(str(NOTEBOOKS[0]))
    assert "ipynb" in formats and "py:percent" in formats
    def content(text: str) -> str:  # the header's jupytext_version is the writer's release, not content
        return re.sub(r"(?m)^#\s+jupytext_version: .*\n", "", text)

    for path in NOTEBOOKS:  # py:percent round trip is lossless
        text = path.read_text()
        assert content(jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent")) == content(text)


# ---- execution -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("workbook")
    return {"model": str(make_tiny_checkpoint(base / "ckpt")), "data_dir": str(make_tiny_glue(base / "glue")),
            "base": base}


TINY_PARAMS = {"task": "mrpc", "num_tokens": 1000, "device": "cpu"}


def _figures_rendered(nb) -> None:
    """Every cell that draws (`fig = plots.…`) has a PNG output; no cell raised."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:80]
        if "fig = plots." in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"no figure from: {cell.source[:80]}"


def _text(nb) -> str:
    return "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@needs_fixtures
def test_prepare_draws_the_same_sample_as_api(tiny):
    from kprune_lib import api
    from kprune_lib.workbook import steps as workbook

    cfg = PruneConfig(num_tokens=1500, seed=3, constraint=0.4, method="kwon-fisher")
    setup = workbook.prepare(tiny["model"], "mrpc", cfg, data_dir=tiny["data_dir"], device="cpu")
    summary = api.prune(tiny["model"], "mrpc", str(tiny["base"] / "api_out"), data_dir=tiny["data_dir"], device="cpu",
                        progress=False, config=cfg)
    assert summary["sample_examples"] == sum(b["input_ids"].shape[0] for b in setup.batches)
    assert summary["sample_tokens"] == int(sum(b["attention_mask"].sum() for b in setup.batches))
    assert summary["seq_len"] == pytest.approx(setup.seq_len)
    assert summary["method"] == "kwon-fisher" and summary["hyperparameters"]["tuning"] is False
    assert all("labels" in b for b in setup.batches)


@needs_fixtures
@pytest.mark.parametrize("name,step", [("01_knowledge_measurement", 3), ("02_mask_search", 2),
                                       ("03_weight_tuning", 1)])
def test_analysis_notebooks_execute(tiny, tmp_path, name, step):
    """Executed and rendered as `make report` does (render.render_notebooks: HTML with the inputs); each notebook
    recomputes iteration `step` with the library's functions and asserts it equals the loop's record (a failed
    assert fails the execution)."""
    from kprune_lib.workbook.render import render_notebooks

    html = render_notebooks(tmp_path / "html", tmp_path / "work", [name],
                            {**TINY_PARAMS, "model": tiny["model"], "data_dir": tiny["data_dir"], "step": step,
                             "output_dir": "not a parameter of 01-03"}, log=lambda msg: None)[name]
    nb = nbformat.read(str(tmp_path / "work" / f"{name}.ipynb"), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "step" in injected[0].source and "output_dir" not in injected[0].source  # only the notebook's own
    _figures_rendered(nb)
    text = _text(nb)
    assert f"iteration {step} (" in text and "equal the loop's record" in text
    page = html.read_text()
    assert "workbook.student_at" in page or "kpms_step" in page  # inputs shown
    assert page.count("<img") >= 2 and "$$" in page  # figures and the equations
    if name.startswith("01"):
        assert "FLOPs removed" in text and "spearman score" in text
    elif name.startswith("02"):
        assert "one-shot global" in text and "budget_left" in text
    else:
        assert "rel_error_after_tuning" in text and "K-prune, no tuning" in text


def test_resolve_inputs_falls_back_to_the_hub_when_the_fixtures_are_missing(tmp_path, capsys):
    """No ../shared: the hub id and the hub's GLUE, in one line (nothing is downloaded here); local folders that exist
    are used as they are, silently."""
    from kprune_lib.workbook.steps import resolve_inputs

    model, data = resolve_inputs("missing/minilm-l6-mrpc", "missing/glue", "M-FAC/bert-mini-finetuned-mrpc",
                                 base=tmp_path)
    assert (model, data) == ("M-FAC/bert-mini-finetuned-mrpc", None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "missing/minilm-l6-mrpc not found" in lines[0] and "hub" in lines[0]
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "glue").mkdir()
    assert resolve_inputs("ckpt", "glue", "M-FAC/bert-mini-finetuned-mrpc", base=tmp_path) == \
        (str(tmp_path / "ckpt"), str(tmp_path / "glue"))
    assert resolve_inputs("some/hub-id", "glue", None, base=tmp_path) == ("some/hub-id", str(tmp_path / "glue"))
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_makefile_passes_workers_only_when_given_and_report_renders_the_notebooks():
    def dry(*args):
        return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    sweep = [line for line in dry("sweep", "WORKERS=").splitlines() if "kprune sweep" in line]
    assert sweep and "--workers" not in sweep[-1]  # the executor's default: one worker per GPU
    assert "--workers 3" in dry("sweep", "WORKERS=3") and "--workers" not in dry("demo").split("kprune sweep")[-1]
    report = dry("report")
    assert "--report-only" in report and "-m kprune_lib.workbook.render --out results/notebooks" in report


@needs_fixtures
def test_prune_and_evaluate_notebook_writes_summary(tiny, tmp_path):
    out = tmp_path / "point"
    nb = execute(ROOT / "notebooks" / "04_prune_and_evaluate.py", tmp_path / "04.ipynb",
                 {**TINY_PARAMS, "model": tiny["model"], "data_dir": tiny["data_dir"], "output_dir": str(out),
                  "method": "kprune-no-tuning", "constraint": 0.6, "latency_repeats": 1})
    _figures_rendered(nb)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "kprune-no-tuning" and summary["constraint"] == 0.6
    assert summary["hyperparameters"]["tuning"] is False
    assert 0.6 - 1e-9 <= summary["flops_removed"] < 0.7  # the budget is met, overshoot below one head
    assert summary["params_pruned"] < summary["params_dense"]
    assert summary["latency_dense_s"] > 0 and summary["latency_pruned_s"] > 0
    assert summary["latency_speedup"] == pytest.approx(summary["latency_dense_s"] / summary["latency_pruned_s"])
    assert summary["latency_examples"] == 64
    assert Path(summary["model_dir"]) == out / "pruned" / "model"
    from kprune_lib.artifacts.checkpoint import load_pruned

    pruned = load_pruned(summary["model_dir"])
    heads = [pruned.bert.encoder.layer[i].attention.output.dense.in_features // 8 for i in range(2)]
    assert heads == summary["heads_kept"]


def test_prune_and_evaluate_notebook_shows_kwons_stages(tiny, tmp_path):
    """Notebook 04 on a method with stages (kwon): the stage table lists search, rearrange, rescale with their dev
    metric, and the stage figure is drawn (one more image than a run without stages)."""
    out = tmp_path / "point"
    nb = execute(ROOT / "notebooks" / "04_prune_and_evaluate.py", tmp_path / "04.ipynb",
                 {**TINY_PARAMS, "model": tiny["model"], "data_dir": tiny["data_dir"], "output_dir": str(out),
                  "method": "kwon", "constraint": 0.5, "latency_repeats": 1})
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["search", "rearrange", "rescale"]
    cell = next(c for c in nb.cells if c.cell_type == "code" and "stages_table" in c.source)
    html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
    assert all(name in html for name in ("search", "rearrange", "rescale", "accuracy"))
    view = next(c for c in nb.cells if c.cell_type == "code" and "stages_view" in c.source)
    assert any("image/png" in o.get("data", {}) for o in view.outputs)


# ---- 05 results on synthetic multi-seed tables (no pruning) ----------------------------------------------------
RESULTS_NOTEBOOK = ROOT / "notebooks" / "05_results.py"


def _markdown(nb) -> str:
    return "\n".join(o.get("data", {}).get("text/markdown", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_results_notebook_multi_seed_accuracy_table(tmp_path):
    """The accuracy protocol's csv (×100, no run_dir) with summaries in its point layout: curves, paired table,
    per-layer heatmap, all figures written."""
    from test_results_views import write_accuracy_csv, write_summaries

    csv_path = write_accuracy_csv(tmp_path / "results" / "accuracy.csv")
    points = write_summaries(tmp_path / "runs" / "accuracy")
    figures = tmp_path / "figures"
    nb = execute(RESULTS_NOTEBOOK, tmp_path / "05.ipynb",
                 {"results_csv": str(csv_path), "figures_dir": str(figures), "points_dir": str(points),
                  "compare": ["kprune-plus", "kprune"], "latency_results_dir": str(_latency_record(tmp_path))})
    _figures_rendered(nb)
    for name in ("metric_vs_flops.png", "kept_per_layer.png", "pruning_time.png", "accuracy_vs_latency.png"):
        assert (figures / name).stat().st_size > 1000, name
    assert _images(nb) == 4
    text = _text(nb)
    assert "accuracy format" in text and "82.00 ± 2.00 (n=3)" in text
    assert "kprune-plus − kprune: mean (points)" in text and "standard error (points)" in text
    assert "all tasks" in text and "≥ 0.6" in text and "(task, constraint) cells" in text
    assert "skipped" not in _markdown(nb) and "No per-layer heatmap" not in _markdown(nb)
    # the latency-budget means: seed 0 Δ = +1.0, seed 1 Δ = −3.0 points at 30 % → mean −1.0, worst ratio 1.08
    assert "30 % of dense" in text and "-1.0" in text and "1.08" in text


def _latency_record(tmp_path):
    """A two-seed, one-budget record of benchmarks/latency_budget.py (its row fields), plus an older one."""
    out = tmp_path / "latency"
    out.mkdir()
    rows = [{"seed": s, "budget_fraction": 0.3, "measured_ms": ms, "measured_over_budget": ratio, "accuracy": acc,
             "flops_measured_ms": fms, "flops_accuracy": facc, "delta_accuracy": acc - facc}
            for s, ms, ratio, acc, fms, facc in [(0, 60.0, 1.0, 0.78, 61.0, 0.77), (1, 64.8, 1.08, 0.75, 63.0, 0.78)]]
    (out / "2026-01-01-0000-latency-budget.json").write_text(json.dumps({"rows": [], "dense_ms": 1.0}))
    (out / "2026-02-01-0000-latency-budget.json").write_text(json.dumps({"rows": rows, "dense_ms": 200.0,
                                                                          "dense_metric": 0.8}))
    return out


def test_results_notebook_says_why_views_are_skipped(tmp_path):
    """The sweep's csv whose run_dirs are gone and an absent compare method: markdown notes, no failure."""
    from test_results_views import write_sweep_csv

    csv_path = write_sweep_csv(tmp_path / "results" / "results.csv", points_dir=tmp_path / "gone")
    figures = tmp_path / "figures"
    nb = execute(RESULTS_NOTEBOOK, tmp_path / "05.ipynb",
                 {"results_csv": str(csv_path), "figures_dir": str(figures), "points_dir": str(tmp_path / "none"),
                  "compare": ["kprune-gn", "kprune"], "latency_results_dir": str(tmp_path / "none")})
    _figures_rendered(nb)
    md = _markdown(nb)
    assert "Paired differences kprune-gn − kprune skipped" in md and "No per-layer heatmap" in md
    assert "Accuracy at equal latency skipped" in md and "make latency-budget" in md
    assert (figures / "metric_vs_flops.png").exists() and not (figures / "kept_per_layer.png").exists()
    assert "sweep format" in _text(nb)
