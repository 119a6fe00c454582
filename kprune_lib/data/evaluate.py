"""Evaluation of a (pruned or dense) model on a GLUE task's dev set, through the Hugging Face forward."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from kprune_lib.data import metrics
from kprune_lib.data.batching import make_batches, tokenize
from kprune_lib.config import EVAL_BATCH_SIZE
from kprune_lib.data.glue import Examples
from kprune_lib.data.tasks import GlueTask


@torch.no_grad()
def predict(model, features: list[dict], pad_id: int, batch_size: int = EVAL_BATCH_SIZE, progress: bool = False) -> np.ndarray:
    """Logits (n, C) in the order of `features`; batches are formed by length to limit padding."""
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    batches = make_batches([features[i] for i in order], batch_size, pad_id, device)
    out = [model(**b).logits.float().cpu() for b in tqdm(batches, desc="evaluate", leave=False, disable=not progress)]
    logits = torch.cat(out).numpy()
    result = np.empty_like(logits)
    result[order] = logits
    return result


def score(task: GlueTask, logits: np.ndarray, labels: list) -> dict[str, float]:
    pred = logits[:, 0] if task.problem == "regression" else logits.argmax(-1)
    return metrics.compute(task.metrics, pred, labels)


def evaluate_glue(model, tokenizer, task: GlueTask, splits: dict[str, Examples], max_length: int,
                  progress: bool = False) -> dict[str, float]:
    """Metrics on each evaluation split; keys of the second split (MNLI mismatched) get a `_mm` suffix."""
    result = {}
    for k, (split, examples) in enumerate(splits.items()):
        feats = tokenize(tokenizer, examples, max_length)
        scores = score(task, predict(model, feats, tokenizer.pad_token_id, progress=progress), examples.labels)
        result.update({(name if k == 0 else f"{name}_mm"): v for name, v in scores.items()})
    return result
