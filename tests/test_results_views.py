"""Notebook 05's multi-seed views on synthetic tables: both results formats, mean ± sd over seeds, paired
differences (unmatched seeds dropped, standard errors), kept units per layer and their heatmap."""
from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from kprune_lib.workbook import plots
from kprune_lib.workbook import results as views

ACCURACY_COLUMNS = ("task", "method", "constraint", "seed", "metric", "dense", "pruned", "delta", "flops_removed",
                    "pruning_seconds")
DENSE = {"mrpc": 86.0, "stsb": 88.0}
# pruned metric ×100 per (task, method, constraint) and seed; kprune-plus lacks seed 2 at mrpc 0.8 and seed 0 at
# stsb 0.8, so those seeds of kprune have no pair
PRUNED = {
    ("mrpc", "kprune", 0.4): {0: 80.0, 1: 82.0, 2: 84.0},
    ("mrpc", "kprune-plus", 0.4): {0: 81.0, 1: 84.0, 2: 84.0},   # differences 1, 2, 0
    ("mrpc", "kprune", 0.8): {0: 70.0, 1: 72.0, 2: 74.0},
    ("mrpc", "kprune-plus", 0.8): {0: 73.0, 1: 76.0},            # differences 3, 4 (seed 2 dropped)
    ("mrpc", "kwon-fisher", 0.8): {0: 60.0, 1: 61.0, 2: 65.0},
    ("stsb", "kprune", 0.8): {0: 60.0, 1: 62.0},
    ("stsb", "kprune-plus", 0.8): {1: 65.0, 2: 70.0},            # difference 3 (seed 1 only)
}


def accuracy_rows() -> list[dict]:
    """The rows the accuracy protocol writes (benchmarks/accuracy.py: metrics ×100, delta)."""
    rows = []
    for (task, method, c), per_seed in PRUNED.items():
        for seed, pruned in per_seed.items():
            rows.append({"task": task, "method": method, "constraint": c, "seed": seed,
                         "metric": "accuracy" if task == "mrpc" else "spearman", "dense": DENSE[task],
                         "pruned": pruned, "delta": pruned - DENSE[task], "flops_removed": c + 0.001 * seed,
                         "pruning_seconds": 10.0 + seed})
    return rows


def write_accuracy_csv(path: Path, rows: list[dict] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ACCURACY_COLUMNS)
        w.writeheader()
        w.writerows(accuracy_rows() if rows is None else rows)
    return path


