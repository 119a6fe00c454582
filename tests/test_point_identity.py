"""A sweep point is reused only when what produced it is identical: model and data contents, task, method and every
resolved hyper-parameter, budget, tokens, seed. These tests plan real grids (load_grid, the sweep's planner, the
CLI's --dry-run) against point folders that hold what a finished run leaves; the full run is in test_sweep.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kprune_lib.cli import main as cli_main
from kprune_lib.workbook.identity import differences, identity_key
from kprune_lib.workbook.points import point_record
from kprune_lib.workbook.sweep import GridError, load_grid, plan


def write_grid(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A model folder (config, weights, tokenizer), a GLUE folder (MRPC, STS-B) and a grid over both tasks."""
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "mini"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"weights-0" * 100)
    (model / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (model / "README.md").write_text("a model card: not read by loading")
    for folder in ("MRPC", "STS-B"):
        (tmp_path / "glue" / folder).mkdir(parents=True)
        for split in ("train.tsv", "dev.tsv"):
            (tmp_path / "glue" / folder / split).write_text(f"{folder} {split}\n")
    spec = dict(tasks={"mrpc": {"model": "models/mini"}, "stsb": {"model": "models/mini"}}, data_dir="glue",
                constraints=[0.5, 0.8], methods=["kprune", "kwon-fisher"], seeds=[0, 1], num_tokens=2000,
                parameters={"latency_repeats": 1}, output_dir="runs", results_dir="results")
    grid_path = write_grid(tmp_path / "grid.yaml", **spec)
    for p in load_grid(grid_path).points:  # every point finished, as a run of this grid leaves it
        d = tmp_path / "runs" / p.relative_dir
        d.mkdir(parents=True)
        (d / "point.json").write_text(json.dumps(point_record(p, wall_seconds=1.0)))
        (d / "summary.json").write_text("{}")
    return tmp_path, spec


def reasons(grid_path: Path) -> dict[str, str | None]:
    grid = load_grid(grid_path)
    return {p.label(): r for p, r in plan(grid, grid.output_dir).items()}


def test_an_unchanged_grid_reuses_every_point_and_a_copy_elsewhere_too(world):
    root, spec = world
    assert set(reasons(root / "grid.yaml").values()) == {None}
    # the same files under another folder (a clone of the repository) are the same inputs
    shutil.copytree(root / "models" / "mini", root / "elsewhere" / "mini")
    spec["tasks"]["mrpc"]["model"] = "elsewhere/mini"
    assert set(reasons(write_grid(root / "copy.yaml", **spec)).values()) == {None}


@pytest.mark.parametrize("change, affected, why", [
    (lambda root, spec: (root / "models" / "mini" / "model.safetensors").write_bytes(b"weights-1" * 100),
     {"mrpc", "stsb"}, "model changed"),
    (lambda root, spec: (root / "models" / "mini" / "vocab.txt").write_text("[PAD]\n"), {"mrpc", "stsb"},
     "model changed"),
    (lambda root, spec: (root / "glue" / "STS-B" / "dev.tsv").write_text("edited\n"), {"stsb"}, "data changed"),
    (lambda root, spec: spec["tasks"]["mrpc"].update(num_tokens=20000), {"mrpc"},
     "num_tokens changed (2000 -> 20000)"),
    (lambda root, spec: spec["parameters"].update(lam_rep=0.001), {"mrpc", "stsb"},
     "hyper-parameters changed (lam_rep)"),
    (lambda root, spec: spec["tasks"]["stsb"].update(parameters={"temperature": 4.0}), {"stsb"},
     "hyper-parameters changed (temperature)"),
    (lambda root, spec: spec.update(device="cpu"), {"mrpc", "stsb"}, "device changed"),
])
def test_a_copied_grid_with_a_change_reruns_exactly_the_affected_points_and_says_why(world, change, affected, why):
    root, spec = world
    change(root, spec)
    planned = reasons(write_grid(root / "copy.yaml", **spec))
    for label, reason in planned.items():
        if label.split("/")[0] in affected:
            assert reason is not None and reason.startswith(why), (label, reason)
        else:
            assert reason is None, (label, reason)


def test_a_model_card_edit_is_not_a_model_change(world):
    root, _ = world
    (root / "models" / "mini" / "README.md").write_text("edited card")
    assert set(reasons(root / "grid.yaml").values()) == {None}


def test_another_output_folder_sees_none_of_these_points_and_reuse_never_reruns_all(world):
    root, spec = world
    spec["output_dir"] = "runs-2"
    assert set(reasons(write_grid(root / "copy.yaml", **spec)).values()) == {"not run yet"}
    grid = load_grid(root / "grid.yaml")
    assert set(plan(grid, grid.output_dir, reuse="never").values()) == {"--reuse never"}


def test_points_without_a_recorded_identity_rerun(world):
    root, _ = world
    legacy = root / "runs" / "mrpc" / "kprune" / "c0.5" / "seed0" / "point.json"
    legacy.unlink()
    assert reasons(root / "grid.yaml")["mrpc/kprune/c0.5/seed0"].startswith("no point.json")
    assert differences(None, {}) is not None


def test_dry_run_lists_what_would_run_and_why_and_changes_nothing(world, capsys):
    root, spec = world
    spec["parameters"]["mu"] = 32.0
    grid = write_grid(root / "copy.yaml", **{**spec, "tasks": {"mrpc": spec["tasks"]["mrpc"]}})
    before = sorted((p, p.stat().st_mtime_ns) for p in (root / "runs").rglob("*"))
    assert cli_main(["sweep", str(grid), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "mrpc/kprune/c0.5/seed0: run (hyper-parameters changed (mu))" in err
    assert "8 points, 0 to reuse, 8 to run; nothing was changed" in err
    assert sorted((p, p.stat().st_mtime_ns) for p in (root / "runs").rglob("*")) == before
    assert not (root / "results").exists()


def test_a_missing_local_model_or_data_folder_stops_the_sweep_before_anything_runs(world, capsys):
    root, spec = world
    spec["tasks"]["mrpc"]["model"] = "models/no-such-model"
    spec["output_dir"] = "runs-new"
    grid = write_grid(root / "copy.yaml", **spec)
    assert cli_main(["sweep", str(grid)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model folder" in err[0] and "no-such-model" in err[0] and "does not exist" in err[0]
    assert not (root / "runs-new").exists()
    spec["tasks"]["mrpc"]["model"] = "models/mini"
    spec["data_dir"] = "no-such-glue"
    with pytest.raises(GridError, match="data_dir .*no-such-glue does not exist"):
        load_grid(write_grid(root / "copy.yaml", **spec))
    # a hub id ("org/name" without a local "org" folder) is not a local path
    spec["data_dir"] = "glue"
    spec["tasks"]["mrpc"]["model"] = "sentence-transformers/all-MiniLM-L6-v2"
    assert {p.model for p in load_grid(write_grid(root / "copy.yaml", **spec)).points if p.task == "mrpc"} == \
        {"sentence-transformers/all-MiniLM-L6-v2"}


def test_unknown_or_invalid_notebook_parameters_are_rejected(world):
    root, spec = world
    spec["parameters"]["lam_repp"] = 0.1
    with pytest.raises(GridError, match=r"unknown notebook-04 parameter\(s\) \['lam_repp'\]"):
        load_grid(write_grid(root / "copy.yaml", **spec))
    del spec["parameters"]["lam_repp"]
    spec["parameters"]["temperature"] = -1.0  # PruneConfig refuses it: before any point runs
    with pytest.raises(GridError, match="mrpc/kprune/c0.5/seed0: temperature must be positive"):
        load_grid(write_grid(root / "copy.yaml", **spec))


def test_the_identity_holds_every_resolved_hyper_parameter_and_no_location(world):
    root, _ = world
    grid = load_grid(root / "grid.yaml")
    p = next(p for p in grid.points if p.method == "kwon-fisher")
    ident = p.identity
    assert ident["model"]["files"].keys() == {"config.json", "model.safetensors", "vocab.txt"}
    assert ident["data"]["files"].keys() == {"MRPC/train.tsv", "MRPC/dev.tsv"} if p.task == "mrpc" else True
    assert ident["resolved"]["method"] == "kwon-fisher" and ident["resolved"]["num_tokens"] == 2000
    assert {"lam_rep", "mu", "temperature", "latency_budget_ms", "latency_batch", "threads"} <= set(ident["resolved"])
    assert not {"model", "data_dir", "output_dir", "tokenizer"} & set(ident["parameters"])
    assert str(root) not in json.dumps(ident)  # no machine-specific path: a clone reuses the points
    record = json.loads((root / "runs" / p.relative_dir / "point.json").read_text())
    assert record["key"] == identity_key(ident) and record["sources"]["model"] == str(root / "models" / "mini")
    assert record["grid_sha256"] and record["command"]


def test_a_knob_added_to_the_code_after_a_point_ran_is_no_change_at_its_default(world):
    """Points recorded before an option existed (their identity lacks it) are reused while the option sits at its
    default (new options keep the old behaviour there), and rerun when the grid sets it to anything else."""
    root, spec = world
    for path in (root / "runs").rglob("point.json"):  # as if `damping` (PruneConfig) and `ridge` (notebook) were new
        record = json.loads(path.read_text())
        del record["identity"]["resolved"]["damping"], record["identity"]["parameters"]["ridge"]
        path.write_text(json.dumps(record))
    assert set(reasons(root / "grid.yaml").values()) == {None}
    spec["parameters"]["ridge"] = 1e-3
    planned = reasons(write_grid(root / "copy.yaml", **spec))
    assert set(planned.values()) == {"hyper-parameters changed (ridge)"}

