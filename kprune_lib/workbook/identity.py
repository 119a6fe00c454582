"""A sweep point's identity: everything that determines its result, and why a recorded point no longer matches.

The identity of a point (written to its folder as point.json by `points.run_point`) holds:
  model      a local folder: a SHA-256 of each file that loading reads (config, weights, tokenizer, shipped code);
             a hub id: the id and the revision asked for (no fingerprint without downloading)
  data       a local folder: a SHA-256 of each file the task reads (GLUE: the task's split files; SQuAD: the
             official JSON files, or the explicit train/eval files), named relative to the folder; no folder: the
             hub dataset's id; your own data: its two files, or every file of its local data-set folder (a hub data
             set: its id and configuration)
  tokenizer  the same as model, when the point names a tokenizer of its own
  task, method, constraint, seed, num_tokens, device
  parameters every parameter notebook 04 runs with (its defaults, overridden by the grid's), output_dir excepted
  resolved   the PruneConfig the method really runs with (method.methods.resolve): every resolved hyper-parameter,
             the budget (FLOPs constraint, or latency in ms with batch, sequence, device and threads)
Local paths are recorded beside it (point.json's "sources"), not part of it: the same files in another folder or
on another machine are the same inputs, so a clone of the repository reuses the committed points. The package
version, git commit, command and date are recorded beside it too (provenance): the same inputs under another commit
are the same experiment, and its provenance says which code produced it.

A finished point is reused only when its recorded identity equals the one planned now; `differences` says what
changed in one phrase ("model changed", "num_tokens changed (5000 -> 20000)"). A knob added to the code after a
point ran (a new notebook-04 parameter or PruneConfig field) does not make it stale while it sits at its default:
new options default to the old behaviour.
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path

from kprune_lib._provenance import file_sha256

# files of a model folder that loading reads: configuration, weights, tokenizer, shipped modelling code
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                       "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
                       "*.model", "spiece*", "*.py")
IDENTITY_VERSION = 1  # bump when what the identity holds changes: every recorded point then reruns
_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: each file is read once per process


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def _files(paths) -> dict[str, str]:
    return {str(p): _sha256(p) for p in sorted(set(paths)) if p.is_file()}


def model_fingerprint(model: str, revision: str | None = None) -> dict:
    """{"files": {name: sha256}} of a local folder; {"hub_id", "revision"} of anything else."""
    folder = Path(model)
    if not folder.is_dir():
        return {"hub_id": model, "revision": revision or "main"}
    files = [p for pattern in MODEL_FILE_PATTERNS for p in folder.glob(pattern)]
    return {"files": {Path(k).name: h for k, h in _files(files).items()}}


def data_fingerprint(task: str, data_dir: str | None, parameters: dict) -> dict:
    """The data a point reads: local files with their SHA-256, or the hub dataset it downloads. Your own data
    (parameters with a validation_file): its train and validation files, by file name; a data set (parameters with a
    dataset): every file of a local data-set folder, named relative to it, or the hub id and configuration."""
    from kprune_lib.data.tasks import get_task

    if parameters.get("dataset"):
        folder = Path(parameters["dataset"])
        if not folder.is_dir():
            return {"hub_id": parameters["dataset"], "config": parameters.get("dataset_config")}
        files = [p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        return {"files": {str(Path(k).relative_to(folder)): h for k, h in _files(files).items()}}
    if parameters.get("validation_file"):
        own = {k: Path(parameters[k]) for k in ("train_file", "validation_file") if parameters.get(k)}
        return {"files": {f"{k[:-len('_file')]}:{p.name}": _sha256(p) for k, p in own.items() if p.is_file()}}
    t = get_task(task)
    explicit = [Path(parameters[k]) for k in ("train_file", "eval_file") if parameters.get(k)]
    if data_dir is None and not explicit:
        return {"hub_id": getattr(t, "hub_id", "nyu-mll/glue"), "config": t.name}
    if t.problem == "qa":
        files = explicit + ([Path(data_dir) / f for f in t.files] if data_dir is not None else [])
    else:
        from kprune_lib.data.glue import files_read

        files = files_read(t, data_dir) if data_dir is not None else []
    root = Path(data_dir) if data_dir is not None else None
    named = {}
    for path, h in _files(files).items():
        p = Path(path)
        named[str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else str(p)] = h
    return {"files": named}


def notebook_parameters(notebook: str | Path) -> dict:
    """The defaults of a py:percent notebook's `parameters` cell (plain assignments of literals)."""
    lines = Path(notebook).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# %%") and "parameters" in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# %%")), len(lines))
    values = {}
    for node in ast.parse("\n".join(lines[start + 1:end])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def resolved_config(parameters: dict) -> dict:
    """The PruneConfig a point runs with (its method's settings applied), as a plain dict."""
    from kprune_lib.config import PruneConfig
    from kprune_lib.method.methods import resolve

    names = {f.name for f in fields(PruneConfig)}
    return asdict(resolve(PruneConfig(**{k: v for k, v in parameters.items() if k in names})))


LOCATIONS = ("output_dir", "model", "data_dir", "tokenizer", "train_file", "eval_file",
             "validation_file", "dataset")  # fingerprinted instead


def point_identity(parameters: dict, model_fp: dict, data_fp: dict, tokenizer_fp: dict | None = None) -> dict:
    """The identity of the point notebook 04 runs with these (complete) parameters: the locations (LOCATIONS)
    enter through the fingerprints of what they hold, output_dir not at all."""
    kept = {k: v for k, v in sorted(parameters.items()) if k not in LOCATIONS}
    return {"version": IDENTITY_VERSION, "task": kept["task"], "method": kept["method"],
            "constraint": kept["constraint"], "seed": kept["seed"], "num_tokens": kept["num_tokens"],
            "device": kept["device"], "model": model_fp, "data": data_fp, "tokenizer": tokenizer_fp,
            "parameters": kept, "resolved": resolved_config(kept)}


def identity_key(identity: dict) -> str:
    """A short hash of the identity (its canonical JSON), for tables and file listings."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def default_values(notebook_defaults: dict) -> dict:
    """The defaults a knob takes when a grid does not set it: notebook 04's parameters and PruneConfig's fields."""
    from kprune_lib.config import PruneConfig

    return {"parameters": dict(notebook_defaults), "resolved": asdict(PruneConfig())}


def _without_new_defaults(planned: dict, recorded: dict, defaults: dict) -> dict:
    """`planned` less the knobs the recorded identity lacks (added to the code after it ran) that sit at their
    default: code that gains an option keeps its old behaviour at the option's default, so points recorded before
    the option existed are still these points. A new knob set to anything else is a change."""
    out = dict(planned)
    for part in ("parameters", "resolved"):
        old, new, base = recorded.get(part) or {}, planned.get(part) or {}, defaults.get(part) or {}
        out[part] = {k: v for k, v in new.items() if k in old or k not in base or v != base[k]}
    return out


def differences(recorded: dict | None, planned: dict, defaults: dict | None = None) -> str | None:
    """None when the identities are equal; else one phrase naming what changed. With `defaults`
    (default_values), knobs added to the code since the point ran count as unchanged while at their default."""
    if recorded is None:
        return "no point.json (finished before point identities were recorded)"
    if defaults is not None:
        planned = _without_new_defaults(planned, recorded, defaults)
    if recorded == planned:
        return None
    if recorded.get("version") != planned.get("version"):
        return "identity format changed"
    changed = []
    for key in ("model", "data", "tokenizer"):
        if recorded.get(key) != planned.get(key):
            changed.append(f"{key} changed")
    for key in ("task", "method", "constraint", "seed", "num_tokens", "device"):
        if recorded.get(key) != planned.get(key):
            changed.append(f"{key} changed ({_short(recorded.get(key))} -> {_short(planned.get(key))})")
    if not changed:
        old, new = recorded.get("parameters") or {}, planned.get("parameters") or {}
        names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        old_r, new_r = recorded.get("resolved") or {}, planned.get("resolved") or {}
        names += sorted(k for k in set(old_r) | set(new_r) if old_r.get(k) != new_r.get(k) and k not in names)
        changed.append(f"hyper-parameters changed ({', '.join(names)})" if names else "identity changed")
    return "; ".join(changed)