def write_sweep_csv(path: Path, points_dir: Path | None = None) -> Path:
    """The same points in the sweep's format (metrics ×1, run_dir, latency), run_dir under points_dir if given."""
    rows = []
    for r in accuracy_rows():
        run_dir = (points_dir / r["task"] / r["method"] / f"c{r['constraint']:g}" / f"seed{r['seed']}"
                   if points_dir is not None else "")
        rows.append({"task": r["task"], "method": r["method"], "constraint": r["constraint"], "seed": r["seed"],
                     "num_tokens": 5000, "metric": r["metric"], "dense": r["dense"] / 100, "pruned": r["pruned"] / 100,
                     "flops_removed": r["flops_removed"], "pruning_seconds": r["pruning_seconds"],
                     "latency_speedup": 1.5, "run_dir": str(run_dir)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# kept heads (of 4) and neurons (of 8) per layer, 2 layers
KEPT = {
    ("mrpc", "kprune", 0.8, 0): ([2, 4], [2, 6]),
    ("mrpc", "kprune", 0.8, 1): ([4, 4], [4, 8]),
    ("mrpc", "kprune-plus", 0.8, 0): ([1, 3], [8, 0]),
    ("mrpc", "kprune", 0.4, 0): ([4, 4], [8, 8]),
    ("stsb", "kprune", 0.8, 0): ([0, 4], [4, 4]),
}


def fake_summary(task: str, method: str, constraint: float, seed: int, heads_kept, neurons_kept, heads: int = 4,
                 neurons: int = 8, with_method: bool = True) -> dict:
    sublayers = []
    for layer, (h, n) in enumerate(zip(heads_kept, neurons_kept)):
        sublayers += [{"sublayer": 2 * layer, "layer": layer, "kind": "mha", "units": heads, "kept": h},
                      {"sublayer": 2 * layer + 1, "layer": layer, "kind": "ffn", "units": neurons, "kept": n}]
    s = {"task": task, "constraint": constraint, "seed": seed, "metric": "accuracy", "heads_kept": list(heads_kept),
         "neurons_kept": list(neurons_kept), "sublayers": sublayers}
    if with_method:
        s["method"] = method
    return s


def write_summaries(points_dir: Path, kept: dict = KEPT) -> Path:
    """summary.json files in the accuracy protocol's layout <task>/<method>/c<constraint>/seed<seed>/."""
    for (task, method, c, seed), (h, n) in kept.items():
        d = points_dir / task / method / f"c{c:g}" / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps(fake_summary(task, method, c, seed, h, n)))
    return points_dir


@pytest.fixture
def results(tmp_path):
    return views.load_results(write_accuracy_csv(tmp_path / "accuracy.csv"))


# ---- loading -------------------------------------------------------------------------------------------------
def test_load_results_reads_the_accuracy_protocol_csv_as_fractions(results):
    assert results.attrs["source"] == "accuracy"
    row = results[(results.task == "mrpc") & (results.method == "kprune") & (results.constraint == 0.4)
                  & (results.seed == 1)].iloc[0]
    assert row.dense == pytest.approx(0.86) and row.pruned == pytest.approx(0.82)
    assert row.delta == pytest.approx(-0.04)
    assert results.run_dir.isna().all() and results.latency_speedup.isna().all()
    assert len(results) == sum(len(v) for v in PRUNED.values())


def test_load_results_reads_the_sweep_csv_unchanged(tmp_path):
    df = views.load_results(write_sweep_csv(tmp_path / "results.csv"))
    assert df.attrs["source"] == "sweep"
    acc = views.load_results(write_accuracy_csv(tmp_path / "accuracy.csv"))
    for col in ("dense", "pruned", "delta"):
        assert df[col].to_numpy() == pytest.approx(acc[col].to_numpy())
    assert (df.latency_speedup == 1.5).all()


def test_load_results_refuses_empty_and_foreign_tables(tmp_path):
    (tmp_path / "empty.csv").write_text(",".join(ACCURACY_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        views.load_results(tmp_path / "empty.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a results table"):
        views.load_results(tmp_path / "other.csv")


# ---- mean ± sd -----------------------------------------------------------------------------------------------
def test_mean_over_seeds_mean_sd_and_seed_counts(results):
    mean = views.mean_over_seeds(results).set_index(["task", "method", "constraint"])
    r = mean.loc[("mrpc", "kprune", 0.4)]
    assert r.pruned == pytest.approx(0.82) and r.pruned_std == pytest.approx(0.02) and r.seeds == 3
    r = mean.loc[("mrpc", "kprune-plus", 0.8)]
    assert r.pruned == pytest.approx(0.745) and r.pruned_std == pytest.approx(math.sqrt(0.03 ** 2 / 2)) and r.seeds == 2
    r = mean.loc[("mrpc", "kwon-fisher", 0.8)]
    assert r.pruned_std == pytest.approx(np.std([0.60, 0.61, 0.65], ddof=1))
    assert r.flops_removed == pytest.approx(0.801)


def test_seed_table_shows_mean_sd_and_n(results):
    table = views.seed_table(results)
    assert list(table.index.names) == ["task", "metric", "method"] and list(table.columns) == ["40 %", "80 %"]
    assert table.loc[("MRPC", "accuracy (×100)", "kprune"), "40 %"] == "82.00 ± 2.00 (n=3)"
    assert table.loc[("MRPC", "accuracy (×100)", "kprune-plus"), "80 %"] == "74.50 ± 2.12 (n=2)"
    assert table.loc[("MRPC", "accuracy (×100)", "kwon-fisher"), "40 %"] == "–"
    one = views.seed_table(results[~((results.task == "stsb") & (results.seed == 1))])
    assert one.loc[("STS-B", "Spearman ρ (×100)", "kprune"), "80 %"] == "60.00 (n=1)"


# ---- paired differences --------------------------------------------------------------------------------------
def test_paired_differences_match_seeds_and_drop_unmatched(results):
    paired = views.paired_differences(results, "kprune-plus", "kprune").set_index(["task", "constraint"])
    assert list(paired.index) == [("mrpc", 0.4), ("mrpc", 0.8), ("stsb", 0.8)]
    r = paired.loc[("mrpc", 0.4)]
    assert r["mean"] == pytest.approx(0.01) and r.se == pytest.approx(0.01 / math.sqrt(3)) and r.n == 3
    r = paired.loc[("mrpc", 0.8)]  # seeds 0, 1 only: differences 0.03, 0.04
    assert r["mean"] == pytest.approx(0.035) and r.se == pytest.approx(0.005) and r.n == 2
    r = paired.loc[("stsb", 0.8)]  # seed 1 only
    assert r["mean"] == pytest.approx(0.03) and np.isnan(r.se) and r.n == 1
    # the reverse pair flips the sign, not the standard error
    rev = views.paired_differences(results, "kprune", "kprune-plus").set_index(["task", "constraint"])
    assert rev["mean"].to_numpy() == pytest.approx(-paired["mean"].to_numpy())


def test_paired_differences_without_a_method_or_pairs(results):
    assert views.paired_differences(results, "kprune-gn", "kprune").empty
    no_pairs = results[~((results.method == "kprune-plus") & results.seed.isin([0, 1]))]
    no_pairs = no_pairs[~((no_pairs.method == "kprune") & (no_pairs.seed == 2))]
    assert views.paired_differences(no_pairs, "kprune-plus", "kprune").empty
    with pytest.raises(ValueError, match="two different"):
        views.paired_differences(results, "kprune", "kprune")


def test_paired_summary_is_the_mean_over_high_constraint_cells(results):
    paired = views.paired_differences(results, "kprune-plus", "kprune")
    s = views.paired_summary(paired, min_constraint=0.6)  # cells mrpc 0.8 (0.035) and stsb 0.8 (0.03)
    assert s["mean"] == pytest.approx(0.0325) and s["se"] == pytest.approx(0.0025) and s["n"] == 2
    s = views.paired_summary(paired, min_constraint=0.4)
    assert s["mean"] == pytest.approx((0.01 + 0.035 + 0.03) / 3) and s["n"] == 3
    s = views.paired_summary(paired, min_constraint=0.9)
    assert s["n"] == 0 and np.isnan(s["mean"])


def test_paired_view_table_in_points_with_summary_row(results):
    view = views.paired_view(results, ["kprune-plus", "kprune"], min_constraint=0.6)
    assert isinstance(view, pd.DataFrame)
    col = "kprune-plus − kprune: mean (points)"
    assert view.loc[("MRPC", "0.8"), col] == pytest.approx(3.5)
    assert view.loc[("MRPC", "0.8"), "standard error (points)"] == pytest.approx(0.5)
    assert view.loc[("MRPC", "0.4"), "n"] == 3
    last = view.loc[("all tasks", "≥ 0.6")]
    assert last[col] == pytest.approx(3.25) and last["standard error (points)"] == pytest.approx(0.25)
    assert last["n"] == 2 and last["n counts"] == "(task, constraint) cells"


def test_paired_view_notes_a_missing_method(results):
    note = views.paired_view(results, ["kprune-gn", "kprune"])
    assert isinstance(note, plots.Note) and "skipped" in note and "kprune-gn" in note
    assert note._repr_markdown_() == str(note) and repr(note) == str(note)
    assert "two different" in views.paired_view(results, ["kprune"])


# ---- kept units per layer ------------------------------------------------------------------------------------
def test_point_summaries_from_run_dir_or_points_layout(tmp_path, results):
    points = write_summaries(tmp_path / "points")
    found = views.point_summaries(results, points)
    assert sorted((s["task"], s["method"], s["constraint"], s["seed"]) for s in found) == sorted(KEPT)
    assert views.point_summaries(results, tmp_path / "nowhere") == []
    # the sweep's table: each row's run_dir, no points_dir needed
    sweep = views.load_results(write_sweep_csv(tmp_path / "results.csv", points_dir=points))
    assert len(views.point_summaries(sweep)) == len(KEPT)
    # a summary without `method` (older runs) takes the row's
    d = points / "mrpc" / "kwon-fisher" / "c0.8" / "seed2"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(fake_summary("mrpc", "x", 0.8, 2, [1, 1], [1, 1], with_method=False)))
    found = views.point_summaries(results, points)
    assert [s["method"] for s in found if s["seed"] == 2] == ["kwon-fisher"]


def test_kept_per_layer_fractions(tmp_path, results):
    kept = views.kept_per_layer(views.point_summaries(results, write_summaries(tmp_path / "points")))
    assert len(kept) == len(KEPT) * 2 * 2  # points × kinds × layers
    r = kept[(kept.method == "kprune-plus") & (kept.kind == "neurons")].sort_values("layer")
    assert r.kept.tolist() == [8, 0] and r.total.tolist() == [8, 8] and r.fraction.tolist() == [1.0, 0.0]
    no_totals = views.kept_per_layer([{"task": "mrpc", "method": "kprune", "constraint": 0.5, "seed": 0,
                                          "heads_kept": [3], "neurons_kept": [5]}])
    assert no_totals.kept.tolist() == [3, 5] and no_totals.fraction.isna().all()
    assert views.kept_per_layer([]).empty


def test_mean_kept_and_matrix_at_the_largest_or_chosen_constraint(tmp_path, results):
    kept = views.kept_per_layer(views.point_summaries(results, write_summaries(tmp_path / "points")))
    mean = views.mean_kept(kept)  # default: each task's largest constraint (0.8 for both)
    assert set(mean.constraint) == {0.8}
    heads = views.kept_matrix(mean, "mrpc", "heads")
    assert heads.index.tolist() == ["kprune", "kprune-plus"] and heads.columns.tolist() == [0, 1]
    assert heads.to_numpy() == pytest.approx(np.array([[0.75, 1.0], [0.25, 0.75]]))
    neurons = views.kept_matrix(mean, "mrpc", "neurons")
    assert neurons.to_numpy() == pytest.approx(np.array([[0.375, 0.875], [1.0, 0.0]]))
    assert views.kept_matrix(mean, "stsb", "heads").to_numpy() == pytest.approx(np.array([[0.0, 1.0]]))
    r = mean[(mean.task == "mrpc") & (mean.method == "kprune") & (mean.kind == "heads") & (mean.layer == 0)].iloc[0]
    assert r.seeds == 2 and r.kept == pytest.approx(3.0) and r.fraction_sd == pytest.approx(math.sqrt(0.125))
    chosen = views.mean_kept(kept, constraint=0.4)
    assert set(chosen.task) == {"mrpc"} and set(chosen.method) == {"kprune"}
    assert views.kept_matrix(chosen, "mrpc", "neurons").to_numpy() == pytest.approx(np.ones((1, 2)))
    assert views.mean_kept(kept, constraint=0.5).empty
    assert views.kept_fractions(results, tmp_path / "points", 0.8).equals(mean)
    assert views.kept_fractions(results, tmp_path / "nowhere").empty


# ---- figures -------------------------------------------------------------------------------------------------
def test_metric_vs_flops_draws_mean_sd_with_seed_counts(results):
    fig = plots.metric_vs_flops(views.mean_over_seeds(results))
    ax = {a.get_title(): a for a in fig.axes}["MRPC"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "kprune (n=2–3)" in labels and "kprune-plus (n=2–3)" in labels and "kwon-fisher (n=3)" in labels
    assert "mean ± sd over n seeds" in fig.legends[0].get_title().get_text()
    line = next(x for x in ax.get_lines() if x.get_label() == "kprune")
    assert line.get_ydata() == pytest.approx([82.0, 72.0])  # ×100, sorted by FLOPs removed
    matplotlib.pyplot.close(fig)


def test_kept_heatmap_figure_values_and_note(tmp_path, results):
    mean = views.kept_fractions(results, write_summaries(tmp_path / "points"))
    fig = plots.kept_heatmap(mean)
    assert isinstance(fig, matplotlib.figure.Figure)
    images = [a for a in fig.axes if a.get_images()]
    assert len(images) == 4  # 2 tasks × (heads, neurons)
    first = images[0]
    assert np.asarray(first.get_images()[0].get_array()).tolist() == [[75.0, 100.0], [25.0, 75.0]]  # % kept
    assert [t.get_text() for t in first.get_yticklabels()] == ["kprune (n=2)", "kprune-plus (n=1)"]
    assert "80 % FLOPs removed" in first.get_title()
    assert plots.save(fig, tmp_path / "figs" / "kept.png", dpi=50) is None
    assert (tmp_path / "figs" / "kept.png").stat().st_size > 1000
    matplotlib.pyplot.close(fig)
    note = plots.kept_heatmap(views.kept_fractions(results, tmp_path / "nowhere"))
    assert isinstance(note, plots.Note) and "No per-layer heatmap" in note
    assert plots.save(note, tmp_path / "figs" / "none.png") is note and not (tmp_path / "figs" / "none.png").exists()


# ---- relative run_dir, fingerprint, provenance ---------------------------------------------------------------
def test_relative_run_dir_is_read_against_the_csv_folder(tmp_path, monkeypatch):
    """The sweep writes run_dir relative to results.csv's folder: the summaries are found from any working folder;
    absolute run_dirs keep working."""
    results_dir = tmp_path / "sweep" / "results"
    points = write_summaries(tmp_path / "sweep" / "points")
    path = write_sweep_csv(results_dir / "results.csv", points_dir=points)
    df = pd.read_csv(path)
    df["run_dir"] = ["../points/" + str(Path(d).relative_to(points)) for d in df.run_dir]
    df.to_csv(path, index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = views.load_results(path)
    assert all(Path(d).is_absolute() for d in loaded.run_dir)
    assert len(views.point_summaries(loaded)) == len(KEPT)
    monkeypatch.chdir(tmp_path)
    assert len(views.point_summaries(views.load_results(write_sweep_csv(tmp_path / "abs.csv", points)))) == len(KEPT)


def test_csv_fingerprint_is_the_sha256_of_the_bytes(tmp_path):
    path = write_accuracy_csv(tmp_path / "a.csv")
    assert views.csv_fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes() + b"\n")
    assert views.csv_fingerprint(path) != hashlib.sha256(path.read_bytes()[:-1]).hexdigest()


def test_report_header_says_what_produced_the_results(tmp_path):
    path = write_sweep_csv(tmp_path / "results" / "results.csv")
    old = views.report_header(views.load_results(path), path)  # an older csv: no provenance columns
    assert f"results.csv sha256: {views.csv_fingerprint(path)}" in old
    assert f"{len(accuracy_rows())} points" in old and "sample tokens: 5000" in old and "seeds: 0, 1, 2" in old
    for column in views.PROVENANCE_COLUMNS:
        assert f"  {column}: not recorded" in old
    assert "grid: no grid file given" in old
    grid = tmp_path / "results" / "grid.yaml"
    grid.write_text("tasks:\n  mrpc: {model: m}\nseeds: [0, 1, 2]\n")
    digest = hashlib.sha256(grid.read_bytes()).hexdigest()
    df = pd.read_csv(path).assign(commit="abc1234", dirty=False, torch="2.13.0", threads=2, grid=str(grid),
                                  grid_sha256=digest, model="m", date=[f"2026-12-0{1 + i % 5}" for i in range(18)],
                                  wall_seconds=[10.0 + i for i in range(18)])
    df.to_csv(path, index=False)
    text = views.report_header(views.load_results(path), path, grid)
    assert "  commit: abc1234" in text and "  dirty: False" in text and "  torch: 2.13.0" in text
    assert "  threads: 2" in text and "  python: not recorded" in text and "models: m" in text
    assert "  date: 5 values, 2026-12-01 … 2026-12-05" in text and "  wall_seconds: 18 values, 10 to 27" in text
    assert f"results.csv sha256: {views.csv_fingerprint(path)}" in text
    assert f"sha256 {digest}; equals the csv's grid_sha256" in text and "seeds: [0, 1, 2]" in text
    assert "DIFFERS" in views.report_header(views.load_results(path).assign(grid_sha256="0" * 64), path, grid)


# ---- notebook 05 as the sweep runs it --------------------------------------------------------------------------
def test_results_notebook_reads_only_its_own_sweep(tmp_path):
    """The sweep's parameters (results_csv, figures_dir, grid_file, latency_results_dir None): the header names the
    csv's sha256 and the grid, nothing else is read (no points_dir, no latency records by default)."""
    import jupytext

    from test_notebooks import RESULTS_NOTEBOOK, _text, execute, literal_parameters, parameters_cell

    defaults = literal_parameters(parameters_cell(RESULTS_NOTEBOOK)[1][0].source)
    assert defaults["latency_results_dir"] is None and defaults["points_dir"] is None
    assert defaults["grid_file"] is None and "ratio_of_dense" not in defaults and "within_points" not in defaults
    assert "ratio_of_dense" not in jupytext.read(RESULTS_NOTEBOOK).cells[2].source
    path = write_sweep_csv(tmp_path / "results" / "results.csv", points_dir=write_summaries(tmp_path / "points"))
    grid = tmp_path / "results" / "grid.yaml"
    grid.write_text("methods: [kprune, kprune-plus, kwon-fisher]\n")
    nb = execute(RESULTS_NOTEBOOK, tmp_path / "05.ipynb",
                 {"results_csv": str(path), "figures_dir": str(tmp_path / "results" / "figures"),
                  "grid_file": str(grid), "latency_results_dir": None})
    text = _text(nb)
    assert f"results.csv sha256: {views.csv_fingerprint(path)}" in text and "methods: [kprune, kprune-plus" in text
    assert "commit: not recorded" in text
    md = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert md.count("this sweep has no latency-budget record") == 1
    assert not (tmp_path / "results" / "figures" / "accuracy_vs_latency.png").exists()
    assert (tmp_path / "results" / "figures" / "kept_per_layer.png").exists()  # from the rows' run_dir


def test_collapsed_points_are_flagged_in_the_seed_table(tmp_path):
    """A cell where k of n seeds' pruned models predict one class for the whole dev set says 'collapsed k/n'."""
    df = pd.read_csv(write_sweep_csv(tmp_path / "results.csv"))
    df["collapsed"] = [bool(r.task == "mrpc" and r.method == "kprune" and r.constraint == 0.8 and r.seed == 0)
                       for r in df.itertuples()]
    df.to_csv(tmp_path / "results.csv", index=False)
    table = views.seed_table(views.load_results(tmp_path / "results.csv"))
    cells = table.to_numpy().ravel().tolist()
    flagged = [c for c in cells if "collapsed" in c]
    n = int(((df.method == "kprune") & (df.constraint == 0.8) & (df.task == "mrpc")).sum())
    assert flagged == [f"{flagged[0].split(' collapsed')[0]} collapsed 1/{n}"] and len(flagged) == 1
    df["collapsed"] = ""  # not recorded (points made before the flag): nothing flagged
    df.to_csv(tmp_path / "results.csv", index=False)
    assert not any("collapsed" in c for c in views.seed_table(views.load_results(tmp_path / "results.csv"))
                   .to_numpy().ravel().tolist())
