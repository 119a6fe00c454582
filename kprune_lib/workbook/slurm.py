"""SLURM through submitit: one job per point, in a job array, each running the same point runner as a local worker
(`executors.runner_command`); cancelled (scancel) on Ctrl-C or SIGTERM. Options come from a grid's `slurm:` mapping
and the CLI (`slurm_options`)."""
from __future__ import annotations

import dataclasses
import getpass
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from kprune_lib.workbook.executors import ExecutorError, job_json, runner_command
from kprune_lib.workbook.points import ERROR, SUMMARY

SLURM_LOGS = "slurm-logs"  # OUTPUT/slurm-logs/<job id>/: submitit's pickles and each job's stdout/stderr
# squeue states of a job that may still write its point (PREEMPTED: SLURM may requeue it)
SLURM_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
                "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "RESV_DEL_HOLD"}
SLURM_POLL_S = 10.0  # the longest pause between two squeue calls while waiting for jobs


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None  # sbatch --account (some clusters require one)
    qos: str | None = None  # sbatch --qos
    time_min: int = 60  # time limit of one point's job, minutes
    gpus: int = 0  # GPUs per job (--gpus-per-node); 0: a CPU job
    cpus_per_task: int = 4  # CPU cores per job; also the job's OMP_NUM_THREADS
    mem_gb: float = 16.0  # memory per job, GB; 0: the partition's default
    array_parallelism: int = 32  # at most this many points' jobs run at once (job array %N)


SLURM_KEYS = tuple(f.name for f in dataclasses.fields(SlurmOptions))


def slurm_options(spec: dict | None = None, **overrides) -> SlurmOptions:
    """A grid's `slurm:` mapping, then non-None overrides (the CLI's options), validated -> SlurmOptions."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ExecutorError(f"'slurm' must be a mapping with keys from {list(SLURM_KEYS)}")
    unknown = set(spec) - set(SLURM_KEYS)
    if unknown:
        raise ExecutorError(f"unknown slurm key(s) {sorted(unknown)}; allowed: {list(SLURM_KEYS)}")
    values = {**spec, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("partition", "account", "qos"):
        if values.get(key) is not None and not (isinstance(values[key], str) and values[key].strip()):
            raise ExecutorError(f"slurm {key} must be a name, got {values[key]!r}")
    for key, low in (("time_min", 1), ("gpus", 0), ("cpus_per_task", 1), ("array_parallelism", 1)):
        v = values.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise ExecutorError(f"slurm {key} must be an integer >= {low}, got {v!r}")
    mem = values.get("mem_gb")
    if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem < 0):
        raise ExecutorError(f"slurm mem_gb must be a number of GB >= 0, got {mem!r}")
    return SlurmOptions(**values)


def _slurm_command(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _first_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip()]
    errors = [x for x in lines if "error" in x.lower()]
    return (errors or lines or ["no output"])[0]


def check_slurm(opts: SlurmOptions) -> list[str]:
    """Raise ExecutorError (one line) unless submitit is installed, the SLURM controller answers and the partition
    exists; returns the cluster's partitions. Nothing is submitted or written."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ExecutorError("--executor slurm needs submitit, which is not installed: pip install submitit "
                            "(or pip install -e '.[workbook]')") from None
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise ExecutorError("--executor slurm: no SLURM commands here (sinfo/sbatch not on PATH); run the sweep on a "
                            "machine of the cluster (e.g. its login node), or use --executor local")
    try:
        r = _slurm_command(["sinfo", "--noheader", "--format=%R"])
    except subprocess.TimeoutExpired:
        r = subprocess.CompletedProcess([], 1, "", "sinfo timed out")
    if r.returncode != 0:
        raise ExecutorError(f"--executor slurm: the SLURM controller does not answer (sinfo: {_first_line(r.stderr)}); "
                            "check that `sinfo` works here (SLURM_CONF, munge), or use --executor local")
    partitions = sorted(set(r.stdout.split()))
    if opts.partition is not None and opts.partition not in partitions:
        raise ExecutorError(f"unknown SLURM partition {opts.partition!r}; this cluster has "
                            f"{', '.join(partitions) or 'none'} (set slurm: partition: in the grid, or --partition)")
    return partitions


def slurm_job(point, run_dir: Path, notebooks_dir: Path):
    """What one point's job runs on a compute node, as a picklable command: the point runner (notebook 04 through
    sweep.run_point) in the job's own environment, with as many threads as the job has CPUs."""
    from submitit.helpers import CommandFunction

    return CommandFunction(runner_command(job_json(point, run_dir, notebooks_dir)), verbose=True)  # logs stream live


