"""Latency of a model over a task's real dev set: pre-tokenised batches, warm-up, median of repeats."""
from __future__ import annotations

import statistics
import time

import torch

from kprune_lib.batching import make_batches


@torch.inference_mode()
def dev_latency(model, features: list[dict], pad_id: int, batch_size: int, repeats: int = 5,
                max_examples: int | None = None) -> float:
    """Median seconds for one pass over the dev features (dynamic padding, dataset order)."""
    feats = features[:max_examples] if max_examples else features
    device = next(model.parameters()).device
    batches = make_batches(feats, batch_size, pad_id, device)  # tokenisation and padding excluded from timing

    def one_pass():
        for b in batches:
            model(**b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    one_pass()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
