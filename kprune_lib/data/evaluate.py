"""Evaluation of a (pruned or dense) model on a GLUE task's dev set, through the Hugging Face forward."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from kprune_lib.data import metrics
from kprune_lib.data.batching import make_batches, pad_batch, tokenize
from kprune_lib.config import COLLAPSE_SD_FRACTION, EVAL_BATCH_SIZE
from kprune_lib.data.glue import Examples
from kprune_lib.data.tasks import GlueTask
from kprune_lib.data.tokens import IGNORE


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


class Scores(dict):
    """Metrics by name (a plain dict to every reader and to JSON), and `collapsed`: whether the model's predictions
    on the (first) evaluation split collapsed (see `collapsed`)."""
    collapsed: bool = False


def predictions(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if task.problem == "regression" else logits.argmax(-1)


def score(task: GlueTask, logits: np.ndarray, labels: list) -> dict[str, float]:
    return metrics.compute(task.metrics, predictions(task, logits), labels)


def collapsed(task: GlueTask, logits: np.ndarray, labels: list) -> bool:
    """A classifier that predicts one class for every example, or a regression model whose predictions hardly vary
    (sd below config.COLLAPSE_SD_FRACTION of the labels' sd): its metric is the data's, not the model's."""
    pred = predictions(task, logits)
    if task.problem == "regression":
        return bool(np.std(pred) < COLLAPSE_SD_FRACTION * np.std(np.asarray(labels, dtype=float)))
    return len(np.unique(pred)) == 1


@torch.no_grad()
def predict_tokens(model, features: list[dict], pad_id: int, batch_size: int = EVAL_BATCH_SIZE,
                   progress: bool = False) -> tuple[list[list[int]], list[list[int]]]:
    """Token classification: per feature, (gold, predicted) class ids at its scored positions (label != -100, the
    first sub-word of each word), in the order of `features`; batches are formed by length."""
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    gold, pred = [None] * len(features), [None] * len(features)
    for start in tqdm(range(0, len(order), batch_size), desc="evaluate", leave=False, disable=not progress):
        rows = order[start:start + batch_size]
        b = pad_batch([features[i] for i in rows], pad_id, device)
        labels = b.pop("labels")
        argmax = model(**b).logits.argmax(-1)
        for r, i in enumerate(rows):
            scored = labels[r] != IGNORE
            gold[i], pred[i] = labels[r][scored].tolist(), argmax[r][scored].tolist()
    return gold, pred


def evaluate_tokens(model, tokenizer, task, splits: dict, max_length: int, progress: bool = False) -> Scores:
    """Token classification on the (first) evaluation split: seqeval's entity-level F1, precision, recall and token
    accuracy over the scored words (those truncation keeps, as run_ner.py scores). `Scores.collapsed`: every scored
    word gets the same tag."""
    examples = next(iter(splits.values()))
    gold, pred = predict_tokens(model, tokenize(tokenizer, examples, max_length), tokenizer.pad_token_id,
                                progress=progress)
    names = task.label_names
    result = Scores(metrics.entity_scores([[names[i] for i in g] for g in gold], [[names[i] for i in p] for p in pred]))
    result.collapsed = len({i for p in pred for i in p}) == 1
    return result


def evaluate_glue(model, tokenizer, task: GlueTask, splits: dict[str, Examples], max_length: int,
                  progress: bool = False) -> Scores:
    """Metrics on each evaluation split; keys of the second split (MNLI mismatched) get a `_mm` suffix. The result
    also says whether the predictions on the first split collapsed (`Scores.collapsed`). Token classification:
    `evaluate_tokens`."""
    if task.problem == "token":
        return evaluate_tokens(model, tokenizer, task, splits, max_length, progress)
    result = Scores()
    for k, (split, examples) in enumerate(splits.items()):
        feats = tokenize(tokenizer, examples, max_length)
        logits = predict(model, feats, tokenizer.pad_token_id, progress=progress)
        result.update({(name if k == 0 else f"{name}_mm"): v for name, v in score(task, logits, examples.labels).items()})
        if k == 0:
            result.collapsed = collapsed(task, logits, examples.labels)
    return result
