"""`kprune sweep`: grid parsing, papermill execution of notebook 04 per point, failure recording, resume,
aggregation into results.csv and the report."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, SHARED
from kprune_lib.cli import main as cli_main
from kprune_lib.workbook.identity import identity_key
from kprune_lib.workbook.points import point_record
from kprune_lib.workbook.sweep import GridError, Point, aggregate, load_grid, run_sweep
from test_notebooks import make_tiny_checkpoint, make_tiny_glue, needs_fixtures


def write_grid(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_is_the_product_of_its_axes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "a").mkdir(parents=True)
    (tmp_path / "glue").mkdir()
    grid = load_grid(write_grid(tmp_path / "g.yaml", tasks={"mrpc": {"model": "models/a"},
                                                             "stsb": {"model": "hub/id", "num_tokens": 500}},
                                data_dir="glue", constraints=[0.4, 0.8], methods=["kprune", "kwon-fisher"],
                                seeds=[0, 1, 2], num_tokens=20000, parameters={"latency_repeats": 1}))
    assert len(grid.points) == 2 * 2 * 2 * 3
    assert len(set(grid.points)) == len(grid.points)
    mrpc = [p for p in grid.points if p.task == "mrpc"]
    assert {p.model for p in mrpc} == {str(tmp_path / "models" / "a")}  # local folder -> absolute
    assert {p.model for p in grid.points if p.task == "stsb"} == {"hub/id"}  # not a folder -> hub id
    assert {p.data_dir for p in grid.points} == {str(tmp_path / "glue")}
    assert {p.num_tokens for p in grid.points if p.task == "stsb"} == {500}
    assert {p.num_tokens for p in mrpc} == {20000}
    assert grid.output_dir == tmp_path / "papermill_runs" and grid.results_dir == tmp_path / "results"
    p = Point("sst2", "kwon-fisher", 0.7, 1, "m", None, 100)
    assert p.relative_dir == Path("sst2/kwon-fisher/c0.7/seed1")
    params = mrpc[0].parameters(tmp_path / "x")
    assert params["latency_repeats"] == 1 and params["output_dir"] == str(tmp_path / "x")


@pytest.mark.parametrize("spec, message", [
    ({"tasks": {"mrpc": {"model": "m"}}, "constraints": [0.5], "methodz": ["kprune"]}, "unknown key"),
    ({"tasks": {"mrpc": {"model": "m"}}, "constraints": [1.5]}, "not in"),
    ({"tasks": {"mrpc": {"model": "m"}}, "constraints": [0.5], "methods": ["magnitude"]}, "unknown method"),
    ({"tasks": {"mrpc": {}}, "constraints": [0.5]}, "no model"),
    ({"constraints": [0.5]}, "tasks"),
])
def test_bad_grids_are_rejected(tmp_path, spec, message):
    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path / "g.yaml", **spec))


def test_shipped_grids_are_valid():
    grid = load_grid(ROOT / "papermill_runs" / "grid_minilm.yaml", base=ROOT)
    assert len(grid.points) == 3 * 3 * 4 * 3
    assert {p.task for p in grid.points} == {"mrpc", "stsb", "sst2"}
    assert {p.method for p in grid.points} == {"kprune", "kprune-plus", "kwon-fisher", "kprune-no-tuning"}
    assert sorted({p.constraint for p in grid.points}) == [0.4, 0.6, 0.8]
    assert {p.seed for p in grid.points} == {0, 1, 2}
    assert {p.num_tokens for p in grid.points} == {20000}  # the committed results/ were produced at 20 000
    if SHARED.exists():
        assert all(Path(p.model).is_dir() and Path(p.data_dir).is_dir() for p in grid.points)
        assert {Path(p.model).name for p in grid.points} == {"minilm-l6-mrpc", "minilm-l6-stsb", "minilm-l6-sst2"}
    assert len(load_grid(ROOT / "papermill_runs" / "grid_tiny.yaml", base=ROOT).points) == 2


def finish(point, run_dir: Path, summary: dict) -> None:
    """A point folder as a finished run leaves it: point.json with the point's identity, then summary.json."""
    (run_dir / "pruned").mkdir(parents=True)
    (run_dir / "point.json").write_text(json.dumps(point_record(point, wall_seconds=1.0)))
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "pruned" / "summary.json").write_text(json.dumps(summary))  # the library's copy: not a point


