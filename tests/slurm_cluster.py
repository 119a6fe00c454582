"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd started from a config in a temporary
folder (Debian's slurm-wlm and munge; .ci/run installs them). Everything lives in that folder (key, sockets, state,
spool, logs, free TCP ports), so it neither needs nor touches a system SLURM. docs/workbook.md describes it."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel")
PARTITION = "debug"
NODE = "kprune-node"

SLURM_CONF = """\
ClusterName=kprunetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
EnforcePartLimits=ALL
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4096 State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=60 State=UP
"""


class ClusterUnavailable(RuntimeError):
    pass


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


@contextmanager
def slurm_cluster():
    """Yield the environment (SLURM_CONF=…) of a running one-node cluster; raise ClusterUnavailable (with the
    daemons' log tails) when it cannot start. Everything is stopped and removed afterwards."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise ClusterUnavailable(f"SLURM not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm "
                                 "and munge with apt-get)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root to start jobs; run the tests as root (as CI does)")
    root = Path(tempfile.mkdtemp(prefix="kprune-slurm-", dir="/tmp"))  # short: unix socket paths are limited
    for d in ("state", "spool", "log", "munge"):
        (root / d).mkdir()
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "plugstack.conf").write_text("")
    munge_socket = root / "munge.socket"
    ctld_port, slurmd_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname().split(".")[0], ctld_port=ctld_port,
                                      slurmd_port=slurmd_port, user="root", munge_socket=munge_socket, root=root,
                                      node=NODE, cpus=max(2, os.cpu_count() or 1), partition=PARTITION))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        log = open(root / "log" / f"{name}.out", "w")
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))

    def logs() -> str:
        return "; ".join(f"{f.name}: {_tail(f)}" for f in sorted((root / "log").glob("*")))

    try:
        # --force: pytest's and mkdtemp's parent folders are not world-executable, which munged otherwise refuses
        start("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
                         f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'seed'}",
                         f"--log-file={root / 'log' / 'munged.log'}"])
        _wait(lambda: munge_socket.exists(), 15, lambda: f"munged did not start: {logs()}")
        start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
        start("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(conf)])

        def node_idle() -> bool:
            r = subprocess.run(["sinfo", "--noheader", "--format=%t", "--nodes", NODE], env=env,
                               capture_output=True, text=True, timeout=30)
            return r.returncode == 0 and r.stdout.strip() == "idle"

        _wait(node_idle, 60, lambda: f"the SLURM node did not become idle: {logs()}")
        yield {"SLURM_CONF": str(conf), "partition": PARTITION, "root": str(root)}
    finally:
        if procs:
            subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
            _wait(lambda: not subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True,
                                             timeout=30).stdout.strip(), 20, None)
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait(ready, timeout_s: float, why) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.5)
    if why is not None:
        raise ClusterUnavailable(why())
