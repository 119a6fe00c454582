"""One pruning run in its own process (so peak RSS belongs to one run); writes a JSON result.

Used by benchmarks/bench.py; run it directly for a single measurement:
  python benchmarks/prune_worker.py --model ../shared/models/minilm-l6-mrpc --task mrpc --data-dir ../shared/data/glue \
      --schedule cached --num-tokens 20000 --out /tmp/cached.json            # default batch_tokens of the device
  ... --batch-tokens 0                                                       # compute on the sample as drawn

Besides the pruning run it times the machine-independent unit of the benchmark, `dense_pass_seconds`: one plain
dense forward + backward over the sample as drawn (batches of 32 consecutive draws, each padded to its longest),
through the stock Hugging Face forward, with all-ones mask leaves on every sublayer's output projection and the
task's predictive loss against the model's own detached soft targets, differentiated to the mask leaves only.
`wall_seconds / dense_pass_seconds` is the pruning cost in dense passes.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import time

import torch
import transformers

from kprune_lib.api import compute_batch_tokens
from kprune_lib.encoder.arch import Arch
from kprune_lib.data.batching import glue_pruning_sample, padded_tokens
from kprune_lib.config import PruneConfig
from kprune_lib.artifacts.checkpoint import load_model
from kprune_lib.encoder.masks import apply_masks
from kprune_lib.method.measurement import predictive_loss, teacher_signal
from kprune_lib.method.loop import kprune
from kprune_lib.data.tasks import get_glue_task

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


def build_model(path: str, shape: str | None, num_labels: int, device: torch.device):
    model, tok = load_model(path)
    if shape:
        model = random_model(shape, tok.vocab_size, num_labels)
    return model.to(device).eval(), tok


def model_inputs(arch: Arch, batch: dict) -> dict:
    """The stock forward's keyword arguments (no "group"; token_type_ids only where the embedding takes them)."""
    keys = ("input_ids", "attention_mask") + (("token_type_ids",) if arch.table.token_types else ())
    return {k: batch[k] for k in keys if k in batch}


def dense_pass_seconds(model, batches: list[dict], problem: str, temperature: float, repeats: int = 3) -> float:
    """Median (over `repeats`, after one warm-up pass) wall seconds of one plain dense forward + backward over
    `batches` (the sample as drawn): the stock HF forward with an all-ones mask leaf (width,) requiring grad on every
    sublayer's output projection (`masks.apply_masks`), the task's predictive loss (batch mean) against the
    model's own detached soft targets (computed beforehand, not timed), `torch.autograd.grad` to the leaves.
    Parameters do not require grad."""
    arch = Arch(model)
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    inputs = [model_inputs(arch, b) for b in batches]
    with torch.no_grad():
        targets = [teacher_signal(model(**x).logits, problem, temperature).detach() for x in inputs]
    cuda = device.type == "cuda"

    def one_pass() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x, target in zip(inputs, targets):
            leaves = {s: torch.ones(arch.out_proj(s).in_features, device=device, requires_grad=True)
                      for s in range(2 * arch.num_layers)}
            with apply_masks(arch, leaves):
                loss = predictive_loss(model(**x).logits, target, problem, temperature)
            torch.autograd.grad(loss, list(leaves.values()))
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    one_pass()  # warm-up
    return statistics.median(one_pass() for _ in range(repeats))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="checkpoint (its tokenizer is always used)")
    p.add_argument("--shape", default=None, choices=sorted(SHAPES),
                   help="replace the weights by a random model of this shape")
    p.add_argument("--task", required=True, choices=["mrpc", "stsb", "sst2"])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--schedule", required=True, choices=["cached", "naive"])
    p.add_argument("--num-tokens", type=int, required=True)
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="padded tokens per length-sorted compute batch (default: the device's, "
                        "kprune_lib.config.BATCH_TOKENS); 0 = the sample batches as drawn")
    p.add_argument("--constraint", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", default=None, choices=["bf16", "fp16"])
    p.add_argument("--dense-repeats", type=int, default=3, help="timed dense passes (median; after one warm-up)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    device = torch.device(a.device)
    cfg = PruneConfig(constraint=a.constraint, num_tokens=a.num_tokens, schedule=a.schedule,
                      batch_tokens=a.batch_tokens)
    batch_tokens = compute_batch_tokens(cfg, device)
    task = get_glue_task(a.task)
    model, tok = build_model(a.model, a.shape, task.num_labels, device)
    drawn = glue_pruning_sample(tok, task, a.data_dir, cfg, device=device)  # batches as drawn: their padding
    as_drawn, n_sample, seq_len, max_length = drawn.batches, drawn.examples, drawn.seq_len, drawn.max_length
    batches = as_drawn if batch_tokens == 0 else \
        glue_pruning_sample(tok, task, a.data_dir, cfg, device=device, batch_tokens=batch_tokens).batches
    sample_tokens = int(sum(int(b["attention_mask"].sum()) for b in as_drawn))
    drawn_tokens, computed_tokens = padded_tokens(as_drawn), padded_tokens(batches)

    gc.collect()
    rss_before = peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = kprune(model, batches, task.problem, constraint=cfg.constraint, seq_len=seq_len, lam_pred=cfg.lam_pred,
                 lam_rep=cfg.lam_rep, mu=cfg.mu, temperature=cfg.temperature, schedule=a.schedule, progress=False,
                 autocast=a.autocast)
    wall = time.perf_counter() - t0
    peak_rss = peak_rss_mb()  # before the dense pass: the peak belongs to the pruning run
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    # the dense pass on a fresh copy of the dense model (kprune pruned `model` in place)
    del model
    gc.collect()
    dense, _ = build_model(a.model, a.shape, task.num_labels, device)
    dense_s = dense_pass_seconds(dense, as_drawn, task.problem, cfg.temperature, a.dense_repeats) \
        if a.dense_repeats > 0 else None

    out = {
        "task": a.task, "schedule": a.schedule, "batch_tokens": batch_tokens, "num_tokens": a.num_tokens,
        "sample_examples": n_sample, "sample_tokens": sample_tokens, "seq_len": seq_len, "max_length": max_length,
        "padded_tokens_drawn": drawn_tokens, "padded_tokens_computed": computed_tokens,
        "padding_ratio_drawn": drawn_tokens / sample_tokens, "padding_ratio_computed": computed_tokens / sample_tokens,
        "compute_batches": len(batches), "drawn_batches": len(as_drawn),
        "layers": len(res.head_mask), "wall_seconds": wall, "stage_seconds": res.timings,
        "dense_pass_seconds": dense_s, "dense_passes": wall / dense_s if dense_s else None,
        "peak_rss_mb": peak_rss, "rss_before_pruning_mb": rss_before, "cuda_max_allocated_mb": cuda_peak,
        "head_mask": res.head_mask.int().tolist(), "neuron_mask": res.neuron_mask.int().tolist(),
        "flops_dense": res.flops_dense, "flops_pruned": res.flops_pruned, "threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    with open(a.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
