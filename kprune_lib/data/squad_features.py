"""SQuAD pre-processing (windows of the context with offsets), prediction, post-processing and evaluation.

Pre-processing: the question first, then the context, truncated to `max_length` tokens; long contexts
become several features (windows overlapping by `doc_stride` tokens). A fast tokenizer's offset mapping
ties every context token to its characters; question and special tokens get no offsets, so no answer can
start or end there. Training labels: the answer's first and last token, or the CLS position when the
answer is not inside the window (or the question is unanswerable).
Post-processing per question, over all its features: the best span among the n_best start × n_best end
candidates (end ≥ start, at most max_answer_length tokens); SQuAD 2.0 predicts "" when the null score
(CLS start + end logit, the minimum over the question's features) beats the best span's score.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from kprune_lib.data.batching import draw_sample, make_batches, mean_length
from kprune_lib.config import EVAL_BATCH_SIZE
from kprune_lib.data.glue import DataError
from kprune_lib.data.squad import QaExample, golds
from kprune_lib.data.squad_metrics import squad_scores
from kprune_lib.data.tasks import QaTask


@dataclass
class QaFeatures:
    """One entry per feature (a window of one example's context)."""

    inputs: list[dict]  # {"input_ids", ("token_type_ids")}: unpadded token id lists, as `batching.pad_batch` takes
    example_index: list[int]  # index into the example list the features were made from
    offsets: list[list[tuple[int, int] | None]]  # per token: (start, end) characters in the context, None elsewhere
    cls_index: list[int]  # position of the CLS token (null answer)
    start_positions: list[int]  # gold answer's first token; cls_index if not in this window / unanswerable
    end_positions: list[int]

    def __len__(self) -> int:
        return len(self.inputs)


def prepare_features(tokenizer, examples: list[QaExample], max_length: int, doc_stride: int) -> QaFeatures:
    """Tokenise (question, context) pairs into overlapping windows with offsets and span labels."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("SQuAD pre-processing needs a fast tokenizer (offset mapping); the checkpoint's is not")
    try:
        enc = tokenizer([e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second",
                        max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
    except Exception as e:  # tokenizers raises when a question leaves no room for a window of `doc_stride`
        raise DataError(f"SQuAD tokenisation failed with max length {max_length} and stride {doc_stride}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    feats = QaFeatures([], [], [], [], [], [])
    for f, ids in enumerate(enc["input_ids"]):
        ex_i = enc["overflow_to_sample_mapping"][f]
        ex = examples[ex_i]
        seq = enc.sequence_ids(f)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][f], seq)]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        start = end = cls
        ctx = [i for i, o in enumerate(offsets) if o is not None]
        if ex.answers and ctx:
            a_start = ex.answer_starts[0]
            a_end = a_start + len(ex.answers[0])
            if offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:
                start = max(i for i in ctx if offsets[i][0] <= a_start)  # last token starting at or before the answer
                end = min(i for i in ctx if offsets[i][1] >= a_end)  # first token ending at or after it
        feats.inputs.append({k: enc[k][f] for k in keys})
        feats.example_index.append(ex_i)
        feats.offsets.append(offsets)
        feats.cls_index.append(cls)
        feats.start_positions.append(start)
        feats.end_positions.append(end)
    return feats


@torch.no_grad()
def predict_logits(model, feats: QaFeatures, pad_id: int, batch_size: int = EVAL_BATCH_SIZE,
                   progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every feature, each trimmed to the feature's length (padding dropped)."""
    device = next(model.parameters()).device
    order = sorted(range(len(feats)), key=lambda i: len(feats.inputs[i]["input_ids"]))
    batches = make_batches([feats.inputs[i] for i in order], batch_size, pad_id, device)
    starts, ends = [None] * len(feats), [None] * len(feats)
    k = 0
    for b in tqdm(batches, desc="evaluate", leave=False, disable=not progress):
        out = model(**b)
        s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()  # (B, T)
        for row in range(s.shape[0]):
            i, n = order[k], len(feats.inputs[order[k]]["input_ids"])
            starts[i], ends[i] = s[row, :n], e[row, :n]
            k += 1
    return starts, ends


def postprocess(examples: list[QaExample], feats: QaFeatures, starts: list[np.ndarray], ends: list[np.ndarray],
                n_best: int, max_answer_length: int, version_2: bool) -> dict[str, str]:
    """Question id -> predicted answer text ("" = no answer)."""
    by_example = defaultdict(list)
    for f, ex_i in enumerate(feats.example_index):
        by_example[ex_i].append(f)
    predictions = {}
    for ex_i, ex in enumerate(examples):
        best_score, best_text, null_score = -np.inf, "", np.inf
        for f in by_example[ex_i]:
            s, e, offsets, cls = starts[f], ends[f], feats.offsets[f], feats.cls_index[f]
            null_score = min(null_score, float(s[cls] + e[cls]))
            top_s = np.argsort(s)[::-1][:n_best]
            top_e = np.argsort(e)[::-1][:n_best]
            for i in top_s:
                if offsets[i] is None:
                    continue
                for j in top_e:
                    if offsets[j] is None or j < i or j - i + 1 > max_answer_length:
                        continue
                    score = float(s[i] + e[j])
                    if score > best_score:
                        best_score, best_text = score, ex.context[offsets[i][0]:offsets[j][1]]
        if version_2 and null_score > best_score:
            best_text = ""
        predictions[ex.id] = best_text
    return predictions


def evaluate_features(model, tokenizer, task: QaTask, examples: list[QaExample], feats: QaFeatures,
                      progress: bool = False) -> dict[str, float]:
    """{"exact_match", "f1"} (percent) of a QA model on examples already turned into features."""
    starts, ends = predict_logits(model, feats, tokenizer.pad_token_id, progress=progress)
    predictions = postprocess(examples, feats, starts, ends, task.n_best, task.max_answer_length, task.version_2)
    return squad_scores(predictions, golds(examples), task.version_2)


def evaluate_squad(model, tokenizer, task: QaTask, examples: list[QaExample], max_length: int | None = None,
                   progress: bool = False) -> dict[str, float]:
    feats = prepare_features(tokenizer, examples, max_length or task.max_length, task.doc_stride)
    return evaluate_features(model, tokenizer, task, examples, feats, progress)


def resolve_seq_len(seq_len: float | str | None, task: QaTask, eval_feats: QaFeatures) -> float:
    """L_seq of the FLOPs formula: the paper's 170 (None / "reference"), the evaluation features' mean
    length ("measured"), or a given number."""
    if seq_len in (None, "reference"):
        return task.ref_seq_len
    if seq_len == "measured":
        return mean_length(eval_feats.inputs)
    value = float(seq_len)
    if value <= 0:
        raise ValueError(f"seq_len must be positive, 'measured' or 'reference', got {seq_len!r}")
    return value


def pruning_sample(feats: QaFeatures, num_tokens: int, seq_len: float, seed: int, batch_size: int, pad_id: int,
                   device=None, batch_tokens: int = 0, examples: int | None = None) -> tuple[list[dict], int]:
    """num_tokens / L_seq training features (`examples`: that many instead) drawn with replacement (seeded, as the
    authors' code), in compute batches (`batching.sample_batches`), each with its gold answer span as "labels"
    (B, 2) = (start token, end token) for the methods that need labels; and their count."""
    def features_of(idx):
        return [feats.inputs[i] | {"label": (feats.start_positions[i], feats.end_positions[i])} for i in idx]

    return draw_sample(len(feats), features_of, num_tokens=num_tokens, seq_len=seq_len, seed=seed,
                       batch_size=batch_size, pad_id=pad_id, device=device, batch_tokens=batch_tokens,
                       examples=examples)


def pruning_data(task: QaTask, tokenizer, data, *, num_tokens: int, seed: int, max_length: int, batch_size: int,
                 seq_len: float | str | None = None, device=None, progress: bool = False, batch_tokens: int = 0,
                 examples: int | None = None):
    """What `api.prune` needs for a SQuAD task, from a `squad.QaData` with both sides:
    (sample batches, #sample features, L_seq, evaluate(model) -> {"exact_match", "f1"}). examples: a method's fixed
    sample size in features (kwon: 2048), instead of num_tokens' worth."""
    eval_feats = prepare_features(tokenizer, data.eval, max_length, task.doc_stride)
    seq_len = resolve_seq_len(seq_len, task, eval_feats)
    train_feats = prepare_features(tokenizer, data.train, max_length, task.doc_stride)
    batches, n = pruning_sample(train_feats, num_tokens, seq_len, seed, batch_size, tokenizer.pad_token_id, device,
                                batch_tokens, examples)

    def evaluate(model):
        return evaluate_features(model, tokenizer, task, data.eval, eval_feats, progress)

    return batches, n, seq_len, evaluate
