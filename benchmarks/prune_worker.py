"""One pruning run in its own process (so peak RSS belongs to one schedule); writes a JSON result.

Used by benchmarks/bench.py; run it directly for a single measurement:
  python benchmarks/prune_worker.py --model ../shared/models/minilm-l6-mrpc --task mrpc --data-dir ../shared/data/glue \
      --schedule cached --num-tokens 20000 --out /tmp/cached.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch
import transformers

from kprune_lib.batching import make_batches, mean_length, sample_indices, tokenize
from kprune_lib.config import GLUE_BATCH_SIZE, PruneConfig
from kprune_lib.glue_data import load_glue
from kprune_lib.io import load_model
from kprune_lib.prune import kprune
from kprune_lib.tasks import get_glue_task

SHAPES = {  # random-weight models of real shapes, for timing
    "bert-base": dict(hidden_size=768, num_attention_heads=12, num_hidden_layers=12, intermediate_size=3072),
    "distilbert-base": dict(dim=768, n_heads=12, n_layers=6, hidden_dim=3072),
}


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_model(shape: str, vocab_size: int, num_labels: int):
    torch.manual_seed(0)
    if shape.startswith("distilbert"):
        cfg = transformers.DistilBertConfig(vocab_size=vocab_size, num_labels=num_labels, **SHAPES[shape])
    else:
        cfg = transformers.BertConfig(vocab_size=vocab_size, num_labels=num_labels, **SHAPES[shape])
    return transformers.AutoModelForSequenceClassification.from_config(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="checkpoint (its tokenizer is always used)")
    p.add_argument("--shape", default=None, choices=sorted(SHAPES), help="replace the weights by a random model of this shape")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--schedule", required=True)
    p.add_argument("--num-tokens", type=int, required=True)
    p.add_argument("--constraint", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", default=None, choices=["bf16", "fp16"])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    cfg = PruneConfig(constraint=a.constraint, num_tokens=a.num_tokens, schedule=a.schedule)
    task = get_glue_task(a.task)
    device = torch.device(a.device)
    model, tok = load_model(a.model)
    if a.shape:
        model = random_model(a.shape, tok.vocab_size, task.num_labels)
    model.to(device)
    max_length = task.max_length
    seq_len = mean_length(tokenize(tok, load_glue(task, task.eval_splits[0], a.data_dir), max_length))
    train = tokenize(tok, load_glue(task, "train", a.data_dir), max_length)
    idx = sample_indices(len(train), cfg.num_tokens, seq_len, cfg.seed)
    batches = make_batches([train[i] for i in idx.tolist()], GLUE_BATCH_SIZE, tok.pad_token_id, device)
    rss_before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = kprune(model, batches, task.problem, constraint=cfg.constraint, seq_len=seq_len, lam_pred=cfg.lam_pred,
                 lam_rep=cfg.lam_rep, mu=cfg.mu, temperature=cfg.temperature, schedule=a.schedule, progress=False,
                 autocast=a.autocast)
    wall = time.perf_counter() - t0
    out = {
        "schedule": a.schedule, "num_tokens": a.num_tokens, "sample_examples": len(idx),
        "sample_tokens": int(sum(b["attention_mask"].sum() for b in batches)), "seq_len": seq_len,
        "layers": len(res.head_mask), "wall_seconds": wall, "stage_seconds": res.timings,
        "peak_rss_mb": peak_rss_mb(), "rss_before_pruning_mb": rss_before,
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "head_mask": res.head_mask.int().tolist(), "neuron_mask": res.neuron_mask.int().tolist(),
        "flops_dense": res.flops_dense, "flops_pruned": res.flops_pruned, "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    with open(a.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
