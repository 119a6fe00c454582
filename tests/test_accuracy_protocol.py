"""benchmarks/accuracy.py: aggregation on synthetic summary.json files, and the runner with a fake subprocess."""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("accuracy", ROOT / "benchmarks" / "accuracy.py")
acc = importlib.util.module_from_spec(_spec)
sys.modules["accuracy"] = acc  # dataclasses look their module up
_spec.loader.exec_module(acc)

METRIC = {"mrpc": "accuracy", "stsb": "spearmanr", "sst2": "accuracy"}
DENSE = {"mrpc": 0.85, "stsb": 0.88, "sst2": 0.90}


def summary(task, method, constraint, seed, pruned, flops_removed=None):
    """A summary.json as `kprune prune` writes it (only the keys the protocol reads, plus num_tokens)."""
    m = METRIC[task]
    return {"task": task, "method": method, "constraint": constraint, "seed": seed, "metric": m,
            "num_tokens": 20000, "dense": {m: DENSE[task], "f1": 0.5}, "pruned": {m: pruned, "f1": 0.1},
            "flops_removed": constraint + 0.001 if flops_removed is None else flops_removed,
            "pruning_seconds": 10.0 + seed}


def write(out: Path, s: dict) -> None:
    d = acc.Point(s["task"], s["method"], s["constraint"], s["seed"]).out_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(s))


def rows_of(out: Path, tasks=("mrpc",), methods=("kprune", "kprune-plus"), constraints=(0.4, 0.6, 0.8),
            seeds=(0, 1, 2)):
    return acc.select_rows([acc.point_row(s) for s in acc.load_summaries(out)], list(tasks), list(methods),
                           list(constraints), list(seeds))


def render(rows, failures=(), methods=("kprune", "kprune-plus"), n_seeds=3, pair=("kprune-plus", "kprune")):
    return acc.render_report(rows, list(failures), methods=list(methods), n_seeds=n_seeds, pair=pair,
                             command="python benchmarks/accuracy.py", date="2026-01-01", csv_path="r.csv",
                             figure_path=None, num_tokens=20000)


def test_mean_sd_over_seeds_and_csv(tmp_path):
    for seed, v in enumerate([0.80, 0.82, 0.87]):
        write(tmp_path, summary("mrpc", "kprune", 0.6, seed, v))
    write(tmp_path, summary("mrpc", "kprune-plus", 0.6, 0, 0.84))
    write(tmp_path, summary("mrpc", "kprune-plus", 0.6, 1, 0.86))
    rows = rows_of(tmp_path)
    mean, sd, n = acc.method_stats(rows, "mrpc", 0.6, "kprune")
    assert (mean, sd, n) == (pytest.approx(83.0), pytest.approx(math.sqrt(13.0)), 3)
    assert acc.method_stats(rows, "mrpc", 0.6, "kprune-plus") == (pytest.approx(85.0), pytest.approx(math.sqrt(2)), 2)
    text = render(rows)
    row = next(line for line in text.splitlines() if line.startswith("| mrpc | 0.6 |"))
    assert "| 85.00 |" in row  # dense ×100
    assert "83.00 ± 3.61 |" in row and "(n=3)" not in row  # all seeds asked: no n
    assert "85.00 ± 1.41 (n=2)" in row  # fewer seeds than asked: n shown

    acc.write_csv(rows, tmp_path / "a.csv")
    with open(tmp_path / "a.csv") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == acc.CSV_COLUMNS
    assert len(table) == 5
    first = table[0]
    assert (first["task"], first["method"], first["seed"], first["metric"]) == ("mrpc", "kprune", "0", "accuracy")
    assert float(first["dense"]) == pytest.approx(85.0) and float(first["pruned"]) == pytest.approx(80.0)
    assert float(first["delta"]) == pytest.approx(-5.0) and float(first["flops_removed"]) == pytest.approx(0.601)


def test_paired_differences_use_only_matching_seeds(tmp_path):
    for seed, v in [(0, 0.80), (1, 0.82), (2, 0.50)]:       # seed 2 has no kprune-plus partner
        write(tmp_path, summary("mrpc", "kprune", 0.8, seed, v))
    for seed, v in [(0, 0.83), (1, 0.84), (3, 0.99)]:       # seed 3 has no kprune partner (and is not asked)
        write(tmp_path, summary("mrpc", "kprune-plus", 0.8, seed, v))
    rows = rows_of(tmp_path, seeds=(0, 1, 2, 3))
    assert acc.paired_differences(rows, "mrpc", 0.8, "kprune-plus", "kprune") == pytest.approx([3.0, 2.0])
    (d,) = acc.paired_table(rows, "kprune-plus", "kprune")
    assert d["n"] == 2 and d["mean"] == pytest.approx(2.5)
    assert d["se"] == pytest.approx(math.sqrt(0.5) / math.sqrt(2))  # sd of [3, 2] over √2 = 0.5
    line = next(x for x in render(rows).splitlines() if x.startswith("| mrpc | 0.8 | +2.50"))
    assert line == "| mrpc | 0.8 | +2.50 | 0.50 | 2 |"


