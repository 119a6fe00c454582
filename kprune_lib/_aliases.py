"""Deprecated module paths of the flat layout (before 0.2), kept for one release: `import kprune_lib.io` still works,
warns once, and gives the module at its new place (e.g. kprune_lib.artifacts.checkpoint)."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "arch": "encoder.arch", "forward": "encoder.forward", "masks": "encoder.masks", "physical": "encoder.physical",
    "hf": "encoder.hf", "flops": "costs.flops", "latency": "costs.latency", "measurement": "method.measurement",
    "search": "method.search", "tuning": "method.tuning", "schedules": "method.schedules", "memory": "method.memory",
    "prune": "method.loop", "baselines": "method.baselines", "tasks": "data.tasks", "glue_data": "data.glue",
    "squad": "data.squad", "squad_features": "data.squad_features", "batching": "data.batching",
    "metrics": "data.metrics", "squad_metrics": "data.squad_metrics", "evaluate": "data.evaluate",
    "io": "artifacts.checkpoint", "onnx_export": "artifacts.onnx", "model_card": "artifacts.model_card",
    "plots": "workbook.plots", "sweep": "workbook.sweep", "executors": "workbook.executors",
}


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.target}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, rest = fullname.partition(".")
        if prefix != "kprune_lib" or not rest:
            return None
        head, _, tail = rest.partition(".")
        if head not in MOVED:
            return None
        new = f"kprune_lib.{MOVED[head]}" + (f".{tail}" if tail else "")
        return importlib.util.spec_from_loader(fullname, _Loader(new))


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