def slurm_states(user: str | None = None) -> dict[str, str] | None:
    """{job id: state} of the user's jobs the controller still knows (array tasks as <array>_<index>); None when
    squeue fails. Finished jobs stay listed for the cluster's MinJobAge, then leave."""
    try:
        r = _slurm_command(["squeue", "--noheader", "--array", "--states=all", "--user", user or getpass.getuser(),
                            "--format=%i %T"])
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    return dict(line.split()[:2] for line in r.stdout.splitlines() if len(line.split()) >= 2)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _submitted_parameters(opts: SlurmOptions) -> dict:
    params = {"job_name": "kprune-sweep", "time": opts.time_min, "cpus_per_task": opts.cpus_per_task, "nodes": 1,
              "ntasks_per_node": 1, "array_parallelism": opts.array_parallelism}
    for key in ("partition", "account", "qos"):
        if getattr(opts, key) is not None:
            params[key] = getattr(opts, key)
    if opts.gpus:
        params["gpus_per_node"] = opts.gpus
    if opts.mem_gb:
        params["mem"] = f"{max(1, round(opts.mem_gb * 1024))}M"
    return params


@contextmanager
def _undo_on_failure(out: Path):
    """Remove what a refused submission wrote (submitit's pickles), so bad settings leave nothing behind."""
    missing, p = None, out
    while not p.exists():  # the topmost folder this submission would create
        missing, p = p, p.parent
    logs = out / SLURM_LOGS
    before = set(logs.iterdir()) if logs.is_dir() else None
    try:
        yield
    except BaseException:
        if missing is not None:
            shutil.rmtree(missing, ignore_errors=True)
        elif before is None:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            for q in set(logs.iterdir()) - before:
                shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)
        raise


def run_slurm(todo: list, out: Path, opts: SlurmOptions, notebooks_dir: Path, log=print,
              poll_s: float | None = None):
    """Submit one job per point (a job array of at most opts.array_parallelism at once), wait for them; yield
    (point, status) as jobs end. A job that ends without finishing its point (time limit, pre-emption, node failure,
    out of memory, cancelled) leaves an error.txt naming its state and log; a re-run resubmits it."""
    import submitit

    executor = submitit.SlurmExecutor(folder=out / SLURM_LOGS / "%j", python=sys.executable)
    executor.update_parameters(**_submitted_parameters(opts))
    dirs = [out / p.relative_dir for p in todo]
    with _undo_on_failure(out):
        try:
            jobs = executor.submit_array([slurm_job(p, d, notebooks_dir) for p, d in zip(todo, dirs)])
        except Exception as e:  # sbatch refused (resources, account, time limit ...): nothing was submitted
            raise ExecutorError(f"sbatch refused the sweep's jobs: {_first_line(str(e))}; adjust the grid's slurm: "
                                "settings or the --partition/--time-min/--gpus/--cpus-per-task/--mem-gb options") \
                from None
    pending = {job.job_id: (job, p, d) for job, p, d in zip(jobs, todo, dirs)}
    first = jobs[0].job_id.split("_")[0]
    log(f"sweep: submitted {len(jobs)} job(s) (SLURM job {first}{' array' if len(jobs) > 1 else ''}); "
        f"logs in {out / SLURM_LOGS}")
    user, wait, warned = getpass.getuser(), 1.0, False
    try:
        while pending:
            time.sleep(wait)
            wait = min(poll_s or SLURM_POLL_S, wait * 1.5)
            states = slurm_states(user)
            if states is None:
                if not warned:
                    log("sweep: squeue does not answer; still waiting for the jobs (Ctrl-C cancels them)")
                    warned = True
                continue
            for job_id in [j for j in pending if states.get(j) not in SLURM_ACTIVE]:
                job, point, run_dir = pending.pop(job_id)
                state = states.get(job_id, "no longer listed by squeue")
                yield point, _slurm_status(point, run_dir, job, state)
    except BaseException:
        if pending:
            subprocess.run(["scancel", *pending], capture_output=True, timeout=60)
        raise


def _slurm_status(point, run_dir: Path, job, state: str, settle_s: float = 10.0) -> str:
    deadline = time.monotonic() + settle_s  # a shared file system may show the job's last files late
    while not ((run_dir / SUMMARY).exists() or (run_dir / ERROR).exists()) and time.monotonic() < deadline \
            and state == "COMPLETED":
        time.sleep(1)
    if (run_dir / SUMMARY).exists():
        return "ran"
    if not (run_dir / ERROR).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR).write_text(
            f"{point.label()}\nSlurmJobError: job {job.job_id} ended ({state}) without finishing the point; re-run "
            f"the sweep to resubmit it. Log: {job.paths.stderr}\n\n{_log_tail(job.paths.stderr)}\n")
    return "failed"

