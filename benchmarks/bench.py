"""Pruning cost in dense passes, padding, schedules side by side, and pruned-model latency.

  python benchmarks/bench.py --quick        # MiniLM MRPC, STS-B, SST-2 at 20000 tokens (+ latency)
  python benchmarks/bench.py                # every case of CASES (+ MRPC 100k, BERT-base- and DistilBERT-shaped models)
  python benchmarks/bench.py --cases mrpc,bert-base-shape --skip-slow-naive
  python benchmarks/bench.py --check-only --num-tokens 1000   # correctness only: identical masks, nothing written

Every case runs three pruning processes (benchmarks/prune_worker.py, one process each, so peak RSS is per run):
  sorted  the cached schedule on length-sorted compute batches of the device's default batch_tokens (the default run)
  drawn   the cached schedule on the sample batches as drawn (batch_tokens 0: 32 consecutive draws, padded)
  naive   the naive schedule on the batches as drawn (the reference's cost model); `--skip-slow-naive` skips it on
          the cases marked slow
The masks must be identical across the three. The unit of cost is one dense pass (`dense_pass_seconds`, measured
in each worker: a plain dense forward + backward over the sample as drawn, through the stock Hugging Face forward,
to all-ones mask leaves; see prune_worker.py): dense_passes = pruning wall seconds / dense pass seconds, which
does not depend on the machine's speed. Latency (dense vs physically pruned model) is measured on the task's dev
set sorted by length and batched (batch 32, and batch 1 on 64 examples spread over the lengths), as deployed: the
pruned model as kprune saves it (FFN widths padded to multiples of config.FFN_WIDTH_MULTIPLE with inert neurons),
and the same masks at exactly the kept widths (`unaligned`), in the same interleaved rounds.

Every run appends rows to benchmarks/RESULTS.md and writes benchmarks/results/<date>-<case>.json; the last line
printed is one JSON object keyed by case name.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kprune_lib._atomic import write_text  # noqa: E402
from kprune_lib._provenance import device_name  # noqa: E402
from kprune_lib.data.batching import make_batches, tokenize  # noqa: E402
from kprune_lib.data.glue import load_glue  # noqa: E402
from kprune_lib.config import FFN_WIDTH_MULTIPLE  # noqa: E402
from kprune_lib.artifacts.checkpoint import load_model, pruned_shape  # noqa: E402
from kprune_lib.encoder.physical import prune_physically  # noqa: E402
from kprune_lib.data.tasks import get_glue_task  # noqa: E402

SHARED = Path(os.environ.get("KPRUNE_SHARED", HERE.parent.parent / "shared"))
GLUE = str(SHARED / "data" / "glue")


def minilm(task: str) -> str:
    return str(SHARED / "models" / f"minilm-l6-{task}")


@dataclass(frozen=True)
class Case:
    task: str
    model: str
    tokens: int | str  # a number, "num" (--num-tokens) or "shape" (--shape-tokens)
    shape: str | None = None  # random-weight model of this shape (prune_worker.SHAPES), the task's tokenizer
    latency: bool = True
    slow: bool = False  # its naive run is skipped under --skip-slow-naive


CASES = {
    "mrpc": Case("mrpc", minilm("mrpc"), "num"),
    "stsb": Case("stsb", minilm("stsb"), "num"),
    "sst2": Case("sst2", minilm("sst2"), "num"),
    "mrpc-100k": Case("mrpc", minilm("mrpc"), 100_000, latency=False, slow=True),
    "bert-base-shape": Case("mrpc", minilm("mrpc"), "shape", shape="bert-base", slow=True),
    "distilbert-shape": Case("mrpc", minilm("mrpc"), "shape", shape="distilbert-base"),
}
QUICK = ("mrpc", "stsb", "sst2")
ALIASES = {"minilm": "mrpc", "minilm-100k": "mrpc-100k"}  # the case names of earlier RESULTS.md rows


def bound(layers: int) -> float:
    """Passes of the cached schedule over those of the naive one: (L + ½) / 2L."""
    return (layers + 0.5) / (2 * layers)


def run_worker(case: Case, schedule: str, tokens: int, batch_tokens: int | None, device: str,
               autocast: str | None, dense_repeats: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, str(HERE / "prune_worker.py"), "--model", case.model, "--task", case.task,
           "--data-dir", GLUE, "--schedule", schedule, "--num-tokens", str(tokens), "--device", device,
           "--dense-repeats", str(dense_repeats), "--out", path]
    if batch_tokens is not None:
        cmd += ["--batch-tokens", str(batch_tokens)]
    if case.shape:
        cmd += ["--shape", case.shape]
    if autocast:
        cmd += ["--autocast", autocast]
    try:
        subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return json.loads(Path(path).read_text())
    finally:
        os.unlink(path)


def mask_difference(a: dict, b: dict) -> int:
    """Number of units (heads + neurons) on which two runs disagree."""
    ha, hb = torch.tensor(a["head_mask"]), torch.tensor(b["head_mask"])
    na, nb = torch.tensor(a["neuron_mask"]), torch.tensor(b["neuron_mask"])
    return int((ha != hb).sum() + (na != nb).sum())


@torch.inference_mode()
def interleaved_latency(models: dict, features: list[dict], pad_id: int, batch_size: int, repeats: int) -> dict:
    """Median seconds of one pass over the features (in the given order, pre-tokenised, each batch padded to its
    longest) per model, the models' passes interleaved (A B, B A, A B, …) after one warm-up pass each, so that a
    change of the machine's load hits them alike."""
    device = next(next(iter(models.values())).parameters()).device
    batches = make_batches(features, batch_size, pad_id, device)
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        m.eval()
        for b in batches:
            m(**b)
    for r in range(repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for b in batches:
                models[name](**b)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def latency_case(case: Case, head_mask, neuron_mask, device: str, repeats: int) -> dict:
    """Dense vs physically pruned latency on the task's dev set sorted by length: batch 32 over all of it, batch 1
    over 64 examples spread evenly over the sorted lengths (`interleaved_latency`); each model timed with the SDPA and
    the eager attention kernel, the speedup taken between each model's faster one (both kept in the record)."""
    task = get_glue_task(case.task)
    dense, tok = load_model(case.model)
    if case.shape:
        from prune_worker import random_model

        dense = random_model(case.shape, tok.vocab_size, task.num_labels)
    dense.to(device).eval()
    feats = tokenize(tok, load_glue(task, task.eval_splits[0], GLUE), task.max_length)
    if dense.config.model_type != "bert":
        feats = [{k: v for k, v in f.items() if k != "token_type_ids"} for f in feats]
    feats = sorted(feats, key=lambda f: len(f["input_ids"]))  # stable: ties in dataset order
    step = max(1, len(feats) // 64)
    spread = feats[::step][:64]
    hm, nm = torch.tensor(head_mask).bool(), torch.tensor(neuron_mask).bool()
    pruned = prune_physically(copy.deepcopy(dense), hm, nm)
    # the same masks at exactly the kept widths (no padding with inert neurons): what the alignment buys
    unaligned = prune_physically(copy.deepcopy(dense), hm, nm, width_multiple=1)
    # a fully pruned attention sublayer is skipped entirely: all heads of the upper half of layers removed
    no_attn = hm.clone()
    no_attn[len(hm) // 2:] = False
    skipped = prune_physically(copy.deepcopy(dense), no_attn, nm)
    # each model also with transformers' eager attention (matmul, softmax, matmul): on a CPU at short sequences it
    # beats the fused SDPA kernel, and a deployment runs each model with whichever kernel is faster for it
    eager = {}
    for key, m in (("dense", dense), ("pruned", pruned), ("unaligned", unaligned)):
        eager[key] = copy.deepcopy(m)
        eager[key].set_attn_implementation("eager")
    out = {"dev_examples": len(feats), "order": "length-sorted", "timing": f"median of {repeats} interleaved passes",
           "speedup": "each model with its faster attention kernel (sdpa or eager)",
           "ffn_width_multiple": FFN_WIDTH_MULTIPLE, "neurons_physical": pruned_shape(pruned)["neurons_per_layer"],
           "neurons_kept": nm.sum(1).tolist()}
    for name, bs, fs in (("b32", 32, feats), ("b1", 1, spread)):
        models = {"dense": dense, "pruned": pruned, "unaligned": unaligned, "dense_eager": eager["dense"],
                  "pruned_eager": eager["pruned"], "unaligned_eager": eager["unaligned"],
                  **({"skipped": skipped} if name == "b32" else {})}
        t = interleaved_latency(models, fs, tok.pad_token_id, bs, repeats)
        best = {k: min(("sdpa", t[k]), ("eager", t[f"{k}_eager"]), key=lambda x: x[1])
                for k in ("dense", "pruned", "unaligned")}
        out[name] = {"dense_s": best["dense"][1], "pruned_s": best["pruned"][1],
                     "speedup": best["dense"][1] / best["pruned"][1], "examples": len(fs),
                     "kernel": {k: v[0] for k, v in best.items()},
                     "sdpa": {"dense_s": t["dense"], "pruned_s": t["pruned"], "speedup": t["dense"] / t["pruned"]},
                     "eager": {"dense_s": t["dense_eager"], "pruned_s": t["pruned_eager"],
                               "speedup": t["dense_eager"] / t["pruned_eager"]},
                     "unaligned": {"pruned_s": best["unaligned"][1], "kernel": best["unaligned"][0],
                                   "speedup": best["dense"][1] / best["unaligned"][1]}}
        if "skipped" in t:
            out["no_attention_upper_half_b32"] = {"pruned_s": t["skipped"], "speedup": t["dense"] / t["skipped"],
                                                  "heads_kept": no_attn.sum(1).tolist()}
    return out


def machine() -> str:
    return f"{device_name()}, {os.cpu_count()} cores"  # the CPU model, as every summary.json's provenance names it


def _ratio(a, b):
    return a / b if a is not None and b else None


def bench_case(name: str, case: Case, tokens: int, a: argparse.Namespace, latency: bool) -> dict:
    runs = {}
    plan = [("sorted", "cached", a.batch_tokens), ("drawn", "cached", 0), ("naive", "naive", 0)]
    for run, schedule, bt in plan:
        if run == "naive" and case.slow and a.skip_slow_naive:
            print(f"[{name}] naive skipped (--skip-slow-naive)", flush=True)
            continue
        print(f"[{name}] {run} ({schedule}, batch_tokens {'default' if bt is None else bt}) ...", flush=True)
        runs[run] = run_worker(case, schedule, tokens, bt, a.device, a.autocast, a.dense_repeats)
    s, d, n = runs["sorted"], runs["drawn"], runs.get("naive")
    diff_drawn = mask_difference(s, d)
    diff_naive = mask_difference(s, n) if n else None
    flops_ratio = s["flops_dense"] / s["flops_pruned"]
    row = {
        "case": name, "label": name if isinstance(case.tokens, int) else f"{name}-{tokens // 1000}k", "task": case.task,
        "model": case.shape or Path(case.model).name, "num_tokens": tokens, "sample_examples": s["sample_examples"],
        "sample_tokens": s["sample_tokens"], "batch_tokens": s["batch_tokens"],
        "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(0), "autocast": a.autocast,
        "padded_tokens_drawn": s["padded_tokens_drawn"], "padded_tokens_computed": s["padded_tokens_computed"],
        "padding_ratio_drawn": s["padding_ratio_drawn"], "padding_ratio_computed": s["padding_ratio_computed"],
        "sorted_seconds": s["wall_seconds"], "drawn_seconds": d["wall_seconds"],
        "naive_seconds": n["wall_seconds"] if n else None, "naive_skipped": n is None,
        "dense_pass_seconds": s["dense_pass_seconds"], "dense_pass_seconds_drawn": d["dense_pass_seconds"],
        "dense_pass_seconds_naive": n["dense_pass_seconds"] if n else None,
        # each run in its own dense passes (its own process's dense pass: robust to the machine's load drifting)
        "dense_passes": s["dense_passes"], "dense_passes_drawn": d["dense_passes"],
        "dense_passes_naive": n["dense_passes"] if n else None,
        # same batches (as drawn), schedules compared: the quantity `bound` speaks to (and older RESULTS.md rows)
        "cached_over_naive_time": _ratio(d["wall_seconds"], n and n["wall_seconds"]),
        "sorted_over_naive_time": _ratio(s["wall_seconds"], n and n["wall_seconds"]),
        "sorted_over_drawn_time": _ratio(s["wall_seconds"], d["wall_seconds"]),
        "bound": bound(s["layers"]),
        "masks_identical": diff_drawn == 0 and not diff_naive,
        "masks_identical_drawn": diff_drawn == 0, "masks_identical_naive": None if n is None else diff_naive == 0,
        "mask_units_differing": diff_drawn + (diff_naive or 0),
        "mask_units_differing_drawn": diff_drawn, "mask_units_differing_naive": diff_naive,
        "peak_mem_sorted_mb": s["peak_rss_mb"], "peak_mem_drawn_mb": d["peak_rss_mb"],
        "peak_mem_naive_mb": n["peak_rss_mb"] if n else None, "rss_before_pruning_mb": s["rss_before_pruning_mb"],
        "cuda_max_allocated_sorted_mb": s["cuda_max_allocated_mb"],
        "cuda_max_allocated_drawn_mb": d["cuda_max_allocated_mb"],
        "cuda_max_allocated_naive_mb": n["cuda_max_allocated_mb"] if n else None,
        "stage_seconds_sorted": s["stage_seconds"], "stage_seconds_drawn": d["stage_seconds"],
        "stage_seconds_naive": n["stage_seconds"] if n else None,
        "flops_ratio": flops_ratio, "threads": s["threads"],
        "latency_speedup": None, "latency_speedup_b1": None,
        "speedup_over_flops_ratio": None, "speedup_over_flops_ratio_b1": None,
        "latency_speedup_unaligned": None, "speedup_over_flops_ratio_unaligned": None,
    }
    if latency:
        lat = latency_case(case, s["head_mask"], s["neuron_mask"], a.device, a.repeats)
        row.update(latency=lat, latency_speedup=lat["b32"]["speedup"], latency_speedup_b1=lat["b1"]["speedup"],
                   speedup_over_flops_ratio=lat["b32"]["speedup"] / flops_ratio,
                   speedup_over_flops_ratio_b1=lat["b1"]["speedup"] / flops_ratio,
                   latency_speedup_unaligned=lat["b32"]["unaligned"]["speedup"],
                   speedup_over_flops_ratio_unaligned=lat["b32"]["unaligned"]["speedup"] / flops_ratio)
    return row


COLUMNS = ["date", "machine", "device", "versions", "case", "tokens", "batch tokens", "sorted s", "drawn s",
           "naive s", "dense pass s", "dense passes sorted", "dense passes drawn", "dense passes naive",
           "padding drawn", "padding computed", "drawn/naive (cached/naive)", "sorted/naive", "bound",
           "masks identical (drawn, naive)", "peak RSS sorted MB", "peak RSS drawn MB", "peak RSS naive MB",
           "latency speedup b32 (sorted dev)", "latency speedup b1", "FLOPs ratio", "speedup/FLOPs ratio b32",
           "speedup/FLOPs ratio b32 unaligned"]


def _f(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def write_results(rows: list[dict]) -> None:
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")
    (HERE / "results").mkdir(exist_ok=True)
    for r in rows:
        (HERE / "results" / f"{stamp.replace(':', '')}-{r['label']}.json").write_text(json.dumps(r, indent=2))
    md = HERE / "RESULTS.md"
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    if not md.exists():
        md.write_text("# Benchmark results\n\nWritten by `benchmarks/bench.py` (one row per case and run; newest "
                      "last).\n"
                      "Times are wall seconds of the whole K-prune loop; memory is the worker process's peak RSS.\n")
    rows_md = []
    for r in rows:
        naive_mi = r["masks_identical_naive"]
        mi = f"{r['masks_identical_drawn']}, {'–' if naive_mi is None else naive_mi}"
        cells = [stamp, machine(), r["device"] + (" " + r["autocast"] if r["autocast"] else ""),
                 f"torch {torch.__version__}, transformers {transformers.__version__}", r["label"],
                 str(r["num_tokens"]), str(r["batch_tokens"]), _f(r["sorted_seconds"], ".1f"),
                 _f(r["drawn_seconds"], ".1f"), _f(r["naive_seconds"], ".1f"), _f(r["dense_pass_seconds"], ".2f"),
                 _f(r["dense_passes"], ".1f"), _f(r["dense_passes_drawn"], ".1f"),
                 _f(r["dense_passes_naive"], ".1f"), _f(r["padding_ratio_drawn"], ".3f"),
                 _f(r["padding_ratio_computed"], ".3f"), _f(r["cached_over_naive_time"], ".3f"),
                 _f(r["sorted_over_naive_time"], ".3f"), _f(r["bound"], ".3f"), mi,
                 _f(r["peak_mem_sorted_mb"], ".0f"), _f(r["peak_mem_drawn_mb"], ".0f"),
                 _f(r["peak_mem_naive_mb"], ".0f"), _f(r["latency_speedup"], ".2f"),
                 _f(r["latency_speedup_b1"], ".2f"), _f(r["flops_ratio"], ".2f"),
                 _f(r["speedup_over_flops_ratio"], ".2f"), _f(r.get("speedup_over_flops_ratio_unaligned"), ".2f")]
        rows_md.append("| " + " | ".join(cells) + " |\n")
    lines = md.read_text().splitlines(keepends=True)
    headers = [k for k, line in enumerate(lines) if line.startswith("| date |")]
    if headers and lines[headers[-1]].rstrip("\n") == header.splitlines()[0]:
        end = headers[-1] + 2  # the rows go at the end of that table, wherever later sections follow it
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[end:end] = rows_md
    else:
        lines.append(f"\n## From {stamp[:10]}: sorted compute batches, dense passes, padding ratios\n\n"
                     "Each case runs three processes: `sorted` (cached schedule, length-sorted compute batches of the "
                     "device's default `batch_tokens`), `drawn` (cached, the sample batches as drawn) and `naive` "
                     "(naive schedule, as drawn). *dense pass s*: one dense forward + backward over the sample as "
                     "drawn to all-ones mask leaves (stock HF forward, predictive loss against the model's own soft "
                     "targets; median of 3 after a warm-up, sorted run's process); *dense passes* = pruning wall "
                     "seconds / that run's dense pass. *padding*: padded / real tokens (drawn: the batches of 32 as "
                     "drawn; computed: the sorted run's compute batches). *drawn/naive* is the old *cached/naive* "
                     "(same batches). Latency on the dev set sorted by length, each model with its faster attention "
                     "kernel (SDPA or eager); the pruned model's FFN widths padded up to multiples of "
                     f"{FFN_WIDTH_MULTIPLE} with inert neurons (`kprune_lib.encoder.physical.aligned_width`, as every saved "
                     "model), *unaligned*: the same masks at exactly the kept widths, timed in the same rounds.\n\n"
                     + header)
        lines += rows_md
    write_text(md, "".join(lines))


def print_table(rows: list[dict]) -> None:
    cols = ["case", "num_tokens", "sorted_seconds", "drawn_seconds", "naive_seconds", "dense_pass_seconds",
            "dense_passes", "dense_passes_drawn", "dense_passes_naive", "padding_ratio_drawn",
            "padding_ratio_computed", "cached_over_naive_time", "bound", "masks_identical", "peak_mem_sorted_mb",
            "peak_mem_drawn_mb", "peak_mem_naive_mb", "latency_speedup", "latency_speedup_b1", "flops_ratio"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "–")) for c in cols))
    for r in rows:
        for run in ("sorted", "drawn", "naive"):
            st = r[f"stage_seconds_{run}"]
            if st:
                print(f"[{r['case']}] stage split {run + ':':7} " +
                      ", ".join(f"{k} {v:.1f}s" for k, v in sorted(st.items(), key=lambda kv: -kv[1])))


SUMMARY_KEYS = ["task", "model", "num_tokens", "sample_tokens", "batch_tokens", "device", "dense_pass_seconds",
                "dense_passes", "dense_passes_drawn", "dense_passes_naive", "padding_ratio_drawn",
                "padding_ratio_computed", "sorted_seconds", "drawn_seconds", "naive_seconds",
                "cached_over_naive_time", "sorted_over_naive_time", "bound", "masks_identical",
                "masks_identical_drawn", "masks_identical_naive", "mask_units_differing",
                "mask_units_differing_drawn", "mask_units_differing_naive", "peak_mem_sorted_mb",
                "peak_mem_drawn_mb", "peak_mem_naive_mb", "latency_speedup", "latency_speedup_b1", "flops_ratio",
                "speedup_over_flops_ratio", "speedup_over_flops_ratio_b1", "latency_speedup_unaligned",
                "speedup_over_flops_ratio_unaligned"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the MiniLM cases " + ", ".join(QUICK) + " (+ latency)")
    p.add_argument("--check-only", action="store_true",
                   help="masks only, every case at --num-tokens: no latency, nothing written "
                        "(default cases: --quick's)")
    p.add_argument("--cases", default=None,
                   help="comma-separated subset of " + ", ".join(CASES) + " (default: all; --quick/--check-only: "
                        + ",".join(QUICK) + ")")
    p.add_argument("--num-tokens", type=int, default=20000, help="sample tokens of the MiniLM 20k cases / the check")
    p.add_argument("--shape-tokens", type=int, default=5000,
                   help="sample tokens for the BERT-base- and DistilBERT-shaped timing cases (20000+ on a GPU)")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="batch_tokens of the sorted run (default: the device's, kprune_lib.config.BATCH_TOKENS)")
    p.add_argument("--skip-slow-naive", action="store_true",
                   help="skip the naive run of the slow cases ("
                        + ", ".join(k for k, c in CASES.items() if c.slow) + ")")
    p.add_argument("--dense-repeats", type=int, default=3, help="timed dense passes per worker (median)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autocast", default=None, choices=["bf16", "fp16"], help="measurement passes in lower precision")
    p.add_argument("--repeats", type=int, default=7, help="latency repeats per model (median of interleaved passes)")
    a = p.parse_args()
    if a.batch_tokens is not None and a.batch_tokens <= 0:
        p.error("--batch-tokens must be > 0 (the drawn runs already use 0)")
    if a.dense_repeats < 1:
        p.error("--dense-repeats must be >= 1")
    if a.cases:
        names = [ALIASES.get(k.strip(), k.strip()) for k in a.cases.split(",") if k.strip()]
    else:
        names = list(QUICK) if a.quick or a.check_only else list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown or not names:
        p.error(f"unknown case(s) {unknown or a.cases!r}; choose from {', '.join(CASES)}")
    rows = []
    for name in dict.fromkeys(names):
        case = CASES[name]
        tokens = {"num": a.num_tokens, "shape": a.shape_tokens}.get(case.tokens, case.tokens)
        if a.check_only:
            tokens = a.num_tokens
        rows.append(bench_case(name, case, int(tokens), a, latency=case.latency and not a.check_only))
    print_table(rows)
    if not a.check_only:
        write_results(rows)
    print(json.dumps({r["case"]: {k: r.get(k) for k in SUMMARY_KEYS} for r in rows}))


if __name__ == "__main__":
    main()
