"""The sweep report (results/report.html) in a real headless browser: it loads, shows its figures as <img>,
and its screenshot is not blank."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from kprune_lib import PruneConfig, api
from kprune_lib.workbook import steps as workbook
from kprune_lib._atomic import write_json
from kprune_lib.workbook.points import point_record
from kprune_lib.workbook.sweep import aggregate, load_grid, render_report
from test_notebooks import make_tiny_checkpoint, make_tiny_glue, needs_fixtures

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed and could not be installed here "
                             "(.ci/run installs it with `apt-get install -y chromium`)")


def chromium(profile, *args, timeout=120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real report: two methods pruned on a tiny model, each point's folder as a sweep run leaves it (point.json,
    summary.json), aggregated and reported as the sweep does (notebook 05 executed)."""
    base = tmp_path_factory.mktemp("report")
    model, glue = make_tiny_checkpoint(base / "ckpt"), make_tiny_glue(base / "glue")
    grid_path = base / "grid.yaml"
    grid_path.write_text(yaml.safe_dump({"tasks": {"mrpc": {"model": str(model)}}, "data_dir": str(glue),
                                         "constraints": [0.4, 0.7], "methods": ["kprune", "kwon-fisher"],
                                         "num_tokens": 600, "device": "cpu", "output_dir": str(base / "runs")}))
    grid = load_grid(grid_path)
    for p in grid.points:
        run_dir = base / "runs" / p.relative_dir
        summary = api.prune(str(model), "mrpc", str(run_dir / "pruned"), data_dir=str(glue), device="cpu",
                            progress=False, config=PruneConfig(num_tokens=600, constraint=p.constraint,
                                                               method=p.method))
        summary.update(workbook.latency(str(model), str(run_dir / "pruned" / "model"), "mrpc", data_dir=str(glue),
                                        device="cpu", repeats=1))
        write_json(run_dir / "point.json", point_record(p))
        workbook.write_summary(run_dir, summary)
    aggregate(grid.points, base / "runs", base / "results" / "results.csv")
    return render_report(base / "results", grid_path=grid_path)


@needs_fixtures
@needs_chromium
def test_report_renders_with_figures_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    dom = chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<title>" in html and "05 · Results" in html
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 2, "the report should show the metric-vs-FLOPs and the pruning-time figures"
    assert all(len(b) > 5000 for b in images)
    assert "kwon-fisher" in html and "kprune" in html  # the tables list both methods
    assert "Traceback" not in html and "load_results(" not in html  # no errors, inputs hidden
    assert "results.csv sha256: " in html and "provenance:" in html  # says what produced it
    assert "this sweep has no latency-budget record" in html  # reads only its own sweep

    shot = tmp_path / "shot.png"
    res = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 10, "screenshot is blank"
    assert (pixels < 128).mean() > 0.005  # there is dark ink (text, axes, lines), not just a white page
    # figures are drawn, not broken-image icons: the coloured plot area has many distinct grey levels
    assert len(np.unique(pixels.astype(int))) > 50
