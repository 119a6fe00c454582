"""Where a sweep's points run: local worker processes (one per GPU on a multi-GPU machine) here, or SLURM jobs
(submitit, `slurm`).

Both executors take the unfinished points of a grid and leave every point's folder as `sweep.run_point` leaves it
(summary.json when it finished, error.txt when it failed), so the sweep aggregates the same way whichever ran them.
Each yields (point, "ran" | "failed") as points end.

Interrupts (Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the CLI): local workers are stopped, their kernels
killed and the folders of the points they were running removed, so only finished points remain; SLURM jobs still
queued or running are cancelled (scancel). Either way a re-run resumes from the finished points.
"""
from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from kprune_lib.workbook.points import ERROR, SUMMARY, Point, run_point

EXECUTORS = ("local", "slurm")
# A point runner (local worker or SLURM job) is a fresh Python that imports this module from the same checkout (the
# package imports nothing heavy on import); the kernels it starts import the library as usual.
_BOOTSTRAP = """import sys
sys.path.insert(0, sys.argv[1])
from kprune_lib.workbook.executors import _runner_main
_runner_main(sys.argv[2:])
"""
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def runner_command(*args: str) -> list[str]:
    return [sys.executable, "-c", _BOOTSTRAP, PACKAGE_PARENT, *args]


STOP_GRACE_S = 20  # seconds a stopped local worker gets to exit before it is killed
class ExecutorError(ValueError):
    """Bad executor settings or an unusable cluster; raised before any point is submitted (one line)."""


def check_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; choose from {list(EXECUTORS)}")
    return name


# ---- local: worker processes, one GPU each -------------------------------------------------------------------
def visible_gpus(environ=None, count: int | None = None) -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set (up to an invalid entry, as CUDA reads it),
    else 0 … count-1 (count: torch.cuda.device_count(), 0 without CUDA)."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = []
        for d in (x.strip() for x in listed.split(",")):
            if not d or d.startswith("-"):
                break
            ids.append(d)
        return ids
    if count is None:
        try:
            import torch

            count = torch.cuda.device_count()
        except Exception:  # no torch / broken driver: CPU
            count = 0
    return [str(i) for i in range(count)]


def default_workers(gpus: list[str]) -> int:
    """One worker per GPU when there are GPUs, else one."""
    return max(1, len(gpus))


def assign_devices(workers: int, gpus: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each worker: worker k gets gpus[k mod #gpus] (several workers share a GPU only when
    there are more workers than GPUs); None everywhere without GPUs (the variable is left as it is)."""
    if workers < 1:
        raise ExecutorError(f"workers must be >= 1, got {workers}")
    return [gpus[k % len(gpus)] if gpus else None for k in range(workers)]


def worker_env(threads: int, device: str | None, environ=None) -> dict:
    env = dict(os.environ if environ is None else environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)  # inherited by the kernels the worker starts
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    return env


class _Worker:
    """A point runner in its own session (a terminal's Ctrl-C reaches only the sweep, which stops the workers
    itself): reads one point per line on stdin, runs it, answers its status on stdout."""

    def __init__(self, env: dict):
        self.env = env
        self.proc = subprocess.Popen(runner_command(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, start_new_session=True, text=True, bufsize=1)
        self.job = None  # (point, run_dir) being run

    def send(self, point, run_dir: Path, notebooks_dir: Path) -> None:
        self.job = (point, run_dir)
        self.proc.stdin.write(job_json(point, run_dir, notebooks_dir) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the worker kills its kernel and exits


def job_json(point, run_dir: Path, notebooks_dir: Path) -> str:
    return json.dumps({"point": dataclasses.asdict(point), "run_dir": str(run_dir),
                       "notebooks_dir": str(notebooks_dir)})


def _descendants(pid: int) -> list[int]:
    """Process ids below pid (Linux /proc; elsewhere none: kernels exit by themselves when their parent is gone)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_descendants_and_exit(code: int) -> None:
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(code)


def _runner_main(argv: list[str]) -> None:
    """A point runner: the point given as JSON in argv (a SLURM job), else one point per stdin line (a local
    worker); prints each status as one JSON line. SIGTERM kills the point's kernel and exits 143."""
    parent = os.getppid()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed while a point runs goes to stderr, not into the protocol
    signal.signal(signal.SIGTERM, lambda *_: _kill_descendants_and_exit(128 + signal.SIGTERM))

    def watch_parent():  # the sweep was killed outright: stop too
        while os.getppid() == parent:
            time.sleep(1)
        _kill_descendants_and_exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if argv and cpus:  # a SLURM job: its kernel's threads = the CPUs it was given
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = cpus

    for line in argv or sys.stdin:
        job = json.loads(line)
        status = run_point(Point(**job["point"]), Path(job["run_dir"]), Path(job["notebooks_dir"]))
        protocol.write(json.dumps({"status": status}) + "\n")


def point_status(point, run_dir: Path, why: str) -> str:
    """'ran' or 'failed' from the point's folder; a point that left neither file gets an error.txt saying why."""
    if (run_dir / SUMMARY).exists():
        return "ran"
    if not (run_dir / ERROR).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR).write_text(f"{point.label()}\nWorkerError: {why}\n")
    return "failed"


def run_local(todo: list, out: Path, workers: int, notebooks_dir: Path, gpus: list[str] | None = None,
              log=print):
    """Run the points in `workers` worker processes (worker k on GPU assign_devices(...)[k]); yield (point, status)."""
    gpus = visible_gpus() if gpus is None else gpus
    devices = assign_devices(workers, gpus)
    threads = max(1, (os.cpu_count() or 1) // workers)
    queue, idle, busy = deque(todo), [], {}
    sel = selectors.DefaultSelector()
    try:
        for device in devices[:len(todo)]:
            idle.append(_Worker(worker_env(threads, device)))
        if gpus:
            log(f"sweep: {len(idle)} worker(s) on GPU(s) {', '.join(d for d in devices[:len(idle)])}")
        while queue or busy:
            while queue and idle:
                w = idle.pop()
                p = queue.popleft()
                w.send(p, out / p.relative_dir, notebooks_dir)
                busy[w.proc.stdout.fileno()] = w
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            for key, _ in sel.select(timeout=1.0):
                w = key.data
                line = w.proc.stdout.readline()
                point, run_dir = w.job
                sel.unregister(w.proc.stdout)
                del busy[w.proc.stdout.fileno()]
                w.job = None
                if line:
                    idle.append(w)
                    yield point, point_status(point, run_dir, "notebook 04 left neither summary.json nor error.txt")
                else:  # the worker died (e.g. killed for memory): record it, start a fresh one in its place
                    code = w.proc.wait()
                    idle.append(_Worker(w.env))
                    yield point, point_status(point, run_dir, f"worker process died (exit code {code})")
    except BaseException:
        _stop_workers([*idle, *busy.values()], out)
        raise
    finally:
        sel.close()
    _stop_workers(idle, out)


def _stop_workers(workers: list, out: Path) -> None:
    """Stop every worker; the folders of points they were still running are removed (only finished points stay)."""
    for w in workers:
        w.stop()
    deadline = time.monotonic() + STOP_GRACE_S
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        for f in (w.proc.stdin, w.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if w.job is not None:
            _, run_dir = w.job
            if not (run_dir / SUMMARY).exists():
                shutil.rmtree(run_dir, ignore_errors=True)


