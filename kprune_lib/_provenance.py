"""What produced a result: code (package version, git commit and dirty flag), software versions, device, date.

One function, `provenance`, written once and recorded by every writer of results (api.prune's summary.json,
finetune's summary, the sweep's point.json, results.csv, the report). It is bottom-layer: torch and transformers are
imported inside the functions, so `import kprune_lib` stays free of them.

The commit is that of the git checkout the package is imported from (None for an installed wheel); `dirty` is True
when tracked files differ from that commit. Neither is part of a sweep point's identity (workbook/points.py): the same
inputs under another commit are the same experiment, and the commit says which code produced it.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from kprune_lib._version import __version__

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the repository root when run from a checkout


def git_state(root: Path = PACKAGE_ROOT) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the checkout at root (None, None outside a git checkout)."""
    if not (root / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def device_name(device=None) -> str:
    """The GPU's name for a CUDA device, else the CPU model (from /proc/cpuinfo where there is one)."""
    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(device=None, command: list[str] | None = None) -> dict:
    """Everything that says how a result was produced, apart from its inputs (those are a point's identity)."""
    import torch
    import transformers

    return {"kprune_lib": __version__, **git_state(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "device": "cpu" if device is None else str(device), "device_name": device_name(device),
            "threads": torch.get_num_threads(), "host_cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": _command(command)}


def _command(command: list[str] | None) -> list[str] | None:
    """The command line given, else this process's; None inside a Jupyter kernel (its argv is the kernel launcher's:
    a sweep records its own command in each point's point.json)."""
    if command is not None:
        return list(command)
    if sys.argv and "ipykernel" in Path(sys.argv[0]).name:
        return None
    return list(sys.argv)
