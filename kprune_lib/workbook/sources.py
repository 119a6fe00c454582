"""Where a grid's tasks take their model and data from: local folders, their fallbacks, and the hub check.

A task's `fallback:` (a hub id) replaces its `model:` when that is no local folder, and `data_dir_fallback:` (null:
the hub's nyu-mll/glue) replaces a `data_dir:` that does not exist (resolve_sources). A local model or data folder
that still does not exist stops the grid before anything runs (check_sources). A sweep that needs a hub fallback
checks the hub first (check_fallbacks) and stops when the hub is offline or unreachable and the fallback is not in
the local Hugging Face cache.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HUB_GLUE = "nyu-mll/glue"  # where GLUE data come from without a data_dir (kprune_lib.data.glue.load_hub)
NO_FALLBACK = object()  # data_dir_fallback not given: a missing data_dir stops the sweep (load_grid)


class GridError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    """Where one task's model and data come from (resolve_sources)."""
    task: str
    model: str  # an absolute local folder, or a hub id
    data_dir: str | None  # an absolute local folder, or None: the hub's nyu-mll/glue
    model_missing: str | None = None  # the grid's model path, when it is absent and `fallback` replaced it
    data_missing: str | None = None  # the grid's data_dir, when it is absent and `data_dir_fallback` replaced it
    files: tuple[str, ...] = ()  # your own data: the task's train and validation files (no data_dir then)
    dataset: str | None = None  # your own data from a data set: a local data-set folder or a hub id (no data_dir)

    def hub_fallbacks(self) -> list[tuple[str, str]]:
        """(repo type, repo id) of every fallback that comes from the hub."""
        out = []
        if self.model_missing is not None and not Path(self.model).is_dir():
            out.append(("model", self.model))
        if self.data_missing is not None and self.data_dir is None:
            out.append(("dataset", HUB_GLUE))
        return out

    def describe(self) -> str:
        """One log line: the model and data this task uses, and which fallback replaced a missing local folder."""
        model = f"{'local folder' if Path(self.model).is_dir() else 'hub id'} {self.model}"
        if self.model_missing is not None:
            model += f" (fallback: {self.model_missing} not found)"
        if self.files:
            data = "your files " + ", ".join(self.files)
        elif self.dataset is not None:
            data = f"{'local data set' if Path(self.dataset).is_dir() else 'hub data set'} {self.dataset}"
        elif self.data_dir is None:
            data = f"hub {HUB_GLUE}"
        else:
            data = f"local folder {self.data_dir}" if Path(self.data_dir).is_dir() else f"{self.data_dir} (not found)"
        if self.data_missing is not None:
            data += f" (fallback: {self.data_missing} not found)"
        return f"sweep: {self.task}: model {model}; data {data}"


def local_path(path: str | None, base: Path, must_exist: bool) -> str | None:
    """Relative paths are relative to the working directory; a model that is no local folder stays a hub id."""
    if path is None:
        return None
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base / p
    return str(p.resolve()) if (must_exist or p.exists()) else str(path)


def _exists(path: str, base: Path) -> bool:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else base / p).exists()


def resolve_sources(task: str, model: str, data_dir: str | None, base: str | Path, fallback: str | None = None,
                    data_dir_fallback=NO_FALLBACK) -> Source:
    """The model and data of one task: the grid's local folders where they exist, else their fallbacks.

    model: used when it is an existing local path (relative to base); otherwise `fallback` (a hub id, or another
    folder) when the task has one, else the value as written (a hub id). data_dir: used when it exists; otherwise
    `data_dir_fallback` when the grid has one (None: the hub's nyu-mll/glue), else the folder as written (its points
    then fail). Without fallbacks, or with local paths that exist, the result is what it always was."""
    base = Path(base)
    model_missing = data_missing = None
    if fallback is not None and not _exists(model, base):
        model_missing, model = model, fallback
    if data_dir is not None and data_dir_fallback is not NO_FALLBACK and not _exists(data_dir, base):
        data_missing, data_dir = data_dir, data_dir_fallback
    return Source(task, local_path(model, base, False), local_path(data_dir, base, True), model_missing, data_missing)


