"""A throwaway virtual environment holding only torch, transformers, safetensors and what they require (no kprune).

Nothing is downloaded: the packages of the running environment are symlinked into the new environment's
site-packages, each distribution with its files (from its RECORD) and its .dist-info folder. The closure is computed
from the installed metadata (`Requires-Dist` whose marker holds without extras).
"""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

STOCK_PACKAGES = ("torch", "transformers", "safetensors")


def requirement_closure(names=STOCK_PACKAGES) -> dict[str, metadata.Distribution]:
    """The installed distributions that `names` need, transitively (extras not taken)."""
    todo, found = [canonicalize_name(n) for n in names], {}
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement this environment does not have
        found[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return found


def top_level_entries(dist: metadata.Distribution) -> set[str]:
    """Top-level names a distribution installed into site-packages (packages, modules, its .dist-info)."""
    entries = set()
    for f in dist.files or []:
        parts = PurePosixPath(str(f)).parts
        if parts and parts[0] not in ("..", "__pycache__") and not parts[0].endswith(".pth"):
            entries.add(parts[0])
    return entries


def make_stock_venv(dest: Path, names=STOCK_PACKAGES) -> Path:
    """Create the environment at dest; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    site = dest / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for dist in requirement_closure(names).values():
        src_site = Path(dist.locate_file(""))
        for entry in top_level_entries(dist):
            target = site / entry
            if (src_site / entry).exists() and not target.exists():
                target.symlink_to(src_site / entry)
    return dest / "bin" / "python"
