"""kprune_lib: retraining-free structured pruning of fine-tuned encoders (K-prune, ICLR 2024).

Layers, each importing only from those below it (tests/test_layers.py checks):

    cli                                                 the command line (every command, `kprune sweep` included)
    workbook/   steps, results, plots, sweep, points, executors, slurm   what the notebooks and sweeps use
    api, finetune                                       the Python entry points
    method/ | artifacts/ | data/                        the algorithm | what a run ships | tasks and data
    costs/                                              what a unit costs: FLOPs, latency tables, budgets
    encoder/                                            the model as the method sees it (+ hf/, the shipped code)
    config, _atomic, _version, _provenance              defaults, the one atomic writer, the version, provenance

The public names below are imported on first use (PEP 562): `import kprune_lib` does not import torch.
"""
from __future__ import annotations

import importlib

from kprune_lib import _aliases
from kprune_lib._version import __version__

_aliases.install()  # the flat layout's module paths, deprecated

_PUBLIC = {
    "PruneConfig": "kprune_lib.config", "Budget": "kprune_lib.config",
    "prune": "kprune_lib.api", "evaluate": "kprune_lib.api", "finetune": "kprune_lib.api",
    "export_onnx": "kprune_lib.api",
    "load_pruned": "kprune_lib.artifacts.checkpoint", "save_pruned": "kprune_lib.artifacts.checkpoint",
    "register_auto_classes": "kprune_lib.artifacts.checkpoint",
    "kprune": "kprune_lib.method.loop", "PruneResult": "kprune_lib.method.loop",
    "prune_physically": "kprune_lib.encoder.physical",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kprune_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
