"""`make demo` on a plain clone: a grid's local fixtures fall back to hub ids (`fallback:`, `data_dir_fallback:`),
and offline without the fixtures the sweep stops before running anything, with one `kprune: error:` line.
No network: every check here runs with the hub offline or on a fake local cache."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHARED
from kprune_lib.workbook.sweep import HUB_GLUE, GridError, check_fallbacks, load_grid, resolve_sources

DEMO = ROOT / "papermill_runs" / "grid_demo.yaml"
DEMO_HUB = {"mrpc": "M-FAC/bert-mini-finetuned-mrpc", "stsb": "M-FAC/bert-mini-finetuned-stsb"}


def fallback_grid(path: Path, root: Path) -> Path:
    """The demo grid's shape, its local fixtures under `root` (absent unless a test creates them)."""
    spec = {"tasks": {t: {"model": str(root / "models" / t), "fallback": f"org/mini-{t}"} for t in ("mrpc", "stsb")},
            "data_dir": str(root / "glue"), "data_dir_fallback": None, "num_tokens": 500, "constraints": [0.5],
            "device": "cpu", "output_dir": str(path.parent / "runs"), "results_dir": str(path.parent / "results")}
    path.write_text(yaml.safe_dump(spec))
    return path


def offline_env(monkeypatch, cache: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(cache))  # an empty Hugging Face cache unless a test fills it


def test_resolution_uses_local_folders_when_they_exist(tmp_path):
    (tmp_path / "models" / "a").mkdir(parents=True)
    (tmp_path / "glue").mkdir()
    src = resolve_sources("mrpc", "models/a", "glue", tmp_path, fallback="org/a", data_dir_fallback=None)
    assert (src.model, src.data_dir) == (str(tmp_path / "models" / "a"), str(tmp_path / "glue"))
    assert src.model_missing is None and src.data_missing is None and src.hub_fallbacks() == []
    assert "local folder" in src.describe() and "fallback" not in src.describe()
    # an explicit absolute local path works exactly as without fallbacks
    plain = resolve_sources("mrpc", str(tmp_path / "models" / "a"), str(tmp_path / "glue"), "/")
    assert (plain.model, plain.data_dir) == (src.model, src.data_dir)


def test_resolution_falls_back_to_hub_ids_when_local_folders_are_missing(tmp_path):
    src = resolve_sources("mrpc", "models/a", "glue", tmp_path, fallback="org/a", data_dir_fallback=None)
    assert (src.model, src.data_dir) == ("org/a", None)  # a hub id, and no data_dir: the hub's nyu-mll/glue
    assert (src.model_missing, src.data_missing) == ("models/a", "glue")
    assert src.hub_fallbacks() == [("model", "org/a"), ("dataset", HUB_GLUE)]
    line = src.describe()
    assert "hub id org/a (fallback: models/a not found)" in line and f"hub {HUB_GLUE}" in line
    # without fallbacks nothing changes: the model stays as written (a hub id), a missing data_dir stays a folder
    plain = resolve_sources("mrpc", "models/a", "glue", tmp_path)
    assert (plain.model, plain.data_dir) == ("models/a", str(tmp_path / "glue")) and plain.hub_fallbacks() == []


def test_demo_grid_uses_the_shared_fixtures_or_the_hub(tmp_path):
    if SHARED.exists():  # this machine: the local fixtures, exactly as before
        grid = load_grid(DEMO, base=ROOT)
        assert {Path(p.model).name for p in grid.points} == {"minilm-l6-mrpc", "minilm-l6-stsb"}
        assert all(Path(p.model).is_dir() and Path(p.data_dir).is_dir() for p in grid.points)
        assert all(not s.hub_fallbacks() for s in grid.sources.values())
    clone = tmp_path / "clone"  # a plain clone: no ../shared beside it
    clone.mkdir()
    assert not (clone.parent / "shared").exists()
    grid = load_grid(DEMO, base=clone)
    assert {(p.task, p.model, p.data_dir) for p in grid.points} == {(t, m, None) for t, m in DEMO_HUB.items()}
    assert len(grid.points) == 2 * 3


@pytest.mark.parametrize("settings, message", [
    ({"tasks": {"mrpc": {"model": "m", "fallback": 3}}}, "fallback"),
    ({"tasks": {"mrpc": {"model": "m"}}, "data_dir_fallback": ["x"]}, "data_dir_fallback"),
])
def test_bad_fallbacks_are_rejected(tmp_path, settings, message):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({**settings, "constraints": [0.5]}))
    with pytest.raises(GridError, match=message):
        load_grid(tmp_path / "g.yaml")


def test_offline_check_passes_with_fixtures_or_a_populated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    offline_env(monkeypatch, cache)
    grid_path = fallback_grid(tmp_path / "g.yaml", tmp_path / "fixtures")
    grid = load_grid(grid_path)
    with pytest.raises(GridError) as e:
        check_fallbacks(grid.sources, grid_path)
    assert "\n" not in str(e.value) and "offline" in str(e.value) and "org/mini-mrpc" in str(e.value)
    # the same fallbacks already in the local Hugging Face cache: offline runs can use them
    for t in ("mrpc", "stsb"):
        snap = cache / "hub" / f"models--org--mini-{t}" / "snapshots" / "0"
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
    (cache / "datasets" / HUB_GLUE.replace("/", "___")).mkdir(parents=True)
    check_fallbacks(grid.sources, grid_path)
    # the local fixtures present: no hub needed at all
    for t in ("mrpc", "stsb"):
        (tmp_path / "fixtures" / "models" / t).mkdir(parents=True)
    (tmp_path / "fixtures" / "glue").mkdir()
    shutil.rmtree(cache)
    grid = load_grid(grid_path)
    assert all(not s.hub_fallbacks() for s in grid.sources.values())
    check_fallbacks(grid.sources, grid_path)


def test_sweep_offline_without_fixtures_stops_before_any_run(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    grid_path = fallback_grid(work / "grid.yaml", tmp_path / "no-such-fixtures")
    env = {k: v for k, v in os.environ.items() if k not in ("KPRUNE_DEBUG", "HF_HUB_CACHE", "HF_DATASETS_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    exe = Path(sys.executable).parent / "kprune"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kprune_lib.cli"]
    r = subprocess.run(cmd + ["sweep", str(grid_path)], cwd=work, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kprune: error: "), r.stderr
    msg = lines[0]
    assert "local fixtures missing" in msg and str(tmp_path / "no-such-fixtures" / "glue") in msg
    assert "offline (HF_HUB_OFFLINE=1)" in msg and "org/mini-mrpc" in msg and HUB_GLUE in msg
    assert "local folders" in msg and "go online" in msg
    assert r.stdout == ""
    assert sorted(os.listdir(work)) == ["grid.yaml"]  # no runs/, no results/: nothing ran, nothing was written