def test_aggregate_reads_the_grids_own_points_and_lists_failures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glue").mkdir()
    grid = load_grid(write_grid(tmp_path / "g.yaml", tasks={"mrpc": {"model": "org/m"}, "stsb": {"model": "org/m"}},
                                data_dir="glue", constraints=[0.5], methods=["kprune", "kwon-fisher"],
                                output_dir="runs", results_dir="res"))
    points = {(p.task, p.method): p for p in grid.points}
    for method, pruned in (("kprune", 0.8), ("kwon-fisher", 0.7)):
        p = points[("mrpc", method)]
        finish(p, tmp_path / "runs" / p.relative_dir, {
            "task": "mrpc", "method": method, "constraint": 0.5, "seed": 0, "metric": "accuracy",
            "model": str(tmp_path / "models" / "m"), "dense": {"accuracy": 0.85, "f1": 0.9},
            "pruned": {"accuracy": pruned, "f1": pruned}, "flops_removed": 0.49, "pruning_seconds": 3.0,
            "latency_speedup": 1.5, "provenance": {"commit": "abc", "dirty": False, "torch": "2.13.0"}})
    bad = tmp_path / "runs" / points[("stsb", "kprune")].relative_dir
    bad.mkdir(parents=True)
    (bad / "error.txt").write_text("stsb/kprune/c0.5/seed0\nPapermillExecutionError: boom\n\ntrace")
    other = tmp_path / "runs" / "mrpc" / "kprune" / "c0.9" / "seed0"  # another grid's point in the same folder
    finish(points[("mrpc", "kprune")], other, json.loads((tmp_path / "runs" / points[("mrpc", "kprune")].relative_dir
                                                          / "summary.json").read_text()))
    df = aggregate(grid.points, tmp_path / "runs", tmp_path / "res" / "results.csv")
    assert len(df) == 2
    back = pd.read_csv(tmp_path / "res" / "results.csv")
    assert back.method.tolist() == ["kprune", "kwon-fisher"]
    assert back.pruned.tolist() == [0.8, 0.7] and back.dense.tolist() == [0.85, 0.85]
    assert back.pruned_f1.tolist() == [0.8, 0.7]
    # provenance, identity and relative paths
    assert back.commit.tolist() == ["abc", "abc"] and back.torch.tolist() == ["2.13.0", "2.13.0"]
    assert back.identity.tolist() == [identity_key(points[("mrpc", m)].identity) for m in ("kprune", "kwon-fisher")]
    assert back.run_dir.tolist() == ["../runs/mrpc/kprune/c0.5/seed0", "../runs/mrpc/kwon-fisher/c0.5/seed0"]
    assert back.model.tolist() == ["../models/m"] * 2 and back.grid.tolist() == ["../g.yaml"] * 2
    assert back.wall_seconds.tolist() == [1.0, 1.0]
    fails = pd.read_csv(tmp_path / "res" / "failures.csv")
    assert fails.run_dir.tolist() == ["../runs/stsb/kprune/c0.5/seed0"] and "boom" in fails.error[0]
    # a point whose recorded identity differs from the grid's is not the grid's result
    p = points[("mrpc", "kwon-fisher")]
    record = json.loads((tmp_path / "runs" / p.relative_dir / "point.json").read_text())
    record["identity"]["num_tokens"] += 1
    (tmp_path / "runs" / p.relative_dir / "point.json").write_text(json.dumps(record))
    assert aggregate(grid.points, tmp_path / "runs", tmp_path / "res" / "results.csv").method.tolist() == ["kprune"]


