"""The committed results are what their grid produced: results/results.csv holds exactly the finished points of
papermill_runs/grid_minilm.yaml (their point.json identities equal the grid's, planned from today's files), and
results/report.html was built from exactly that csv (it names the csv's SHA-256) and that grid."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, SHARED
from kprune_lib._provenance import file_sha256
from kprune_lib.workbook.identity import identity_key
from kprune_lib.workbook.sweep import load_grid, plan

RESULTS = ROOT / "results"
GRID = ROOT / "papermill_runs" / "grid_minilm.yaml"


def test_the_committed_report_names_the_committed_csv_and_shows_its_grid():
    csv, html = RESULTS / "results.csv", (RESULTS / "report.html").read_text()
    assert f"results.csv sha256: {file_sha256(csv)}" in html
    assert (RESULTS / "grid.yaml").read_text() == GRID.read_text()


def test_every_committed_row_is_a_finished_point_of_the_grid_with_its_recorded_identity():
    rows = pd.read_csv(RESULTS / "results.csv")
    assert len(rows) > 0 and not rows.duplicated(["task", "method", "constraint", "seed"]).any()
    for row in rows.itertuples():
        run_dir = (RESULTS / row.run_dir).resolve()
        assert run_dir.is_relative_to(ROOT / "papermill_runs") and not Path(row.run_dir).is_absolute()
        record = json.loads((run_dir / "point.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        assert record["key"] == row.identity == identity_key(record["identity"])
        assert summary["pruned"][summary["metric"]] == pytest.approx(row.pruned)
        assert isinstance(row.commit, str) and len(row.commit) == 40 and row.grid_sha256 == record["grid_sha256"]


@pytest.mark.skipif(not SHARED.exists(), reason="the grid's models and data (../shared) are not here")
def test_the_committed_points_are_reused_by_the_grid_as_it_is_today():
    grid = load_grid(GRID, base=ROOT)
    planned = {p.label(): (p, why) for p, why in plan(grid, ROOT / "papermill_runs").items()}
    rows = pd.read_csv(RESULTS / "results.csv")
    for row in rows.itertuples():
        point, why = planned[f"{row.task}/{row.method}/c{row.constraint:g}/seed{row.seed}"]
        assert why is None, (point.label(), why)
