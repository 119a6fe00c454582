"""Tokenisation, the pruning sample (drawn by token budget, with replacement, as the authors' code) and padded batches."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from kprune_lib.config import BATCH_OVERHEAD_TOKENS, GLUE_BATCH_SIZE
from kprune_lib.data.files import FileTask
from kprune_lib.data.glue import DataError, Examples, load_glue
from kprune_lib.data.tokens import IGNORE, TokenExamples, tokenize_words


def tokenize(tokenizer, examples: Examples, max_length: int, labels: bool = False) -> list[dict]:
    """Examples -> one dict of token id lists per example (truncated to max_length, unpadded).

    labels=True also keeps each example's gold label under "label" (for label-based baselines).
    Token classification (`tokens.TokenExamples`): always with "label", the tags aligned to the first sub-words."""
    if isinstance(examples, TokenExamples):
        return tokenize_words(tokenizer, examples, max_length)
    enc = tokenizer(examples.text_a, examples.text_b, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    feats = [{k: enc[k][i] for k in keys} for i in range(len(examples))]
    if labels:
        for f, y in zip(feats, examples.labels):
            f["label"] = y
    return feats


def mean_length(features: list[dict]) -> float:
    """Average tokenised length: L_seq of the FLOPs formula when measured on the dev set."""
    if not features:
        raise DataError("cannot measure the average sequence length of an empty set")
    return sum(len(f["input_ids"]) for f in features) / len(features)


def sample_size(pool_size: int, num_tokens: int, seq_len: float) -> int:
    """Number of sample examples: int(num_tokens / L_seq), at most the pool size (as the authors' code)."""
    return min(int(num_tokens / seq_len), pool_size)


def sample_indices(pool_size: int, num_tokens: int, seq_len: float, seed: int,
                   examples: int | None = None) -> torch.Tensor:
    """The pruning sample, drawn exactly as the authors' code draws it: the legacy numpy RandomState seeded once
    with `seed`, then `choice(pool_size, n)` with replacement, n = sample_size(...), kept in draw order
    (batches are consecutive draws). Same checkpoint, data and seed -> the authors' sample, hence their masks.

    examples: n given as a count instead (Kwon et al.'s main.py: `--num_samples`, 2048): the same draw, only its
    size differs: not derived from num_tokens and not capped by the pool (it draws with replacement)."""
    if pool_size == 0:
        raise DataError("empty pruning sample: the training split has no examples")
    if examples is not None:
        if examples < 1:
            raise DataError(f"the pruning sample needs at least one example, got {examples}")
        return torch.from_numpy(np.random.RandomState(seed).choice(pool_size, examples)).long()
    n = sample_size(pool_size, num_tokens, seq_len)
    if n < 1:
        raise DataError(f"empty pruning sample: num_tokens {num_tokens} is below one example of average length "
                        f"{seq_len:.1f}; increase --num-tokens")
    return torch.from_numpy(np.random.RandomState(seed).choice(pool_size, n)).long()


def draw_sample(pool_size: int, features_of, *, num_tokens: int, seq_len: float, seed: int, batch_size: int,
                pad_id: int, device=None, batch_tokens: int = 0, examples: int | None = None) -> tuple[list[dict], int]:
    """THE pruning sample, for every task: the example indices drawn as the authors' code draws them
    (`sample_indices`; `examples`: that many instead of num_tokens' worth), their features (`features_of(indices)`
    -> one dict per index, in draw order) in compute batches (`sample_batches`, each row tagged with its sample
    batch). Returns (batches, number of examples)."""
    idx = sample_indices(pool_size, num_tokens, seq_len, seed, examples).tolist()
    return sample_batches(features_of(idx), batch_size, pad_id, device, batch_tokens), len(idx)


def glue_sample(tokenizer, train: Examples, *, num_tokens: int, seq_len: float, seed: int, batch_size: int,
                max_length: int, device=None, batch_tokens: int = 0,
                examples: int | None = None) -> tuple[list[dict], int]:
    """The pruning sample of a GLUE task: `draw_sample` over the training examples, tokenising only the drawn ones
    (an example's tokens do not depend on the others), with their gold labels (for methods that need them)."""
    return draw_sample(len(train), lambda idx: tokenize(tokenizer, train.take(idx), max_length, labels=True),
                       num_tokens=num_tokens, seq_len=seq_len, seed=seed, batch_size=batch_size,
                       pad_id=tokenizer.pad_token_id, device=device, batch_tokens=batch_tokens, examples=examples)


@dataclass
class GlueSample:
    """A GLUE task's evaluation splits, L_seq (the mean real length of the first one, the FLOPs formula's), the
    max length used, and the pruning sample drawn from its training split."""
    eval_splits: dict[str, Examples]
    seq_len: float
    max_length: int
    batches: list[dict]
    examples: int


def load_split(task, split: str, data_dir) -> Examples:
    """One split of a GLUE task (load_glue), or of a custom task (its files, read when the task was built)."""
    return task.split(split) if isinstance(task, FileTask) else load_glue(task, split, data_dir)


def glue_pruning_sample(tokenizer, task, data_dir, config, *, device=None, batch_tokens: int = 0,
                        examples: int | None = None) -> GlueSample:
    """What every GLUE run prunes with (api.prune, the workbook's notebooks, the benchmarks): the task's data from
    data_dir (None: the hub), L_seq, and `glue_sample` with the config's num_tokens, seed, batch size and max
    length (their task defaults where None); `examples`: a method's fixed sample size (kwon: 2048)."""
    max_length = config.max_length or task.max_length
    eval_splits = {split: load_split(task, split, data_dir) for split in task.eval_splits}
    seq_len = mean_length(tokenize(tokenizer, next(iter(eval_splits.values())), max_length))
    batches, n = glue_sample(tokenizer, load_split(task, "train", data_dir), num_tokens=config.num_tokens,
                             seq_len=seq_len, seed=config.seed, batch_size=config.batch_size or GLUE_BATCH_SIZE,
                             max_length=max_length, device=device, batch_tokens=batch_tokens, examples=examples)
    return GlueSample(eval_splits, seq_len, max_length, batches, n)


def pad_batch(features: list[dict], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Pad a list of features to the longest one: input_ids, attention_mask (, token_type_ids) of shape (B, T);
    features with a "label" also give "labels" (B,) (long for class ids, float for regression scores), or for
    token classification (a list per feature) (B, T), IGNORE (-100) on padding."""
    T = max(len(f["input_ids"]) for f in features)
    out = {"input_ids": torch.full((len(features), T), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros(len(features), T, dtype=torch.long)}
    if "token_type_ids" in features[0]:
        out["token_type_ids"] = torch.zeros(len(features), T, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(f["input_ids"])
        out["attention_mask"][i, :n] = 1
        if "token_type_ids" in out:
            out["token_type_ids"][i, :n] = torch.tensor(f["token_type_ids"])
    if "label" in features[0] and isinstance(features[0]["label"], list):
        out["labels"] = torch.full((len(features), T), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            out["labels"][i, :len(f["label"])] = torch.tensor(f["label"], dtype=torch.long)
    elif "label" in features[0]:
        out["labels"] = torch.tensor([f["label"] for f in features])
    return {k: v.to(device) for k, v in out.items()}


def make_batches(features: list[dict], batch_size: int, pad_id: int, device=None) -> list[dict[str, torch.Tensor]]:
    """Consecutive batches in the given order, each padded to its own longest sequence."""
    return [pad_batch(features[i:i + batch_size], pad_id, device) for i in range(0, len(features), batch_size)]


def length_partition(lengths: list[int], batch_tokens: int, overhead_tokens: int) -> list[tuple[int, int]]:
    """Cut length-sorted (ascending) examples into consecutive batches [start, end) minimising the total cost
    Σ_batches (overhead_tokens + size · longest), each batch at most batch_tokens padded tokens (a single longer
    example is a batch of its own). overhead_tokens prices a batch's fixed cost (dispatch, small-matrix inefficiency)
    in padded tokens: 0 gives one batch per distinct length, more trades a little padding for fewer batches.
    Exact, by dynamic programming over the cut points."""
    n = len(lengths)
    lens = np.asarray(lengths, dtype=np.int64)
    best = np.zeros(n + 1, dtype=np.float64)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        longest = int(lens[j - 1])
        lo = max(0, j - max(1, batch_tokens // max(longest, 1)))
        starts = np.arange(lo, j)
        cost = best[lo:j] + overhead_tokens + (j - starts) * longest
        k = int(np.argmin(cost))  # the first minimum: the largest batch among equals
        best[j], cut[j] = cost[k], starts[k]
    bounds, j = [], n
    while j > 0:
        bounds.append((int(cut[j]), j))
        j = int(cut[j])
    return bounds[::-1]


def sample_batches(features: list[dict], batch_size: int, pad_id: int, device=None,
                   batch_tokens: int = 0, overhead_tokens: int = BATCH_OVERHEAD_TOKENS) -> list[dict[str, torch.Tensor]]:
    """The pruning sample (features in draw order) as compute batches, each row tagged with "group": its sample
    batch, i.e. the `batch_size` consecutive draws whose mean loss the method differentiates.

    batch_tokens 0: compute on the sample batches themselves, as drawn (the reference's padding).
    batch_tokens > 0: compute on length-sorted batches of at most batch_tokens padded tokens (at least one example
    each), cut where padding and per-batch overhead cost least (`length_partition`): padding is a few percent.
    The sample and its grouping are unchanged."""
    groups = [i // batch_size for i in range(len(features))]
    if batch_tokens <= 0:
        chunks = [list(range(i, min(i + batch_size, len(features)))) for i in range(0, len(features), batch_size)]
    else:
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))  # stable: ties in draw order
        bounds = length_partition([len(features[i]["input_ids"]) for i in order], batch_tokens, overhead_tokens)
        chunks = [order[a:b] for a, b in bounds]
    out = []
    for chunk in chunks:
        b = pad_batch([features[i] for i in chunk], pad_id, device)
        b["group"] = torch.tensor([groups[i] for i in chunk], dtype=torch.long, device=device)
        out.append(b)
    return out


def padded_tokens(batches: list[dict]) -> int:
    return sum(int(b["input_ids"].numel()) for b in batches)


def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