@needs_fixtures
def test_sweep_runs_points_records_failures_resumes_and_reports(tmp_path):
    model = make_tiny_checkpoint(tmp_path / "ckpt")
    glue = make_tiny_glue(tmp_path / "glue")
    runs, results = tmp_path / "runs", tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml",
                      tasks={"mrpc": {"model": str(model)}, "rte": {"model": str(tmp_path / "empty-model")}},
                      data_dir=str(glue), num_tokens=800, constraints=[0.5], methods=["kprune", "kwon-fisher"],
                      seeds=[0], device="cpu", parameters={"latency_repeats": 1},
                      output_dir=str(runs), results_dir=str(results))
    (tmp_path / "empty-model").mkdir()
    # the rte points fail (a model folder without a model); the sweep records them and goes on, in 2 worker processes
    assert cli_main(["sweep", str(grid), "--workers", "2"]) == 1
    for method in ("kprune", "kwon-fisher"):
        d = runs / "mrpc" / method / "c0.5" / "seed0"
        summary = json.loads((d / "summary.json").read_text())
        assert summary["method"] == method and summary["task"] == "mrpc" and summary["num_tokens"] == 800
        assert summary["latency_repeats"] == 1 and summary["latency_speedup"] > 0
        assert (d / "pruned" / "model" / "model.safetensors").exists()
        html = (d / "report.html").read_text()
        assert "<img" in html and "from kprune_lib import" not in html  # outputs only, inputs hidden
        assert not (d / "error.txt").exists()
    for method in ("kprune", "kwon-fisher"):
        err = (runs / "rte" / method / "c0.5" / "seed0" / "error.txt").read_text()
        assert "empty-model" in err and not (runs / "rte" / method / "c0.5" / "seed0" / "summary.json").exists()
    df = pd.read_csv(results / "results.csv")
    assert sorted(df.method) == ["kprune", "kwon-fisher"] and set(df.task) == {"mrpc"}
    assert ((df.flops_removed >= 0.5 - 1e-9) & (df.flops_removed < 0.6)).all()
    assert len(pd.read_csv(results / "failures.csv")) == 2
    report = (results / "report.html").read_text()
    assert report.count("<img") >= 2 and "load_results(" not in report
    assert (results / "figures" / "metric_vs_flops.png").stat().st_size > 1000

    # resume (the failing task dropped from the grid): finished points are not executed again
    spec = yaml.safe_load(grid.read_text())
    del spec["tasks"]["rte"]
    write_grid(grid, **spec)
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("mrpc/*/c0.5/seed0/*") if p.is_file()}
    assert len(stamps) >= 3 * 2
    (runs / "mrpc" / "kprune" / "c0.5" / "seed0" / "report.html").unlink()  # a missing page is re-rendered only
    outcome = _sweep_api(grid, report=False)
    assert outcome == {"ran": [], "skipped": ["mrpc/kprune/c0.5/seed0", "mrpc/kwon-fisher/c0.5/seed0"], "failed": []}
    assert {p: p.stat().st_mtime_ns for p in stamps if p.name != "report.html"} == \
        {p: t for p, t in stamps.items() if p.name != "report.html"}
    assert (runs / "mrpc" / "kprune" / "c0.5" / "seed0" / "report.html").exists()

    # the same grid with more tokens: every point reruns, the sweep says why, and the old results are gone
    spec["num_tokens"] = 900
    write_grid(grid, **spec)
    logs = []
    outcome = run_sweep(grid, log=logs.append, report=False)
    assert sorted(outcome["ran"]) == ["mrpc/kprune/c0.5/seed0", "mrpc/kwon-fisher/c0.5/seed0"]
    assert "mrpc/kprune/c0.5/seed0: num_tokens changed (800 -> 900) — rerunning" in logs
    for method in ("kprune", "kwon-fisher"):
        d = runs / "mrpc" / method / "c0.5" / "seed0"
        assert json.loads((d / "summary.json").read_text())["num_tokens"] == 900
        record = json.loads((d / "point.json").read_text())
        assert record["identity"]["num_tokens"] == 900 and record["wall_seconds"] > 0
    assert pd.read_csv(results / "results.csv").num_tokens.tolist() == [900, 900]


def _sweep_api(grid, **kw):
    return run_sweep(grid, log=lambda msg: None, **kw)