def looks_local(path: str, base: Path) -> bool:
    """Whether a model given as text is meant as a local folder rather than a hub id ("org/name" or "name"):
    it starts with '.', '/' or '~', has more than one '/', or its first component is a local folder."""
    p = str(path)
    first = p.split("/")[0]
    return (p.startswith((".", "/", "~")) or "\\" in p or p.count("/") > 1
            or ("/" in p and (base / first).is_dir()))


def check_sources(src: Source, path: Path, base: Path) -> None:
    """A local model or data folder that does not exist (after fallbacks) stops the grid before anything runs."""
    if not Path(src.model).is_dir() and looks_local(src.model, base):
        raise GridError(f"{path}: task {src.task}: model folder {src.model} does not exist; fix `model:` (or give "
                        "the task a `fallback:` hub id)")
    if src.data_dir is not None and not Path(src.data_dir).is_dir():
        raise GridError(f"{path}: task {src.task}: data_dir {src.data_dir} does not exist; fix `data_dir:` (or set "
                        "`data_dir_fallback: null` to use the hub)")


# ---- fallbacks need the hub: check it before running anything ---------------------------------------------------
_TRUE = {"1", "ON", "YES", "TRUE"}


def _offline_reason(repo_type: str) -> str | None:
    """The environment variable that keeps this kind of hub download offline, if one does."""
    own = "TRANSFORMERS_OFFLINE" if repo_type == "model" else "HF_DATASETS_OFFLINE"
    for var in ("HF_HUB_OFFLINE", own):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var}={os.environ[var]}"
    return None


def hub_cached(repo_type: str, repo_id: str) -> bool:
    """Whether the local Hugging Face cache already holds this repo (then offline runs can use it)."""
    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or home / "hub").expanduser()
    snapshots = hub / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if repo_type == "model":
        return any(snapshots.glob("*/config.json"))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or home / "datasets").expanduser()
    return any(snapshots.glob("*/*")) or (datasets_cache / repo_id.replace("/", "___")).is_dir()


def _hub_problem(repo_type: str, repo_id: str) -> str | None:
    """Why this repo cannot be fetched now (offline, unreachable, not found), or None when it can."""
    reason = _offline_reason(repo_type)
    if reason:
        return f"the hub is offline ({reason})"
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, timeout=10)
    except Exception as e:  # connection refused, DNS, timeout, proxy, 404 ...
        if "NotFound" in type(e).__name__:
            return "the hub answers 'not found'"
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return f"the hub ({endpoint}) is unreachable ({type(e).__name__})"
    return None


def check_fallbacks(grid_sources: dict[str, Source], grid_path: str | Path, tasks=None) -> None:
    """Raise GridError (one line) when a fallback of these tasks needs the hub and the hub cannot deliver it.

    Runs before any point: with the local fixtures missing and the hub offline or unreachable, the sweep would
    otherwise start every point only to fail each one. A fallback already in the local HF cache passes."""
    sources = [s for t, s in grid_sources.items() if tasks is None or t in tasks]
    needed = list(dict.fromkeys(hub for s in sources for hub in s.hub_fallbacks() if not hub_cached(*hub)))
    problems = {}
    for kind, repo in needed:
        problem = _hub_problem(kind, repo)
        if problem:
            problems.setdefault(problem, []).append(repo)
    if not problems:
        return
    missing = sorted({m for s in sources for m in (s.model_missing, s.data_missing) if m is not None})
    offline = sorted({r.split("=")[0] for r in map(_offline_reason, {kind for kind, _ in needed}) if r})
    why = "; ".join(f"{p} for {', '.join(repos)}" for p, repos in problems.items())
    todo = ("point the grid's tasks:/data_dir: at local folders, or go online"
            + (f" (unset {', '.join(offline)})" if offline else ""))
    raise GridError(f"{grid_path}: local fixtures missing ({', '.join(missing)}) and their hub fallbacks cannot be "
                    f"fetched: {why}; {todo}")
