"""The one atomic writer: every file or folder the project writes appears whole or not at all.

Work happens in a temporary sibling (`.NAME.tmp-XXXX`, same file system) that is renamed over the target only when
the block succeeds; on any failure, Ctrl-C included, the temporary is removed and so are parent folders this call
created. Readers therefore never see a half-written summary.json, model folder, ONNX file, latency table or report.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _ordinary(path: Path, mode: int) -> None:
    """mkstemp/mkdtemp create private entries; the result should have the user's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _missing_parents(target: Path) -> list[Path]:
    return [d for d in (target.parent, *target.parent.parents) if not d.exists()]


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        try:
            d.rmdir()
        except OSError:
            break


def check_target(target: str | Path, overwrite: bool = False, need_bytes: int = 0, folder: bool = True) -> None:
    """Before any work: can `target` be written? Refuses, in one line that says what to change, an existing non-empty
    folder (unless overwrite), a path under a file, a parent that cannot be written, and a disk with less than
    need_bytes free."""
    target = Path(target)
    if target.exists():
        if folder and not target.is_dir():
            raise FileExistsError(f"output {target} is a file, not a folder; choose another --output")
        if folder and any(target.iterdir()) and not overwrite:
            raise FileExistsError(f"output folder {target} exists and is not empty; choose another --output or pass "
                                  "--overwrite")
    ancestor = next(p for p in (target, *target.parents) if p.exists())
    if ancestor != target and not ancestor.is_dir():
        raise NotADirectoryError(f"cannot create {target}: {ancestor} is a file, not a folder; choose another --output")
    if not os.access(ancestor if ancestor.is_dir() else ancestor.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create {target}: {ancestor} is not writable; choose another --output")
    free = shutil.disk_usage(ancestor).free
    if need_bytes and free < need_bytes:
        raise OSError(f"not enough free disk for {target}: about {need_bytes / 2**20:.0f} MB needed, "
                      f"{free / 2**20:.0f} MB free on {ancestor}; free some space or choose another --output")


@contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it replaces `target` only if the block succeeds. An existing
    non-empty `target` is refused unless overwrite."""
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {target} exists and is not empty; choose another --output or pass "
                              "--overwrite")
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    _ordinary(tmp, 0o777)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


@contextmanager
def atomic_file(target: str | Path, overwrite: bool = True, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside `target` (ending in `suffix`, e.g. ".onnx" for writers that look at it);
    it replaces `target` only if the block succeeds. Files the block wrote beside the temporary with its name as a
    prefix (e.g. ONNX external data, TMP.data) are removed either way."""
    target = Path(target)
    if target.is_dir():
        raise IsADirectoryError(f"output {target} is a folder; give a file path")
    if target.exists() and not overwrite:
        raise FileExistsError(f"output {target} exists; choose another --output or pass --overwrite")
    created = _missing_parents(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp, done = Path(name), False
    try:
        yield tmp
        _ordinary(tmp, 0o666)
        os.replace(tmp, target)
        done = True
    finally:
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink(missing_ok=True)
        if not done:
            _remove_empty(created)


def write_text(target: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `target` atomically."""
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | Path, payload, indent: int = 2) -> Path:
    """Write `payload` as JSON to `target` atomically."""
    return write_text(target, json.dumps(payload, indent=indent))