def test_standard_error_of_three_pairs(tmp_path):
    for seed, (a, b) in enumerate([(0.80, 0.81), (0.80, 0.83), (0.80, 0.86)]):
        write(tmp_path, summary("stsb", "kprune", 0.6, seed, a))
        write(tmp_path, summary("stsb", "kprune-plus", 0.6, seed, b))
    (d,) = acc.paired_table(rows_of(tmp_path, tasks=("stsb",)), "kprune-plus", "kprune")
    assert d["mean"] == pytest.approx(10 / 3) and d["n"] == 3
    assert d["se"] == pytest.approx(math.sqrt(((1 - 10 / 3) ** 2 + (3 - 10 / 3) ** 2 + (6 - 10 / 3) ** 2) / 2) / math.sqrt(3))


def grid_data(out, gain_06, gain_08, gain_04=5.0, tasks=("mrpc", "stsb", "sst2")):
    """kprune at 0.70 on every seed; kprune-plus higher by gain_c points (seed-dependent ±0.5 noise)."""
    for task in tasks:
        for c, gain in [(0.4, gain_04), (0.6, gain_06), (0.8, gain_08)]:
            for seed, noise in enumerate([-0.5, 0.0, 0.5]):
                write(out, summary(task, "kprune", c, seed, 0.70))
                write(out, summary(task, "kprune-plus", c, seed, 0.70 + (gain + noise) / 100))


def test_summary_over_constraints_at_least_06(tmp_path):
    grid_data(tmp_path, gain_06=1.0, gain_08=2.0, gain_04=9.0)
    rows = rows_of(tmp_path, tasks=("mrpc", "stsb", "sst2"))
    s = acc.high_summary(rows, ["kprune", "kprune-plus"], ("kprune-plus", "kprune"))
    assert s["methods"]["kprune"] == (pytest.approx(70.0), pytest.approx(0.0), 18)
    mean, _, n = s["methods"]["kprune-plus"]
    assert n == 18 and mean == pytest.approx(71.5)  # the 0.4 points (+9) are left out
    mean, se, k = s["paired"]
    assert k == 6 and mean == pytest.approx(1.5)
    assert se == pytest.approx(math.sqrt(6 * 0.25 / 5) / math.sqrt(6))  # cell means 1,1,1,2,2,2
    text = render(rows)
    assert "- **kprune-plus**: 71.50 (n = 18 points)" in text
    assert "+1.50 ± 0.22 (standard error over k = 6 cells)" in text


@pytest.mark.parametrize("gain_06, gain_08, ok", [(1.0, 1.2, True), (0.9, 1.0, False)])
def test_done_when_a_flips_with_the_gain(tmp_path, gain_06, gain_08, ok):
    grid_data(tmp_path, gain_06, gain_08, gain_04=-0.1)
    rows = rows_of(tmp_path, tasks=("mrpc", "stsb", "sst2"))
    d = acc.done_when(rows, "kprune-plus", "kprune")
    assert d["a"]["ok"] is ok and d["a"]["cells"] == 6
    assert d["a"]["mean"] == pytest.approx((gain_06 + gain_08) / 2)
    assert d["b"]["ok"] is True and d["b"]["worst"]["gap"] == pytest.approx(-0.1)
    assert f"**{'yes' if ok else 'no'}** — {(gain_06 + gain_08) / 2:+.2f} over 6" in render(rows)


@pytest.mark.parametrize("drop, ok", [(0.2, True), (0.4, False)])
def test_done_when_b_flips_with_a_shortfall(tmp_path, drop, ok):
    grid_data(tmp_path, 2.0, 2.0, gain_04=-drop)
    rows = rows_of(tmp_path, tasks=("mrpc", "stsb", "sst2"))
    d = acc.done_when(rows, "kprune-plus", "kprune")
    assert d["a"]["ok"] is True
    assert d["b"]["ok"] is ok and d["b"]["worst"]["gap"] == pytest.approx(-drop)
    assert len(d["b"]["below"]) == (0 if ok else 3)
    text = render(rows)
    assert f"**{'yes' if ok else 'no'}** — largest shortfall {-drop:+.2f} at mrpc 0.4" in text
    assert ("below: mrpc 0.4: -0.40; stsb 0.4: -0.40; sst2 0.4: -0.40" in text) is (not ok)


