"""Where sweep points run (issue 15): local workers one per GPU, SLURM jobs through submitit on a real one-node
cluster (tests/slurm_cluster.py), interrupts (Ctrl-C, SIGTERM), and one-line errors before anything is submitted.

Most tests run a stand-in for notebook 04 (FAKE_NOTEBOOK: writes a summary.json, or fails, or sleeps) so that they
need no model and take seconds; test_slurm_tiny_grid_matches_local runs the real notebook on the tiny grid."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import GLUE_DIR, MODELS_DIR, ROOT, needs_shared
from kprune_lib.workbook import executors, slurm
from kprune_lib.cli import main as cli_main
from kprune_lib.workbook.executors import assign_devices, default_workers, visible_gpus, worker_env
from kprune_lib.workbook.slurm import SlurmOptions, slurm_options
from kprune_lib.workbook.sweep import GridError, load_grid, run_sweep
from slurm_cluster import ClusterUnavailable, slurm_cluster
from test_notebooks import make_tiny_checkpoint, make_tiny_glue, needs_fixtures

FAKE_NOTEBOOK = '''\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
model = ""
task = "mrpc"
data_dir = None
output_dir = ""
method = "kprune"
constraint = 0.5
num_tokens = 100
seed = 0
device = "auto"
sleep_s = 0.0  # stay this long in the point (to be interrupted)
fail = False  # raise instead of writing summary.json

# %%
import json, os, time
from pathlib import Path

out = Path(output_dir)
(out / "started").write_text(str(os.getpid()))
time.sleep(sleep_s)
if fail:
    raise RuntimeError("fake point failed on purpose")
summary = {"task": task, "method": method, "constraint": constraint, "seed": seed, "num_tokens": num_tokens,
           "metric": "accuracy", "dense": {"accuracy": 0.8}, "pruned": {"accuracy": 0.8 - constraint / 10 + seed / 100},
           "flops_removed": constraint, "device": device, "model": model,
           "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "SLURM_JOB_ID")}}
(out / "summary.json").write_text(json.dumps(summary))
'''
# run the real CLI (signals, exit codes) with the stand-in notebook
CLI_WITH_FAKE_NOTEBOOK = """\
import functools, sys
from pathlib import Path
from kprune_lib import cli
from kprune_lib.workbook import sweep
sweep.run_sweep = functools.partial(sweep.run_sweep, notebooks_dir=Path(sys.argv[1]))
sys.exit(cli.main(sys.argv[2:]))
"""
INTERRUPTED = "kprune: interrupted; nothing written"
TERMINATED = "kprune: terminated; nothing written"
# Waits in this file are for events (a file appears, a process exits); HANG_S only turns a hang into a failure. It
# is not a speed requirement: Ctrl-C stops a prune, a local sweep and a SLURM sweep in 0.8-1.1 s here even with
# `stress-ng --cpu 4` and a pruning run beside them (2 cores). What made these tests time out was not load but a
# suite started in the background (SIGINT ignored, inherited by the children): see `as_from_a_terminal`.
HANG_S = 600
DETERMINISTIC = ["task", "method", "constraint", "seed", "num_tokens", "metric", "dense", "pruned", "flops_removed",
                 "flops_dense", "flops_pruned", "params_dense", "params_pruned", "sample_examples", "seq_len"]


@pytest.fixture
def fake_nb(tmp_path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    (d / "04_prune_and_evaluate.py").write_text(FAKE_NOTEBOOK)
    return d


def write_grid(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def fake_grid(tmp_path: Path, name: str = "grid.yaml", rte: dict | None = None, **extra) -> Path:
    """Two points at 0.5: mrpc finishes; rte runs with the `rte` parameters (e.g. fail or sleep)."""
    return write_grid(tmp_path / name, tasks={"mrpc": {"model": "m"}, "rte": {"model": "m", "parameters": rte or {}}},
                      constraints=[0.5], output_dir=str(tmp_path / "runs"),
                      results_dir=str(tmp_path / "results"), **extra)


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def cluster():
    try:
        with slurm_cluster() as c:
            yield c
    except ClusterUnavailable as e:
        pytest.skip(f"no SLURM cluster for the executor tests: {e}")


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", cluster["SLURM_CONF"])
    monkeypatch.setattr(slurm, "SLURM_POLL_S", 1.0)
    return cluster


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def same_results(a: Path, b: Path) -> None:
    left, right = pd.read_csv(a), pd.read_csv(b)
    assert len(left) == len(right) > 0
    cols = [c for c in DETERMINISTIC if c in left.columns]
    pd.testing.assert_frame_equal(left[cols].reset_index(drop=True), right[cols].reset_index(drop=True))


# ---- pure logic -----------------------------------------------------------------------------------------------
def test_one_worker_per_gpu():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]  # CUDA stops at an invalid id
    assert visible_gpus({}, count=4) == ["0", "1", "2", "3"]
    assert visible_gpus({}, count=0) == []
    assert default_workers([]) == 1 and default_workers(["0", "1", "2"]) == 3
    assert assign_devices(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert assign_devices(2, ["4", "6", "7"]) == ["4", "6"]
    assert assign_devices(3, ["5", "7"]) == ["5", "7", "5"]  # more workers than GPUs: they share, round robin
    assert assign_devices(2, []) == [None, None]
    env = worker_env(3, "1", {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert worker_env(1, None, {"CUDA_VISIBLE_DEVICES": "3"})["CUDA_VISIBLE_DEVICES"] == "3"  # CPU: left alone


def test_slurm_options_from_grid_and_cli():
    assert slurm_options() == SlurmOptions()
    opts = slurm_options({"partition": "gpu", "gpus": 1, "mem_gb": 8}, partition="big", time_min=30, gpus=None)
    assert opts == SlurmOptions(partition="big", gpus=1, mem_gb=8, time_min=30)  # CLI over grid; None: not given
    params = slurm._submitted_parameters(opts)
    assert params["partition"] == "big" and params["gpus_per_node"] == 1 and params["mem"] == "8192M"
    assert params["time"] == 30 and params["cpus_per_task"] == 4 and params["array_parallelism"] == 32
    assert "gpus_per_node" not in slurm._submitted_parameters(SlurmOptions(mem_gb=0))
    assert "mem" not in slurm._submitted_parameters(SlurmOptions(mem_gb=0))
    for bad, message in (({"partitions": "x"}, "unknown slurm key"), ({"gpus": -1}, "gpus must be"),
                         ({"time_min": 1.5}, "time_min must be"), ({"partition": ""}, "partition must be"),
                         ({"mem_gb": "lots"}, "mem_gb must be")):
        with pytest.raises(executors.ExecutorError, match=message):
            slurm_options(bad)


def test_grid_executor_keys(tmp_path):
    grid = load_grid(fake_grid(tmp_path, executor="slurm", slurm={"partition": "gpu", "gpus": 1}))
    assert grid.executor == "slurm" and grid.slurm == {"partition": "gpu", "gpus": 1}
    assert load_grid(fake_grid(tmp_path)).executor == "local"
    with pytest.raises(GridError, match="unknown executor 'k8s'"):
        load_grid(fake_grid(tmp_path, executor="k8s"))
    with pytest.raises(GridError, match=r"unknown slurm key\(s\) \['gpu'\]"):
        load_grid(fake_grid(tmp_path, executor="slurm", slurm={"gpu": 1}))
    # the shipped grid plus `executor: slurm` and a partition is a valid grid
    spec = yaml.safe_load((ROOT / "papermill_runs" / "grid_minilm.yaml").read_text())
    grid = load_grid(write_grid(tmp_path / "cluster.yaml", **spec, executor="slurm", slurm={"partition": "gpu"}),
                     base=ROOT)
    assert grid.executor == "slurm" and len(grid.points) == 108


# ---- one clear line before anything is submitted -------------------------------------------------------------
def one_line_error(capsys, argv, logged_before: bool = False) -> str:
    """The command fails with exit status 2 and one `kprune: error:` line (the only line, unless the sweep had
    started logging)."""
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("kprune: error: ") and sum(x.startswith("kprune:") for x in err) == 1, err
    assert logged_before or len(err) == 1, err
    return err[-1]


def test_slurm_without_submitit(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    line = one_line_error(capsys, ["sweep", str(fake_grid(tmp_path)), "--executor", "slurm"])
    assert "needs submitit" in line and "pip install submitit" in line
    assert not (tmp_path / "runs").exists()


def test_slurm_without_slurm_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, no sbatch
    line = one_line_error(capsys, ["sweep", str(fake_grid(tmp_path, executor="slurm"))])
    assert "no SLURM commands here" in line and "--executor local" in line
    assert not (tmp_path / "runs").exists()


def test_slurm_controller_unreachable(tmp_path, capsys, monkeypatch):
    if not slurm.shutil.which("sinfo"):
        pytest.skip("sinfo not installed (.ci/run installs slurm-wlm)")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=gone\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\nMessageTimeout=1\n"
                    f"AuthType=auth/munge\nAuthInfo=socket={tmp_path / 'no.socket'}\nNodeName=n1 CPUs=1\n"
                    "PartitionName=p Nodes=n1\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    line = one_line_error(capsys, ["sweep", str(fake_grid(tmp_path)), "--executor", "slurm", "--partition", "p"])
    assert "SLURM controller does not answer" in line and "Unable to contact slurm controller" in line
    assert not (tmp_path / "runs").exists()


def test_slurm_unknown_partition(tmp_path, capsys, on_cluster):
    jobs = slurm.slurm_states()
    line = one_line_error(capsys, ["sweep", str(fake_grid(tmp_path)), "--executor", "slurm", "--partition", "gpuz"])
    assert "unknown SLURM partition 'gpuz'; this cluster has debug" in line
    # a request the cluster cannot meet is refused by sbatch: one line, and submitit's files are removed
    line = one_line_error(capsys, ["sweep", str(fake_grid(tmp_path)), "--executor", "slurm", "--time-min", "120",
                                   "--cpus-per-task", "1", "--mem-gb", "1"], logged_before=True)
    assert "sbatch refused the sweep's jobs" in line and "time limit" in line  # the partition's MaxTime is 60
    assert not (tmp_path / "runs").exists()
    assert slurm.slurm_states() == jobs  # nothing was submitted


# ---- SLURM on a real one-node cluster ------------------------------------------------------------------------
def test_slurm_sweep_records_failures_resumes_and_matches_local(tmp_path, fake_nb, on_cluster, monkeypatch):
    grid = fake_grid(tmp_path, rte={"fail": True}, executor="slurm",
                     slurm={"partition": on_cluster["partition"], "cpus_per_task": 1, "mem_gb": 0.5, "time_min": 5})
    runs, results = tmp_path / "runs", tmp_path / "results"
    outcome = run_sweep(grid, notebooks_dir=fake_nb, report=False, log=quiet)
    assert outcome == {"ran": ["mrpc/kprune/c0.5/seed0"], "failed": ["rte/kprune/c0.5/seed0"], "skipped": []}
    ran = [runs / "mrpc" / "kprune" / "c0.5" / "seed0"]
    jobs = {summary(d)["env"]["SLURM_JOB_ID"] for d in ran}
    assert None not in jobs  # the point ran in a SLURM job
    assert {summary(d)["env"]["OMP_NUM_THREADS"] for d in ran} == {"1"}  # threads = cpus_per_task
    assert all((d / "04_prune_and_evaluate.ipynb").exists() and (d / "report.html").exists() for d in ran)
    failed = runs / "rte" / "kprune" / "c0.5" / "seed0"
    assert "fake point failed on purpose" in (failed / "error.txt").read_text()
    assert len(pd.read_csv(results / "results.csv")) == 1 and len(pd.read_csv(results / "failures.csv")) == 1

    # re-run after the failure: only the failed point is resubmitted
    spec = yaml.safe_load(grid.read_text())
    spec["tasks"]["rte"]["parameters"] = {}
    write_grid(grid, **spec)
    stamps = {d: (d / "summary.json").stat().st_mtime_ns for d in ran}
    outcome = run_sweep(grid, notebooks_dir=fake_nb, report=False, log=quiet)
    assert outcome == {"ran": ["rte/kprune/c0.5/seed0"], "failed": [], "skipped": ["mrpc/kprune/c0.5/seed0"]}
    assert {d: (d / "summary.json").stat().st_mtime_ns for d in ran} == stamps
    assert summary(failed)["env"]["SLURM_JOB_ID"] not in jobs and not (failed / "error.txt").exists()
    job_dirs = sorted((runs / "slurm-logs").iterdir())
    # everything finished: a third run submits nothing (and needs no cluster)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-such.conf"))
    outcome = run_sweep(grid, notebooks_dir=fake_nb, report=False, log=quiet)
    assert outcome["ran"] == [] and len(outcome["skipped"]) == 2
    assert sorted((runs / "slurm-logs").iterdir()) == job_dirs

    # the same grid through the local executor, on two (pretend) GPUs: one worker per GPU, the same results.csv
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    local = run_sweep(grid, output_dir=tmp_path / "local", results_dir=tmp_path / "local-results",
                      notebooks_dir=fake_nb, report=False, log=quiet, executor="local")
    assert len(local["ran"]) == 2
    devices = [summary(d)["env"]["CUDA_VISIBLE_DEVICES"] for d in (tmp_path / "local").glob("*/*/c*/seed*")]
    assert sorted(set(devices)) == ["0", "1"]  # 2 workers by default, each on its own GPU
    same_results(results / "results.csv", tmp_path / "local-results" / "results.csv")


def test_ctrl_c_cancels_the_slurm_jobs(tmp_path, fake_nb, on_cluster):
    grid = fake_grid(tmp_path, rte={"sleep_s": 300}, executor="slurm",
                     slurm={"partition": on_cluster["partition"], "cpus_per_task": 1, "mem_gb": 0.5, "time_min": 5})
    runs = tmp_path / "runs"
    slow = runs / "rte" / "kprune" / "c0.5" / "seed0"
    proc = start_sweep(fake_nb, grid, "--no-report")
    wait_for([runs / "mrpc" / "kprune" / "c0.5" / "seed0" / "summary.json", slow / "started"], proc)
    kernel = int((slow / "started").read_text())
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err, err
    assert gone(kernel), "the cancelled job's kernel is still running"
    states = slurm.slurm_states()
    assert states and not set(states.values()) & slurm.SLURM_ACTIVE, states  # the sleeping job was cancelled
    assert "CANCELLED" in states.values() and not (tmp_path / "results").exists()
    assert (runs / "mrpc" / "kprune" / "c0.5" / "seed0" / "summary.json").exists()


@needs_fixtures
def test_slurm_tiny_grid_matches_local(tmp_path, on_cluster):
    """The 2-point tiny grid (real notebook 04 on a random 2-layer BERT) on SLURM gives the local results.csv."""
    model = make_tiny_checkpoint(tmp_path / "ckpt")
    glue = make_tiny_glue(tmp_path / "glue")
    grid = write_grid(tmp_path / "grid.yaml", tasks={"mrpc": {"model": str(model)}}, data_dir=str(glue),
                      num_tokens=800, constraints=[0.5], methods=["kprune", "kwon-fisher"], seeds=[0], device="cpu",
                      parameters={"latency_repeats": 1}, output_dir=str(tmp_path / "runs"),
                      results_dir=str(tmp_path / "results"), executor="slurm",
                      slurm={"partition": on_cluster["partition"], "cpus_per_task": 1, "mem_gb": 1})
    assert cli_main(["sweep", str(grid)]) == 0
    assert cli_main(["sweep", str(grid), "--no-report"]) == 0  # resume: nothing left to submit
    assert len(list((tmp_path / "runs" / "slurm-logs").glob("*_*/"))) == 2
    report = (tmp_path / "results" / "report.html").read_text()
    assert report.count("<img") >= 2
    for method in ("kprune", "kwon-fisher"):
        d = tmp_path / "runs" / "mrpc" / method / "c0.5" / "seed0"
        assert summary(d)["method"] == method and (d / "pruned" / "model" / "model.safetensors").exists()
    assert cli_main(["sweep", str(grid), "--executor", "local", "--workers", "2", "--no-report",
                     "--output-dir", str(tmp_path / "local"), "--results-dir", str(tmp_path / "local-results")]) == 0
    same_results(tmp_path / "results" / "results.csv", tmp_path / "local-results" / "results.csv")


# ---- interrupts ----------------------------------------------------------------------------------------------
def as_from_a_terminal() -> None:
    """A command typed in a terminal starts with SIGINT at its default (Python turns it into KeyboardInterrupt). A
    process started in the background by a non-interactive shell (`make test &`, `nohup … &`, some CI runners)
    inherits SIGINT *ignored*, and so would every child the tests start: Ctrl-C would then do nothing at all, by
    design of the shell. The children here are started as a terminal starts them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sweep(fake_nb: Path, *argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI_WITH_FAKE_NOTEBOOK, str(fake_nb), "sweep", *map(str, argv)],
                            preexec_fn=as_from_a_terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=ROOT)


