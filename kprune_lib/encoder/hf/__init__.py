"""kprune's side of the standalone model code: pruned configs for saving, the code files, and auto-class registration.

`configuration_kprune.py` and `modeling_kprune.py` import only torch and transformers: they are copied into every
pruned model folder (stock transformers loads them with `trust_remote_code=True`). `register()` (called by
every kprune load path, `artifacts.checkpoint.register_auto_classes`) registers the same classes with the transformers auto classes, so that no remote code is needed.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import transformers

from . import modeling_kprune
from .configuration_kprune import CONFIGS, PREFIX

CODE_FILES = ("configuration_kprune.py", "modeling_kprune.py")
_HERE = Path(__file__).resolve().parent
_AUTO = {"Model": "AutoModel", "ForSequenceClassification": "AutoModelForSequenceClassification",
         "ForQuestionAnswering": "AutoModelForQuestionAnswering",
         "ForTokenClassification": "AutoModelForTokenClassification"}

MODEL_CLASSES = [c for c in vars(modeling_kprune).values()
                 if isinstance(c, type) and issubclass(c, modeling_kprune.PrunedShape) and c is not modeling_kprune.PrunedShape]
_PRUNED_OF = {c.__bases__[1]: c for c in MODEL_CLASSES}  # stock class -> its pruned counterpart


def _auto_name(cls: type) -> str:
    return next(auto for suffix, auto in _AUTO.items() if cls.__bases__[1].__name__.endswith(suffix))


def pruned_class(model) -> type:
    """The pruned counterpart of a (stock or pruned) model's class."""
    for c in type(model).__mro__:
        if c in _PRUNED_OF:
            return _PRUNED_OF[c]
    raise ValueError(f"{type(model).__name__} cannot be saved as a pruned model; supported: "
                     f"{', '.join(sorted(c.__bases__[1].__name__ for c in MODEL_CLASSES))}")


def auto_map(config_class: type) -> dict[str, str]:
    entries = {"AutoConfig": f"configuration_kprune.{config_class.__name__}"}
    for c in MODEL_CLASSES:
        if c.config_class is config_class:
            entries[_auto_name(c)] = f"modeling_kprune.{c.__name__}"
    return entries


def pruned_config(model, heads_per_layer: list[int], intermediate_sizes: list[int]):
    """The configuration saved with a pruned model: the dense one, a kprune model_type, the per-layer shapes,
    `architectures` and `auto_map`."""
    cls = pruned_class(model)
    fields = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "auto_map")}
    fields.update(heads_per_layer=list(heads_per_layer), intermediate_sizes=list(intermediate_sizes),
                  architectures=[cls.__name__], auto_map=auto_map(cls.config_class))
    return cls.config_class.from_dict(fields)


def copy_code(out_dir: str | Path) -> None:
    for name in CODE_FILES:
        shutil.copyfile(_HERE / name, Path(out_dir) / name)


def is_pruned_type(model_type: str | None) -> bool:
    return model_type in CONFIGS


def register() -> None:
    """Make the auto classes build pruned models from kprune folders without remote code; and make
    `save_pretrained` of such a model write the code files beside it again (register_for_auto_class), so that a
    re-saved folder still loads with stock transformers."""
    for config_class in CONFIGS.values():
        transformers.AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
    for c in MODEL_CLASSES:
        getattr(transformers, _auto_name(c)).register(c.config_class, c, exist_ok=True)
        c.register_for_auto_class(_auto_name(c))


__all__ = ["CODE_FILES", "MODEL_CLASSES", "PREFIX", "auto_map", "copy_code", "is_pruned_type", "pruned_class",
           "pruned_config", "register"]