def test_paired_section_skipped_without_the_method(tmp_path):
    for seed in (0, 1):
        write(tmp_path, summary("mrpc", "kprune", 0.8, seed, 0.8))
        write(tmp_path, summary("mrpc", "kwon-fisher", 0.8, seed, 0.7))
    rows = rows_of(tmp_path, methods=("kprune", "kprune-plus", "kwon-fisher"))
    text = render(rows, methods=("kprune", "kprune-plus", "kwon-fisher"))
    assert "Paired differences kprune-plus − kprune skipped: no finished points of kprune-plus." in text
    assert "**n/a**" in text
    other = render(rows, methods=("kprune", "kwon-fisher"), pair=("kprune", "kwon-fisher"))
    assert "| mrpc | 0.8 | +10.00 | 0.00 | 2 |" in other


# ------------------------------------------------------------------------------ the runner, with a fake subprocess

def fake_shared(tmp_path, monkeypatch, tasks=("mrpc",)):
    shared = tmp_path / "shared"
    (shared / "data" / "glue").mkdir(parents=True)
    for t in tasks:
        (shared / "models" / f"minilm-l6-{t}").mkdir(parents=True)
    monkeypatch.setenv("KPRUNE_SHARED", str(shared))
    return shared


def option(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_runner_records_failure_reports_it_and_resumes(tmp_path, monkeypatch):
    fake_shared(tmp_path, monkeypatch)
    calls = []

    def fake_run(cmd, env):
        calls.append((cmd, env))
        method, seed = option(cmd, "--method"), int(option(cmd, "--seed"))
        if method == "kprune-plus":
            return subprocess.CompletedProcess(cmd, 2, "", "some warning\nkprune: error: invalid choice 'kprune-plus'\n")
        target = Path(option(cmd, "--output"))
        target.mkdir(parents=True)
        s = summary("mrpc", method, float(option(cmd, "--constraint")), seed, 0.80 + seed / 100)
        (target / "summary.json").write_text(json.dumps(s))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(acc, "spawn", fake_run)
    out, report = tmp_path / "runs", tmp_path / "bench" / "ACC.md"
    argv = ["--tasks", "mrpc", "--constraints", "0.8", "--seeds", "0,1", "--methods", "kprune,kprune-plus",
            "--num-tokens", "2000", "--out", str(out), "--report", str(report), "--workers", "2"]
    assert acc.main(argv) == 1
    assert len(calls) == 4
    cmd, env = next(c for c in calls if option(c[0], "--method") == "kprune" and option(c[0], "--seed") == "1")
    assert option(cmd, "--output") == str(out / "mrpc" / "kprune" / "c0.8" / "seed1")
    assert option(cmd, "--num-tokens") == "2000" and option(cmd, "--constraint") == "0.8" and "--quiet" in cmd
    assert option(cmd, "--model") == str(tmp_path / "shared" / "models" / "minilm-l6-mrpc")
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    text = report.read_text()
    assert "## Failed points (2)" in text
    assert "| mrpc | kprune-plus | 0.8 | 1 | kprune: error: invalid choice 'kprune-plus' |" in text
    assert "80.50 ± 0.71" in text and "`python benchmarks/accuracy.py --tasks mrpc" in text
    assert (tmp_path / "bench" / "results" / "acc.csv").exists() and "](results/acc.csv)" in text

    calls.clear()  # resume: finished points are reused, only the failed ones run again
    assert acc.main(argv) == 1
    assert sorted(option(c, "--method") for c, _ in calls) == ["kprune-plus", "kprune-plus"]


def test_report_only_runs_nothing_and_writes_the_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("KPRUNE_SHARED", str(tmp_path / "no-shared"))  # not needed to report

    def no_run(*a, **kw):
        raise AssertionError("--report-only started a subprocess")

    from matplotlib import font_manager  # noqa: F401  (its first import may call fc-list)

    monkeypatch.setattr(acc, "spawn", no_run)
    monkeypatch.setattr(acc, "run_points", no_run)
    monkeypatch.setattr(subprocess, "Popen", no_run)
    out = tmp_path / "runs"
    for task in ("mrpc", "stsb"):
        for c in (0.4, 0.8):
            for seed in (0, 1):
                write(out, summary(task, "kprune", c, seed, 0.8 - c / 10 + seed / 100))
    (out / acc.FAILURES_FILE).write_text(json.dumps(
        [{"task": "stsb", "method": "kprune", "constraint": 0.6, "seed": 0, "error": "kprune: error: boom"}]))
    report = tmp_path / "R.md"
    argv = ["--report-only", "--tasks", "mrpc,stsb", "--constraints", "0.4,0.6,0.8", "--seeds", "0,1",
            "--methods", "kprune", "--out", str(out), "--report", str(report)]
    assert acc.main(argv) == 0
    text = report.read_text()
    assert "| stsb | kprune | 0.6 | 0 | kprune: error: boom |" in text
    assert "![metric vs FLOPs removed](figures/r.png)" in text and "--report-only" not in text
    png = (tmp_path / "figures" / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (2 * 540, 456)  # two panels of 4.5 × 3.8 in at dpi 120


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "mrpc,qqp"], "accuracy: error: unknown task 'qqp'"),
    (["--constraints", "0.8,1.2"], "accuracy: error: constraint 1.2 is outside (0, 1)"),
    (["--compare", "kprune"], "accuracy: error: --compare takes two different methods"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, message):
    fake_shared(tmp_path, monkeypatch)
    monkeypatch.setattr(acc, "spawn", lambda *a, **kw: pytest.fail("ran a point"))
    assert acc.main(argv + ["--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_missing_shared_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KPRUNE_SHARED", str(tmp_path / "absent"))
    assert acc.main(["--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"accuracy: error: shared folder {tmp_path / 'absent'} is missing (set KPRUNE_SHARED)"


def test_several_pairs_each_get_their_section(tmp_path):
    for seed in range(3):
        write(tmp_path, summary("mrpc", "kprune", 0.8, seed, 0.80))
        write(tmp_path, summary("mrpc", "kprune-plus", 0.8, seed, 0.82))
        write(tmp_path, summary("mrpc", "kprune-gn", 0.8, seed, 0.79))
    methods = ("kprune", "kprune-plus", "kprune-gn")
    rows = rows_of(tmp_path, methods=methods)
    text = render(rows, methods=methods, pair=[("kprune-plus", "kprune"), ("kprune-gn", "kprune")])
    assert "## Paired differences (kprune-plus − kprune)" in text and "## Paired differences (kprune-gn − kprune)" in text
    assert "| mrpc | 0.8 | +2.00 | 0.00 | 3 |" in text and "| mrpc | 0.8 | -1.00 | 0.00 | 3 |" in text


def test_kprune_plus_shares_the_points_of_its_candidate(tmp_path):
    """kprune-plus runs exactly a K-prune+ candidate's settings: that candidate's finished points are reused."""
    from kprune_lib.method.methods import same_settings

    source = same_settings("kprune-plus")
    assert source is not None and same_settings("kprune") is None
    write(tmp_path, summary("mrpc", source, 0.8, 0, 0.81))
    point = acc.Point("mrpc", "kprune-plus", 0.8, 0)
    assert acc.unfinished([point], tmp_path) == []
    rows = acc.select_rows(acc.with_shared_points([acc.point_row(s) for s in acc.load_summaries(tmp_path)],
                                                  ["kprune-plus"]), ["mrpc"], ["kprune-plus"], [0.8], [0])
    assert len(rows) == 1 and rows[0]["pruned"] == pytest.approx(81.0) and rows[0]["shared_from"] == source
    assert f"runs exactly the settings of **{source}**" in render(rows, methods=("kprune-plus",), pair=None)


def test_collapsed_points_are_flagged_in_the_accuracy_table(tmp_path):
    out = tmp_path / "runs"
    for seed in (0, 1, 2):
        s = summary("mrpc", "kprune", 0.8, seed, 0.68)
        s["collapsed"] = {"dense": False, "pruned": seed != 1}
        write(out, s)
        write(out, summary("mrpc", "kprune-plus", 0.8, seed, 0.80))
    rows = rows_of(out, constraints=(0.8,))
    line = next(l for l in acc.main_table(rows, ["kprune", "kprune-plus"], 3) if l.startswith("| mrpc"))
    kprune_cell, plus_cell = line.split("|")[6:8]
    assert "(collapsed 2/3)" in kprune_cell and "collapsed" not in plus_cell
