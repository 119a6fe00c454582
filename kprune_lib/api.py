"""The public API behind the CLI: `prune` and `evaluate` take the same names as the command options."""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from . import __version__
from .batching import make_batches, mean_length, sample_indices, tokenize
from .config import GLUE_BATCH_SIZE, PruneConfig
from .evaluate import evaluate_glue
from .flops import encoder_params
from .glue_data import load_glue
from .io import atomic_dir, load_model, save_pruned
from .physical import prune_physically
from .prune import kprune
from .tasks import get_glue_task

log = logging.getLogger(__name__)


class TaskMismatch(ValueError):
    pass


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available; use --device cpu")
    return torch.device(device)


def check_task_head(model, task) -> None:
    """The checkpoint's output layer must match the task (label count, QA vs classification)."""
    if hasattr(model, "qa_outputs"):
        raise TaskMismatch(f"{type(model).__name__} is a question-answering model; {task.name} needs a "
                           "sequence-classification checkpoint")
    n = model.config.num_labels
    if n != task.num_labels:
        raise TaskMismatch(f"checkpoint has {n} output label(s) but {task.name} needs {task.num_labels}; "
                           "use a checkpoint fine-tuned on this task (kprune finetune)")


def _eval_splits(task, data_dir):
    return {split: load_glue(task, split, data_dir) for split in task.eval_splits}


def evaluate(model: str, task: str, data_dir: str | None = None, device: str = "auto",
             max_length: int | None = None, progress: bool = True) -> dict[str, float]:
    """Metrics of a checkpoint (ours or any HF one) on the task's dev set(s)."""
    t = get_glue_task(task)
    dev = resolve_device(device)
    m, tok = load_model(model, device=dev)
    check_task_head(m, t)
    return evaluate_glue(m, tok, t, _eval_splits(t, data_dir), max_length or t.max_length, progress)


def prune(model: str, task: str, output: str, data_dir: str | None = None, device: str = "auto",
          overwrite: bool = False, progress: bool = True, config: PruneConfig | None = None, **overrides) -> dict:
    """Prune a fine-tuned checkpoint on a GLUE task; writes OUT/model/ and OUT/summary.json atomically.

    Hyper-parameters come from `config` (default `PruneConfig()`), with keyword overrides
    (constraint=…, num_tokens=…, seed=…, lam_pred=…, lam_rep=…, mu=…, temperature=…, tuning=…, schedule=…).
    Returns the summary dict.
    """
    cfg = replace(config or PruneConfig(), **overrides)
    t = get_glue_task(task)
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output folder {out} exists and is not empty; choose another --output or pass --overwrite")
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    m, tok = load_model(model, device=dev)
    check_task_head(m, t)
    max_length = cfg.max_length or t.max_length
    batch_size = cfg.batch_size or GLUE_BATCH_SIZE

    eval_splits = _eval_splits(t, data_dir)
    train = load_glue(t, "train", data_dir)
    seq_len = mean_length(tokenize(tok, next(iter(eval_splits.values())), max_length))
    train_feats = tokenize(tok, train, max_length)
    idx = sample_indices(len(train_feats), cfg.num_tokens, seq_len, cfg.seed)
    batches = make_batches([train_feats[i] for i in idx.tolist()], batch_size, tok.pad_token_id, dev)
    sample_tokens = int(sum(b["attention_mask"].sum() for b in batches))

    dense_metrics = evaluate_glue(m, tok, t, eval_splits, max_length, progress)
    params_dense = encoder_params(m)
    result = kprune(m, batches, t.problem, constraint=cfg.constraint, seq_len=seq_len, lam_pred=cfg.lam_pred,
                    lam_rep=cfg.lam_rep, mu=cfg.mu, temperature=cfg.temperature, tuning=cfg.tuning,
                    schedule=cfg.schedule, ridge=cfg.ridge, progress=progress)
    prune_physically(m, result.head_mask, result.neuron_mask)
    pruned_metrics = evaluate_glue(m, tok, t, eval_splits, max_length, progress)

    summary = {
        "task": t.name, "model": str(model), "method": "kprune" if cfg.tuning else "kprune-no-tuning",
        "constraint": cfg.constraint, "num_tokens": cfg.num_tokens, "seed": cfg.seed,
        "sample_examples": len(idx), "sample_tokens": sample_tokens, "seq_len": seq_len,
        "flops_dense": result.flops_dense, "flops_pruned": result.flops_pruned,
        "flops_removed": 1.0 - result.flops_pruned / result.flops_dense,
        "params_dense": params_dense, "params_pruned": encoder_params(m),
        "metric": t.main_metric, "dense": dense_metrics, "pruned": pruned_metrics,
        "heads_kept": result.heads_kept, "neurons_kept": result.neurons_kept,
        "pruning_seconds": result.seconds, "stage_seconds": result.timings,
        "ridge_fallbacks": result.ridge_fallbacks, "sublayers": result.sublayers,
        "hyperparameters": cfg.to_dict(), "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "versions": {"kprune_lib": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    info = {"kept_heads": [r.nonzero().flatten().tolist() for r in result.head_mask],
            "kept_neurons": [r.nonzero().flatten().tolist() for r in result.neuron_mask],
            **{k: summary[k] for k in ("task", "model", "constraint", "seq_len", "flops_dense", "flops_pruned",
                                       "flops_removed", "hyperparameters", "ridge_fallbacks")}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_pruned(m.cpu(), tmp / "model", tok, info)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
