"""Loading checkpoints, and saving / reloading pruned models (safetensors + config + kprune.json; no pickles)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors, save_model as save_safetensors

from kprune_lib.encoder import hf
from kprune_lib.encoder.arch import Arch, arch_table
from kprune_lib.encoder.physical import prune_physically, shape_masks

KPRUNE_FILE = "kprune.json"
WEIGHTS_FILE = "model.safetensors"
# a folder holds a tokenizer when it has one of these (fast tokenizers: tokenizer.json; WordPiece: vocab.txt;
# SentencePiece: *.model; byte-level BPE: vocab.json + merges.txt)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "sentencepiece.bpe.model", "spiece.model",
                   "spm.model", "vocab.json")
PROBE_TEXT = "The quick brown fox jumps over the lazy dog, and the movie was great."


class ModelLoadError(OSError):
    pass


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def register_auto_classes() -> None:
    """Register the pruned-model classes with the transformers auto classes (idempotent), so that stock
    `AutoModel…from_pretrained(OUT/model)` builds them without remote code. Every load path here calls it; code
    that loads pruned folders with transformers directly calls it once (or passes trust_remote_code=True)."""
    global _registered
    if not _registered:
        hf.register()
        _registered = True


_registered = False


def load_model(name_or_dir: str, qa: bool = False, device: str | torch.device = "cpu", tokenizer: str | None = None):
    """A task model and its tokenizer, in float32: a pruned folder of ours, a local HF folder or a hub id. The
    tokenizer comes from `tokenizer` (a folder or hub id) if given, else from the model's own folder or id; either
    way it must fit the model (`check_tokenizer`). Damaged files end in one `ModelLoadError` line naming them."""
    register_auto_classes()
    path = Path(name_or_dir)
    if (path / KPRUNE_FILE).is_file():
        model = load_pruned(path)
    else:
        auto = transformers.AutoModelForQuestionAnswering if qa else _head_class(name_or_dir)
        try:
            model = auto.from_pretrained(name_or_dir, dtype=torch.float32)
        except SafetensorError as e:
            raise ModelLoadError(damaged_weights(name_or_dir, e)) from None
        except (OSError, ValueError, KeyError) as e:
            fix = ("its files may be damaged or incomplete: copy them again" if path.is_dir() else
                   "pass a checkpoint folder or a hub id (offline, only local folders and cached ids work)")
            raise ModelLoadError(f"could not load model {name_or_dir!r}: {_first_line(e)} — {fix}") from None
    tok = load_tokenizer(tokenizer or name_or_dir, model, given=tokenizer is not None)
    arch_table(model)  # fail early on unsupported architectures
    return model.to(device).eval(), tok


def saved_as_token_classifier(config) -> bool:
    """Whether a checkpoint's config.json says it was saved as a token classifier (`…ForTokenClassification`)."""
    return any(a.endswith("ForTokenClassification") for a in (getattr(config, "architectures", None) or []))


def _head_class(name_or_dir: str):
    """The auto class of a non-QA checkpoint: token classification if it was saved as such, else sequence
    classification (a checkpoint without a head gets a new one of that kind)."""
    try:
        config = transformers.AutoConfig.from_pretrained(name_or_dir)
    except (OSError, ValueError, KeyError):
        return transformers.AutoModelForSequenceClassification  # its own load reports the problem
    return transformers.AutoModelForTokenClassification if saved_as_token_classifier(config) \
        else transformers.AutoModelForSequenceClassification


def weights_bytes(name_or_dir: str) -> int:
    """The size of a local checkpoint's weight files (0 for a hub id): what a copy of it needs on disk at most."""
    path = Path(name_or_dir)
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else 0


def damaged_weights(where, e: Exception) -> str:
    files = [p for p in Path(where).glob("*.safetensors")] if Path(where).is_dir() else []
    name = ", ".join(str(p) for p in files) or f"the weights of {where}"
    return (f"{name} is damaged or not a safetensors file ({_first_line(e)}): an interrupted copy or download "
            "leaves it so; copy or download it again")


def load_tokenizer(source: str, model, given: bool = False):
    """The tokenizer of `source` (a folder or hub id), checked against `model` (`check_tokenizer`). given: it was
    named with --tokenizer (the message then does not suggest it)."""
    fix = "pass the right one with --tokenizer NAME_OR_DIR" if not given else "pass another --tokenizer"
    path = Path(source)
    if path.is_dir() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"{path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); {fix} (e.g. the "
                             "checkpoint it was fine-tuned from), or save the tokenizer into the folder")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as e:
        damaged = [str(path / f) for f in TOKENIZER_FILES + ("tokenizer_config.json",) if (path / f).is_file()]
        where = f" ({', '.join(damaged)})" if damaged else ""
        raise ModelLoadError(f"could not load the tokenizer of {source!r}{where}: {_first_line(e)}; {fix}") from None
    check_tokenizer(tok, model, source, fix)
    return tok


