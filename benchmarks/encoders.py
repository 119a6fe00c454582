"""Today's encoders pruned on CPU: DeBERTa-v3-base- and ModernBERT-base-shaped models (random weights) at 50 % of
their FLOPs removed, a BERT-base-shaped one beside them at the same settings for reference: pruning time, peak memory,
and the measured speedup of the physically pruned model against its FLOPs ratio.

  python benchmarks/encoders.py                                   # the three shapes, 2000 tokens of MRPC train
  python benchmarks/encoders.py --shapes modernbert-base --num-tokens 2000

Each shape is pruned in its own process (peak RSS is that run's): K-prune's loop (default hyper-parameters, the
cached schedule, length-sorted compute batches) on a sample of MRPC's training set tokenised by the MiniLM
tokenizer (the random models take its 30 522-word vocabulary: the embedding table does not enter the encoder's
compute), then `prune_physically` as `kprune prune` saves it (FFN widths padded to multiples of
FFN_WIDTH_MULTIPLE). Latency: dense and pruned forward at batch 1 and batch 8 × 128 real tokens, timed in the same
interleaved rounds (`costs.timing.measure_latencies`). The FLOPs ratio is the paper formula's (DeBERTa: with its
position terms, `costs.flops.position_flops`) at the sample's L_seq, the constraint's, and at 128 tokens, the
latency's, for the physical widths (ModernBERT: a gated neuron's three matrix rows, `costs.flops.neuron_flops`).
Random weights: the masks (and so the speedup) are those of a model whose
knowledge is noise; the cost of pruning does not depend on the weights.

Appends one row per shape to benchmarks/ENCODERS.md and writes benchmarks/results/<date>-encoders-<shape>.json.

  python benchmarks/encoders.py --retime benchmarks/results/<date>-encoders-<shape>.json --threads 1

times the saved shape again (no pruning: the same per-layer head counts and FFN widths, rebuilt as the first units of
a fresh random model of the shape) with the given CPU threads, and appends a latency row: on a busy machine one
thread is far less disturbed than several (every parallel region of a forward waits for cores the other jobs hold).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from kprune_lib._provenance import device_name

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("KPRUNE_SHARED", HERE.parent.parent / "shared"))
GLUE = str(SHARED / "data" / "glue")
TOKENIZER = str(SHARED / "models" / "minilm-l6-mrpc")
LATENCY = [(1, 128), (8, 128)]  # (batch, real tokens per example)

SHAPES = {  # random-weight models of real shapes
    "deberta-v3-base": lambda vocab: transformers.DebertaV2Config(
        vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, relative_attention=True, pos_att_type="p2c|c2p", position_buckets=256,
        max_relative_positions=-1, share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
        type_vocab_size=0, num_labels=2),
    # ModernBERT-base's shape (answerdotai/ModernBERT-base: 22 layers, GLU FFN of 1152, a global layer every third,
    # 128-token windows, no biases); special tokens are the MiniLM tokenizer's
    "modernbert-base": lambda vocab: transformers.ModernBertConfig(
        vocab_size=vocab, hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152,
        global_attn_every_n_layers=3, local_attention=128, max_position_embeddings=8192, pad_token_id=0,
        cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102, mask_token_id=103, num_labels=2),
    "bert-base": lambda vocab: transformers.BertConfig(
        vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        num_labels=2),
}


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_model(shape: str, vocab: int):
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(SHAPES[shape](vocab)).eval()


def worker(shape: str, num_tokens: int, constraint: float, out: str) -> None:
    """Prune one shape and write its record to `out`."""
    from kprune_lib.api import compute_batch_tokens
    from kprune_lib.config import PruneConfig
    from kprune_lib.costs.flops import UnitFlops
    from kprune_lib.costs.timing import measure_latencies
    from kprune_lib.data.batching import glue_pruning_sample
    from kprune_lib.data.tasks import get_glue_task
    from kprune_lib.encoder.arch import Arch
    from kprune_lib.encoder.physical import aligned_width, prune_physically
    from kprune_lib.method.loop import kprune

    device = torch.device("cpu")
    tok = transformers.AutoTokenizer.from_pretrained(TOKENIZER)
    task = get_glue_task("mrpc")
    cfg = PruneConfig(constraint=constraint, num_tokens=num_tokens)
    sample = glue_pruning_sample(tok, task, GLUE, cfg, device=device, batch_tokens=compute_batch_tokens(cfg, device))
    model = random_model(shape, tok.vocab_size)
    arch = Arch(model)
    gc.collect()
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    res = kprune(arch, sample.batches, task.problem, cfg, seq_len=sample.seq_len, progress=False)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()

    heads = res.head_mask.sum(1).tolist()
    widths = [aligned_width(int(n), arch.ffn_size) for n in res.neuron_mask.sum(1)]
    prune_physically(arch, res.head_mask, res.neuron_mask)
    dense = random_model(shape, tok.vocab_size)
    L, H, N = arch.num_layers, arch.num_heads, arch.ffn_size

    def flops_ratio(seq: float) -> float:
        flops = UnitFlops.of(arch)
        return flops.model([H] * L, [N] * L, seq) / flops.model(heads, widths, seq)

    latency = {}
    for batch, seq in LATENCY:
        ms = measure_latencies({"dense": dense, "pruned": model}, batch, seq, device)
        latency[f"b{batch}x{seq}"] = {"dense_ms": ms["dense"], "pruned_ms": ms["pruned"],
                                      "speedup": ms["dense"] / ms["pruned"]}
    record = {
        "shape": shape, "model_type": arch.model_type, "hidden": arch.hidden, "layers": L, "heads": H, "ffn": N,
        "rel_positions": arch.rel_positions, "constraint": constraint, "num_tokens": num_tokens,
        "sample_examples": sample.examples, "sample_tokens": int(sum(int(b["attention_mask"].sum())
                                                                      for b in sample.batches)),
        "seq_len": sample.seq_len, "pruning_seconds": seconds, "stage_seconds": res.timings,
        "peak_rss_mb": peak, "rss_before_pruning_mb": rss_before,
        "flops_removed": 1 - res.flops_pruned / res.flops_dense, "heads_kept": heads, "neurons_kept":
            res.neuron_mask.sum(1).tolist(), "neurons_physical": widths,
        "flops_ratio_seq_len": flops_ratio(sample.seq_len), "flops_ratio_128": flops_ratio(128),
        "latency": latency, "threads": torch.get_num_threads(),
    }
    Path(out).write_text(json.dumps(record, indent=1))


def retime(path: str, threads: int) -> dict:
    """Dense and pruned latency of a record's shape at `threads` threads; the record (its file) gains
    `latency_threads<threads>`."""
    from kprune_lib.costs.timing import measure_latencies
    from kprune_lib.encoder.arch import Arch
    from kprune_lib.encoder.physical import prune_physically, shape_masks

    record = json.loads(Path(path).read_text())
    tok = transformers.AutoTokenizer.from_pretrained(TOKENIZER)
    dense, pruned = random_model(record["shape"], tok.vocab_size), random_model(record["shape"], tok.vocab_size)
    a = Arch(pruned)
    hm, nm = shape_masks(record["heads_kept"], record["neurons_physical"], a.num_heads, a.ffn_size)
    prune_physically(a, hm, nm, width_multiple=1)
    latency = {}
    for batch, seq in LATENCY:
        ms = measure_latencies({"dense": dense, "pruned": pruned}, batch, seq, "cpu", threads)
        latency[f"b{batch}x{seq}"] = {"dense_ms": ms["dense"], "pruned_ms": ms["pruned"],
                                      "speedup": ms["dense"] / ms["pruned"]}
    record[f"latency_threads{threads}"] = latency
    record[f"loadavg_threads{threads}"] = os.getloadavg()[0]
    Path(path).write_text(json.dumps(record, indent=1))
    return record


RETIME_HEADER = ("| date | shape | threads | load average | b1×128 dense / pruned ms | speedup | "
                 "b8×128 dense / pruned ms | speedup | FLOPs ratio at 128 |\n|---|---|---|---|---|---|---|---|---|\n")


def retime_row(r: dict, threads: int, when: str) -> str:
    lat = r[f"latency_threads{threads}"]
    cells = [f"{lat[k]['dense_ms']:.0f} / {lat[k]['pruned_ms']:.0f} | {lat[k]['speedup']:.2f}" for k in lat]
    return (f"| {when} | {r['shape']} | {threads} | {r[f'loadavg_threads{threads}']:.1f} | {' | '.join(cells)} | "
            f"{r['flops_ratio_128']:.2f} |\n")


def machine() -> str:
    return f"{device_name()}, {os.cpu_count()} cores"  # the CPU model, as every summary.json's provenance names it


HEADER = ("| date | machine | versions | shape | tokens | pruning s | peak RSS MB | FLOPs removed | heads kept | "
          "FLOPs ratio (L_seq / 128) | speedup b1×128 | speedup b8×128 |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def row(r: dict, when: str) -> str:
    lat = r["latency"]
    return (f"| {when} | {machine()} | torch {torch.__version__}, transformers {transformers.__version__} | "
            f"{r['shape']} | {r['num_tokens']} | {r['pruning_seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{100 * r['flops_removed']:.1f} % | {sum(r['heads_kept'])} of {r['layers'] * r['heads']} | "
            f"{r['flops_ratio_seq_len']:.2f} / {r['flops_ratio_128']:.2f} | {lat['b1x128']['speedup']:.2f} | "
            f"{lat['b8x128']['speedup']:.2f} |\n")


def add_row(text: str, header: str, row: str) -> str:
    """`text` with `row` appended to the table that starts with `header` (a new table at the end if there is none),
    so that each kind of row stays in its own table."""
    if header not in text:
        return text + "\n" + header + row
    start = text.index(header) + len(header)
    end = text.find("\n\n", start - 1)
    end = len(text) if end < 0 else end + 1
    return text[:end] + row + text[end:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="deberta-v3-base,modernbert-base,bert-base",
                   help=f"comma-separated, of {sorted(SHAPES)}")
    p.add_argument("--num-tokens", type=int, default=2000)
    p.add_argument("--constraint", type=float, default=0.5)
    p.add_argument("--retime", nargs="+", default=None, help="record files to time again (no pruning)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for --retime")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.num_tokens, a.constraint, a.out)
        return
    md = HERE / "ENCODERS.md"
    if a.retime:
        when = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")
        for path in a.retime:
            r = retime(path, a.threads)
            md.write_text(add_row(md.read_text(), RETIME_HEADER, retime_row(r, a.threads, when)))
            print(json.dumps({r["shape"]: r[f"latency_threads{a.threads}"]}))
        return
    shapes = a.shapes.split(",")
    if unknown := [s for s in shapes if s not in SHAPES]:
        p.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(sorted(SHAPES))}")
    when = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    records = {}
    for shape in shapes:
        out = results / f"{when[:10]}-encoders-{shape}.json"
        subprocess.run([sys.executable, __file__, "--worker", shape, "--num-tokens", str(a.num_tokens),
                        "--constraint", str(a.constraint), "--out", str(out)], check=True)
        records[shape] = json.loads(out.read_text())
        md.write_text(add_row(md.read_text() if md.exists() else "", HEADER, row(records[shape], when)))
    print(json.dumps({s: {k: r[k] for k in ("pruning_seconds", "peak_rss_mb", "flops_removed", "flops_ratio_128",
                                            "latency")} for s, r in records.items()}))


if __name__ == "__main__":
    main()