def wait_for(paths: list[Path], proc: subprocess.Popen, timeout_s: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{paths} never appeared"
        time.sleep(0.2)


def gone(pid: int, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_stops_a_sweep_with_one_line(tmp_path, fake_nb):
    grid = fake_grid(tmp_path, rte={"sleep_s": 300})
    point = tmp_path / "runs" / "rte" / "kprune" / "c0.5" / "seed0"
    proc = start_sweep(fake_nb, grid, "--workers", "1", "--no-report")
    wait_for([point / "started"], proc)  # the sleeping point, since rte comes after mrpc with one worker
    kernel = int((point / "started").read_text())
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground process group
    _, err = proc.communicate(timeout=HANG_S)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and lines[-1] == INTERRUPTED and err.count(INTERRUPTED) == 1, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not point.exists()  # the interrupted point left nothing
    assert (tmp_path / "runs" / "mrpc" / "kprune" / "c0.5" / "seed0" / "summary.json").exists()
    assert not (tmp_path / "results").exists()  # no partial results.csv
    assert gone(kernel), "the interrupted point's kernel is still running"


def test_sigterm_keeps_finished_points_and_the_sweep_resumes(tmp_path, fake_nb):
    grid = fake_grid(tmp_path, rte={"sleep_s": 300})
    runs = tmp_path / "runs"
    slow = runs / "rte" / "kprune" / "c0.5" / "seed0"
    fast = [runs / "mrpc" / "kprune" / "c0.5" / "seed0" / "summary.json"]
    proc = start_sweep(fake_nb, grid, "--workers", "2", "--no-report")
    wait_for([*fast, slow / "started"], proc)
    kernel = int((slow / "started").read_text())
    proc.send_signal(signal.SIGTERM)  # what SLURM sends on pre-emption
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == TERMINATED and "Traceback" not in err, err
    assert all(f.exists() for f in fast) and not slow.exists() and not (tmp_path / "results").exists()
    assert gone(kernel)
    spec = yaml.safe_load(grid.read_text())
    spec["tasks"]["rte"]["parameters"] = {}
    write_grid(grid, **spec)
    outcome = run_sweep(grid, notebooks_dir=fake_nb, report=False, log=quiet, workers=1)
    assert outcome == {"ran": ["rte/kprune/c0.5/seed0"], "failed": [], "skipped": ["mrpc/kprune/c0.5/seed0"]}
    assert len(pd.read_csv(tmp_path / "results" / "results.csv")) == 2


@needs_shared(MODELS_DIR / "minilm-l6-mrpc")
@needs_shared(GLUE_DIR / "MRPC")
def test_ctrl_c_during_prune_prints_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "pruned"
    proc = subprocess.Popen([sys.executable, "-m", "kprune_lib.cli", "prune", "--model",
                             str(MODELS_DIR / "minilm-l6-mrpc"), "--task", "mrpc", "--data-dir", str(GLUE_DIR),
                             "--num-tokens", "20000", "--device", "cpu", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=as_from_a_terminal)
    seen = b""
    while b"%|" not in seen:  # a progress bar: pruning is under way
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, (proc.wait(), seen.decode(errors="replace"))
        seen += chunk
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=HANG_S)
    err = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130, err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == INTERRUPTED and err.count(INTERRUPTED) == 1
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no output folder, no temporary folder