def check_tokenizer(tok, model, source: str, fix: str = "pass the right one with --tokenizer NAME_OR_DIR") -> None:
    """A tokenizer is this model's only if its vocabulary fits the embedding (no more tokens than rows, and not a
    stub: at least half as many), its special tokens index real rows, and a short English text is not all unknown."""
    rows = model.get_input_embeddings().num_embeddings
    size = len(tok)
    if size > rows or size < rows // 2:
        raise ModelLoadError(f"the tokenizer of {source!r} has {size} tokens but the model's embedding has {rows} "
                             f"rows: it is not this model's tokenizer; {fix}")
    bad = [i for i in tok.all_special_ids if not 0 <= i < rows]
    if bad:
        raise ModelLoadError(f"the tokenizer of {source!r} has special token ids {bad} outside the model's {rows} "
                             f"embedding rows; {fix}")
    ids = [i for i in tok(PROBE_TEXT)["input_ids"] if i not in tok.all_special_ids]
    if not ids or (tok.unk_token_id is not None and all(i == tok.unk_token_id for i in ids)):
        raise ModelLoadError(f"the tokenizer of {source!r} turns plain English into unknown tokens only; {fix}")


def pruned_shape(model: torch.nn.Module | Arch) -> dict:
    """Heads and neurons per layer of a model (or its Arch) as it is now."""
    arch = Arch.of(model)
    return {"heads_per_layer": [arch.heads_in_layer(i) for i in range(arch.num_layers)],
            "neurons_per_layer": [arch.neurons_in_layer(i) for i in range(arch.num_layers)]}


def _stock_class_name(model) -> str:
    """The stock transformers class a (possibly reloaded pruned) model is built on."""
    return next(c.__name__ for c in type(model).__mro__ if c.__module__.startswith("transformers."))


def save_pruned(model: torch.nn.Module | Arch, out_dir: str | Path, tokenizer=None, info: dict | None = None) -> Path:
    """Write a (physically pruned) model, given as such or as its Arch: model.safetensors, config.json, the model
    code, tokenizer files and kprune.json.

    config.json names a kprune model type with the per-layer shapes and an `auto_map`, and the code files
    (`hf.CODE_FILES`) travel with it, so stock transformers loads the folder with `trust_remote_code=True`.
    info: extra provenance for kprune.json (kept unit indices, constraint, FLOPs, hyper-parameters …).
    """
    arch = Arch.of(model)
    model = arch.model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = pruned_shape(arch)
    model.config.dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    hf.pruned_config(model, shape["heads_per_layer"], shape["neurons_per_layer"]).save_pretrained(out_dir)
    hf.copy_code(out_dir)
    save_safetensors(model, str(out_dir / WEIGHTS_FILE))
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    meta = {"architecture": _stock_class_name(model), **shape, **(info or {})}
    (out_dir / KPRUNE_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def load_pruned(model_dir: str | Path):
    """Rebuild a model written by `save_pruned`: through the same pruned-model classes that stock transformers
    loads (`hf.modeling_kprune`); folders written before those existed (a stock config.json) are rebuilt from
    their dense skeleton, shrunk to the shape in kprune.json."""
    register_auto_classes()
    model_dir = Path(model_dir)
    try:
        meta = json.loads((model_dir / KPRUNE_FILE).read_text())
        config = transformers.AutoConfig.from_pretrained(model_dir)
        if hf.is_pruned_type(config.model_type):
            cls = getattr(hf.modeling_kprune, config.architectures[0])
        else:
            cls = getattr(transformers, meta["architecture"])
    except (OSError, ValueError, KeyError, AttributeError, IndexError, TypeError) as e:
        raise ModelLoadError(f"{model_dir} is not a pruned model folder written by kprune: {_first_line(e)}") from None
    if hf.is_pruned_type(config.model_type):
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # quiet, as before (one small file)
        try:
            model, report = cls.from_pretrained(model_dir, config=config, dtype=torch.float32, output_loading_info=True)
        except SafetensorError as e:
            raise ModelLoadError(damaged_weights(model_dir, e)) from None
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelLoadError(f"could not load the pruned model {model_dir}: {_first_line(e)}") from None
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        bad = {k: v for k, v in report.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise ModelLoadError(f"{model_dir}/{WEIGHTS_FILE} does not match its config.json ({bad}); "
                                 "re-save the model with kprune")
        return model.eval()
    model = cls(config).to(torch.float32)
    arch = Arch(model)
    shape = shape_masks(meta["heads_per_layer"], meta["neurons_per_layer"], arch.num_heads, arch.ffn_size)
    prune_physically(arch, *shape, width_multiple=1)  # the saved widths exactly (padding, if any, is in them)
    try:
        load_safetensors(model, str(model_dir / WEIGHTS_FILE), strict=True)
    except SafetensorError as e:
        raise ModelLoadError(damaged_weights(model_dir, e)) from None
    return model.eval()