def test_a_kernel_that_dies_while_starting_is_replaced(tmp_path, monkeypatch):
    """Parallel workers' kernels can race for a TCP port; the loser dies before kernel_info and is retried — any
    other failure is not."""
    import papermill

    from kprune_lib.workbook import points

    nb = tmp_path / "nb.py"
    nb.write_text("# %%\nx = 1\n")
    died, calls = "Kernel died before replying to kernel_info", []

    def papermill_raising(messages):
        """A stand-in for papermill.execute_notebook that raises RuntimeError(m) for each message in turn, then runs."""
        pending = list(messages)

        def execute(*args, **kwargs):
            calls.append(1)
            if pending:
                raise RuntimeError(pending.pop(0))
        return execute

    cases = [([died], None, 2), (["cell failed"], "cell failed", 1),
             ([died] * points.KERNEL_START_TRIES, "kernel_info", points.KERNEL_START_TRIES)]
    for messages, raised, n_calls in cases:
        calls.clear()
        monkeypatch.setattr(papermill, "execute_notebook", papermill_raising(messages))
        if raised is None:
            points.execute_notebook(nb, tmp_path / "out.ipynb", {})
        else:
            with pytest.raises(RuntimeError, match=raised):
                points.execute_notebook(nb, tmp_path / "out.ipynb", {})
        assert len(calls) == n_calls


@needs_fixtures
def test_a_grid_task_of_your_own_files_runs_and_reruns_when_a_file_changes(tmp_path):
    """A task entry naming train_file / validation_file / columns (its key only a name): notebook 04 prunes on the
    files (its summary equals api.prune's on them), results.csv rows carry the grid's name, the identity holds the
    files' SHA-256; an edited validation file reruns the point, with the reason; a missing file stops the grid."""
    from kprune_lib import api
    from kprune_lib.data.glue import load_glue
    from kprune_lib.data.tasks import get_glue_task

    model = make_tiny_checkpoint(tmp_path / "ckpt")
    glue = make_tiny_glue(tmp_path / "glue")
    files = {}
    for split in ("train", "validation"):
        ex = load_glue(get_glue_task("mrpc"), split, glue)
        files[split] = tmp_path / f"{split}.csv"
        pd.DataFrame({"a": ex.text_a, "b": ex.text_b, "y": ex.labels}).to_csv(files[split], index=False)
    runs, results = tmp_path / "runs", tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml",
                      tasks={"pairs": {"model": str(model), "train_file": str(files["train"]),
                                       "validation_file": str(files["validation"]), "text_columns": "a,b",
                                       "label_column": "y"}},
                      num_tokens=800, constraints=[0.5], methods=["kprune"], seeds=[0], device="cpu",
                      parameters={"latency_repeats": 1}, output_dir=str(runs), results_dir=str(results))
    assert _sweep_api(grid, report=False)["ran"] == ["pairs/kprune/c0.5/seed0"]
    d = runs / "pairs" / "kprune" / "c0.5" / "seed0"
    summary = json.loads((d / "summary.json").read_text())
    direct = api.prune(str(model), None, str(tmp_path / "direct"), train_file=str(files["train"]),
                       validation_file=str(files["validation"]), text_columns="a,b", label_column="y",
                       device="cpu", progress=False, num_tokens=800, constraint=0.5)
    assert summary["task"] == "custom" and summary["heads_kept"] == direct["heads_kept"]
    assert summary["pruned"] == direct["pruned"] and summary["latency_examples"] == 64
    record = json.loads((d / "point.json").read_text())
    assert set(record["identity"]["data"]["files"]) == {"train:train.csv", "validation:validation.csv"}
    df = pd.read_csv(results / "results.csv")
    assert df.task.tolist() == ["pairs"] and df.metric.tolist() == ["accuracy"]

    pd.read_csv(files["validation"]).head(40).to_csv(files["validation"], index=False)  # the data changed
    logs = []
    assert run_sweep(grid, log=logs.append, report=False)["ran"] == ["pairs/kprune/c0.5/seed0"]
    assert any(line.startswith("pairs/kprune/c0.5/seed0: data changed") for line in logs), logs

    spec = yaml.safe_load(grid.read_text())
    spec["tasks"]["pairs"]["train_file"] = str(tmp_path / "missing.csv")
    with pytest.raises(GridError, match="train_file of task 'pairs' not found"):
        load_grid(write_grid(grid, **spec))


