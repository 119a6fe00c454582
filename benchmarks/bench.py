"""Pruning cost (cached vs naive schedule, side by side) and pruned-model latency.

  python benchmarks/bench.py --quick        # MiniLM MRPC, 20000 tokens (+ latency); a few minutes on 2 cores
  python benchmarks/bench.py                # + 100000 tokens (no latency), BERT-base- and DistilBERT-shaped random models
  python benchmarks/bench.py --check-only --num-tokens 1000   # correctness only: identical masks

Every run appends rows to benchmarks/RESULTS.md and writes benchmarks/results/<date>-<case>.json;
the last line printed is one JSON object summarising the first case.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kprune_lib.batching import make_batches, tokenize  # noqa: E402
from kprune_lib.glue_data import load_glue  # noqa: E402
from kprune_lib.io import load_model  # noqa: E402
from kprune_lib.physical import prune_physically  # noqa: E402
from kprune_lib.tasks import get_glue_task  # noqa: E402
from kprune_lib.workbook import time_forward  # noqa: E402


def dev_latency(model, features: list[dict], pad_id: int, batch_size: int, repeats: int,
                max_examples: int | None = None) -> float:
    """Median seconds of one pass over the dev features: pre-tokenised, dynamic padding, dataset order."""
    batches = make_batches(features[:max_examples], batch_size, pad_id, next(model.parameters()).device)
    return time_forward(model, batches, repeats)

SHARED = Path(os.environ.get("KPRUNE_SHARED", HERE.parent.parent / "shared"))
MRPC = str(SHARED / "models" / "minilm-l6-mrpc")
GLUE = str(SHARED / "data" / "glue")


def bound(layers: int) -> float:
    """Passes of the cached schedule over those of the naive one: (L + ½) / 2L."""
    return (layers + 0.5) / (2 * layers)


def run_worker(schedule: str, model: str, tokens: int, shape: str | None, device: str, autocast: str | None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, str(HERE / "prune_worker.py"), "--model", model, "--task", "mrpc", "--data-dir", GLUE,
           "--schedule", schedule, "--num-tokens", str(tokens), "--device", device, "--out", path]
    if shape:
        cmd += ["--shape", shape]
    if autocast:
        cmd += ["--autocast", autocast]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = json.loads(Path(path).read_text())
    os.unlink(path)
    return result


def mask_difference(a: dict, b: dict) -> int:
    """Number of units (heads + neurons) on which two runs disagree."""
    ha, hb = torch.tensor(a["head_mask"]), torch.tensor(b["head_mask"])
    na, nb = torch.tensor(a["neuron_mask"]), torch.tensor(b["neuron_mask"])
    return int((ha != hb).sum() + (na != nb).sum())


def latency_case(model_path: str, shape: str | None, head_mask, neuron_mask, device: str, repeats: int) -> dict:
    """Dense vs physically pruned latency over MRPC dev, batch 32 and batch 1."""
    task = get_glue_task("mrpc")
    dense, tok = load_model(model_path)
    if shape:
        sys.path.insert(0, str(HERE))
        from prune_worker import random_model

        dense = random_model(shape, tok.vocab_size, task.num_labels)
    dense.to(device)
    feats = tokenize(tok, load_glue(task, "validation", GLUE), task.max_length)
    if not dense.config.model_type == "bert":
        feats = [{k: v for k, v in f.items() if k != "token_type_ids"} for f in feats]
    pruned = prune_physically(copy.deepcopy(dense), torch.tensor(head_mask).bool(), torch.tensor(neuron_mask).bool())
    out = {}
    for name, bs, n in (("b32", 32, None), ("b1", 1, 64)):
        d = dev_latency(dense, feats, tok.pad_token_id, bs, repeats, n)
        p = dev_latency(pruned, feats, tok.pad_token_id, bs, repeats, n)
        out[name] = {"dense_s": d, "pruned_s": p, "speedup": d / p}
    # a fully pruned attention sublayer is skipped entirely: all heads of the upper half of layers removed
    L = len(head_mask)
    no_attn = torch.tensor(head_mask).bool().clone()
    no_attn[L // 2:] = False
    skipped = prune_physically(copy.deepcopy(dense), no_attn, torch.tensor(neuron_mask).bool())
    p = dev_latency(skipped, feats, tok.pad_token_id, 32, repeats)
    out["no_attention_upper_half_b32"] = {"pruned_s": p, "speedup": out["b32"]["dense_s"] / p,
                                          "heads_kept": no_attn.sum(1).tolist()}
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def bench_case(name: str, model: str, tokens: int, shape: str | None, device: str, autocast: str | None,
               latency: bool, repeats: int) -> dict:
    print(f"[{name}] cached ...", flush=True)
    cached = run_worker("cached", model, tokens, shape, device, autocast)
    print(f"[{name}] naive ...", flush=True)
    naive = run_worker("naive", model, tokens, shape, device, autocast)
    flops_ratio = cached["flops_dense"] / cached["flops_pruned"]
    row = {
        "case": name, "model": shape or Path(model).name, "num_tokens": tokens, "sample_tokens": cached["sample_tokens"],
        "device": device if device == "cpu" else torch.cuda.get_device_name(0), "autocast": autocast,
        "cached_seconds": cached["wall_seconds"], "naive_seconds": naive["wall_seconds"],
        "cached_over_naive_time": cached["wall_seconds"] / naive["wall_seconds"], "bound": bound(cached["layers"]),
        "masks_identical": mask_difference(cached, naive) == 0, "mask_units_differing": mask_difference(cached, naive),
        "peak_mem_cached_mb": cached["peak_rss_mb"], "peak_mem_naive_mb": naive["peak_rss_mb"],
        "rss_before_pruning_mb": cached["rss_before_pruning_mb"],
        "cuda_max_allocated_cached_mb": cached["cuda_max_allocated_mb"],
        "cuda_max_allocated_naive_mb": naive["cuda_max_allocated_mb"],
        "stage_seconds_cached": cached["stage_seconds"], "stage_seconds_naive": naive["stage_seconds"],
        "flops_ratio": flops_ratio, "threads": cached["threads"],
    }
    if latency:
        lat = latency_case(model, shape, cached["head_mask"], cached["neuron_mask"], device, repeats)
        row.update(latency=lat, latency_speedup=lat["b32"]["speedup"],
                   speedup_over_flops_ratio=lat["b32"]["speedup"] / flops_ratio)
    return row


def write_results(rows: list[dict]) -> None:
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")
    (HERE / "results").mkdir(exist_ok=True)
    for r in rows:
        (HERE / "results" / f"{stamp.replace(':', '')}-{r['case']}.json").write_text(json.dumps(r, indent=2))
    md = HERE / "RESULTS.md"
    if not md.exists():
        md.write_text("# Benchmark results\n\nWritten by `benchmarks/bench.py` (one row per case and run; newest last).\n"
                      "Times are wall seconds of the whole K-prune loop; memory is the worker process's peak RSS.\n\n"
                      "| date | machine | device | versions | case | tokens | cached s | naive s | cached/naive | bound "
                      "| masks identical | peak RSS cached MB | peak RSS naive MB | latency speedup b32 | FLOPs ratio "
                      "| speedup/FLOPs ratio |\n|" + "---|" * 16 + "\n")
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    with md.open("a") as f:
        for r in rows:
            lat, ratio = r.get("latency_speedup"), r.get("speedup_over_flops_ratio")
            f.write(f"| {stamp} | {machine()} | {r['device']}{' ' + r['autocast'] if r['autocast'] else ''} | {versions} "
                    f"| {r['case']} | {r['num_tokens']} | {r['cached_seconds']:.1f} | {r['naive_seconds']:.1f} "
                    f"| {r['cached_over_naive_time']:.3f} | {r['bound']:.3f} | {r['masks_identical']} "
                    f"| {r['peak_mem_cached_mb']:.0f} | {r['peak_mem_naive_mb']:.0f} "
                    f"| {f'{lat:.2f}' if lat else '–'} | {r['flops_ratio']:.2f} "
                    f"| {f'{ratio:.2f}' if lat else '–'} |\n")


def print_table(rows: list[dict]) -> None:
    cols = ["case", "num_tokens", "cached_seconds", "naive_seconds", "cached_over_naive_time", "bound",
            "masks_identical", "peak_mem_cached_mb", "peak_mem_naive_mb", "latency_speedup", "flops_ratio"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "–")) for c in cols))
    for r in rows:
        print(f"[{r['case']}] stage split cached: " +
              ", ".join(f"{k} {v:.1f}s" for k, v in sorted(r["stage_seconds_cached"].items(), key=lambda kv: -kv[1])))
        print(f"[{r['case']}] stage split naive:  " +
              ", ".join(f"{k} {v:.1f}s" for k, v in sorted(r["stage_seconds_naive"].items(), key=lambda kv: -kv[1])))


CASE_KINDS = ("minilm", "minilm-100k", "bert-base-shape", "distilbert-shape")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="MiniLM MRPC at 20000 tokens only")
    p.add_argument("--check-only", action="store_true", help="masks only: no latency, nothing written")
    p.add_argument("--num-tokens", type=int, default=20000, help="tokens of the quick / check case")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autocast", default=None, choices=["bf16", "fp16"], help="measurement passes in lower precision")
    p.add_argument("--repeats", type=int, default=5, help="latency repeats (median)")
    p.add_argument("--shape-tokens", type=int, default=5000,
                   help="sample tokens for the BERT-base- and DistilBERT-shaped timing cases (20000+ on a GPU)")
    p.add_argument("--cases", default=",".join(CASE_KINDS),
                   help="full run only: comma-separated subset of " + ", ".join(CASE_KINDS))
    a = p.parse_args()
    kinds = [k.strip() for k in a.cases.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(CASE_KINDS))
    if unknown or not kinds:
        p.error(f"unknown case(s) {unknown or a.cases!r}; choose from {', '.join(CASE_KINDS)}")
    # kind -> (case, model, tokens, random-weight shape, measure latency)
    st = a.shape_tokens
    all_cases = {
        "minilm": (f"minilm-mrpc-{a.num_tokens // 1000}k", MRPC, a.num_tokens, None, not a.check_only),
        "minilm-100k": ("minilm-mrpc-100k", MRPC, 100_000, None, False),
        "bert-base-shape": (f"bert-base-shape-{st // 1000}k", MRPC, st, "bert-base", True),
        "distilbert-shape": (f"distilbert-shape-{st // 1000}k", MRPC, st, "distilbert-base", True),
    }
    cases = [all_cases["minilm"]] if a.quick or a.check_only else [all_cases[k] for k in CASE_KINDS if k in kinds]
    rows = []
    for name, model, tokens, shape, latency in cases:
        rows.append(bench_case(name, model, tokens, shape, a.device, a.autocast, latency=latency, repeats=a.repeats))
    print_table(rows)
    if not a.check_only:
        write_results(rows)
    keys = ["cached_over_naive_time", "bound", "masks_identical", "mask_units_differing", "peak_mem_cached_mb",
            "peak_mem_naive_mb", "latency_speedup", "flops_ratio", "speedup_over_flops_ratio", "device", "num_tokens"]
    print(json.dumps({k: rows[0].get(k) for k in keys}))


if __name__ == "__main__":
    main()