@needs_fixtures
def test_a_grid_task_of_a_data_set_runs_reruns_when_it_changes_and_refuses_mixes(tmp_path):
    """A task entry naming a dataset (a local data-set folder of Parquet splits, read by datasets.load_dataset) with
    its splits, columns and metric: notebook 04 prunes on it (its summary equals api.prune's), the identity holds
    every file of the folder by relative name; an edited split reruns the point; files and a dataset together, or a
    split without a dataset, stop the grid in one line."""
    import datasets

    from kprune_lib import api
    from kprune_lib.data.glue import load_glue
    from kprune_lib.data.tasks import get_glue_task

    model = make_tiny_checkpoint(tmp_path / "ckpt")
    glue = make_tiny_glue(tmp_path / "glue")
    folder = tmp_path / "pairs-dataset"
    folder.mkdir()
    for split, name in (("train", "fit"), ("validation", "held")):
        ex = load_glue(get_glue_task("mrpc"), split, glue)
        datasets.Dataset.from_dict({"a": ex.text_a, "b": ex.text_b, "y": ex.labels}).to_parquet(
            str(folder / f"{name}.parquet"))
    entry = {"model": str(model), "dataset": str(folder), "train_split": "fit", "validation_split": "held",
             "text_columns": "a,b", "label_column": "y", "metric": "mcc"}
    runs, results = tmp_path / "runs", tmp_path / "results"
    grid = write_grid(tmp_path / "grid.yaml", tasks={"pairs": entry}, num_tokens=800, constraints=[0.5],
                      methods=["kprune"], seeds=[0], device="cpu", parameters={"latency_repeats": 1},
                      output_dir=str(runs), results_dir=str(results))
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n"
                                      "  - split: fit\n    path: fit.parquet\n  - split: held\n    path: held.parquet\n---\n")
    logs = []
    out = run_sweep(grid, log=logs.append, report=False)
    assert out["ran"] == ["pairs/kprune/c0.5/seed0"], (out, logs)
    d = runs / "pairs" / "kprune" / "c0.5" / "seed0"
    summary = json.loads((d / "summary.json").read_text())
    direct = api.prune(str(model), None, str(tmp_path / "direct"), dataset=str(folder), train_split="fit",
                       validation_split="held", text_columns="a,b", label_column="y", metric="mcc", device="cpu",
                       progress=False, num_tokens=800, constraint=0.5)
    assert summary["heads_kept"] == direct["heads_kept"] and summary["pruned"] == direct["pruned"]
    assert summary["metric"] == "mcc" and summary["latency_examples"] == 64
    record = json.loads((d / "point.json").read_text())
    assert set(record["identity"]["data"]["files"]) == {"fit.parquet", "held.parquet", "README.md"}
    assert "dataset" not in record["identity"]["parameters"]  # a location: fingerprinted instead
    assert pd.read_csv(results / "results.csv").task.tolist() == ["pairs"]

    held = datasets.load_dataset("parquet", data_files=str(folder / "held.parquet"), split="train")
    held.select(range(40)).to_parquet(str(folder / "held.parquet"))  # the data changed
    logs = []
    assert run_sweep(grid, log=logs.append, report=False)["ran"] == ["pairs/kprune/c0.5/seed0"]
    assert any(line.startswith("pairs/kprune/c0.5/seed0: data changed") for line in logs), logs

    for extra, message in (({"train_file": str(folder / "fit.parquet")}, "names both a dataset and train_file"),):
        with pytest.raises(GridError, match=message):
            load_grid(write_grid(grid, tasks={"pairs": {**entry, **extra}}, constraints=[0.5]))
    bare = {k: v for k, v in entry.items() if k != "dataset"}
    with pytest.raises(GridError, match="names train_split, validation_split without a dataset"):
        load_grid(write_grid(grid, tasks={"pairs": bare}, constraints=[0.5]))
