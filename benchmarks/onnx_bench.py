"""ONNX export benchmark: accuracy and CPU latency of dense, pruned and int8 models in onnxruntime, beside PyTorch.

  python benchmarks/onnx_bench.py              # MiniLM-L6 MRPC, pruned at 50 % FLOPs (20 000 tokens), 2 threads
  make bench-onnx                              # the same

The pruned model is `kprune prune --model ../shared/models/minilm-l6-mrpc --task mrpc --data-dir ../shared/data/glue
--constraint 0.5 --num-tokens 20000 --output runs/onnx-bench/mrpc-c0.5` (run if that folder is missing, else reused).
Dense and pruned are exported with `kprune_lib.artifacts.onnx.export_onnx` (opset 18, the export's own onnxruntime
check included), each also as int8 (`int8=True`: onnxruntime dynamic quantization of the weight matmuls).

Measured on the MRPC dev set (408 pairs), tokenised once, sorted by length (stable) as benchmarks/bench.py does:
- accuracy / F1 of each variant (length-sorted batches of 32, predictions put back in dataset order);
- parity: max abs logit difference onnxruntime float32 vs PyTorch over the whole dev set (dense and pruned);
- latency: one pass over the sorted dev set in batches of 32, and batch 1 over 64 examples spread evenly over the
  sorted lengths; PyTorch (torch.inference_mode) and onnxruntime (CPUExecutionProvider) with the same number of
  intra-op threads (--threads, default 2); one warm-up pass per variant, then --repeats rounds that time every
  variant once each in turn (so that load from other processes falls on all of them alike); median per variant
  (the minimum and every round are in the JSON).

Appends a section to benchmarks/RESULTS.md and writes benchmarks/results/<date>-onnx-mrpc.json; prints the JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))

from kprune_lib.data.batching import make_batches, tokenize  # noqa: E402
from kprune_lib.data.evaluate import score  # noqa: E402
from kprune_lib.costs.flops import encoder_params  # noqa: E402
from kprune_lib.data.glue import load_glue  # noqa: E402
from kprune_lib.artifacts.onnx import export_onnx, load_for_export, session  # noqa: E402
from kprune_lib.data.tasks import get_glue_task  # noqa: E402
from bench import machine  # noqa: E402  (benchmarks/ is the script's folder)


def ensure_pruned(a) -> Path:
    folder = Path(a.pruned)
    if (folder / "model" / "kprune.json").is_file():
        print(f"reusing {folder}", file=sys.stderr)
        return folder
    cmd = [str(Path(sys.executable).with_name("kprune")), "prune", "--model", a.model, "--task", a.task, "--data-dir",
           a.data_dir, "--constraint", str(a.constraint), "--num-tokens", str(a.num_tokens), "--output", str(folder),
           "--quiet"]
    print("running " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return folder


class Torch:
    def __init__(self, model):
        self.model = model.eval()

    @torch.inference_mode()
    def __call__(self, batch: dict) -> np.ndarray:
        return self.model(**batch).logits.numpy()


class Ort:
    def __init__(self, path: Path, threads: int):
        self.sess = session(path, threads=threads)
        self.names = [i.name for i in self.sess.get_inputs()]

    def __call__(self, batch: dict) -> np.ndarray:
        return self.sess.run(None, {k: batch[k].numpy() for k in self.names})[0]


def predict(run, batches: list[dict]) -> np.ndarray:
    return np.concatenate([run(b) for b in batches])


def one_pass(run, batches: list[dict]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        run(b)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHARED / "models" / "minilm-l6-mrpc"), help="dense fine-tuned checkpoint")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--data-dir", default=str(SHARED / "data" / "glue"))
    p.add_argument("--constraint", type=float, default=0.5)
    p.add_argument("--num-tokens", type=int, default=20000)
    p.add_argument("--pruned", default=str(ROOT / "runs" / "onnx-bench" / "mrpc-c0.5"),
                   help="kprune prune output folder (pruned here if missing)")
    p.add_argument("--onnx-dir", default=str(ROOT / "runs" / "onnx-bench" / "onnx"), help="where the .onnx files go")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of PyTorch and onnxruntime")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (median; the minimum is kept too)")
    p.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md / results/")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load_start = os.getloadavg()[0]

    pruned_dir = ensure_pruned(a)
    onnx_dir = Path(a.onnx_dir)
    files, exports = {}, {}
    for name, src, int8 in (("dense", a.model, False), ("dense+int8", a.model, True),
                            ("pruned", pruned_dir / "model", False), ("pruned+int8", pruned_dir / "model", True)):
        files[name] = onnx_dir / f"{a.task}-{name.replace('+', '-')}.onnx"
        exports[name] = export_onnx(str(src), files[name], opset=a.opset, int8=int8, overwrite=True)
        print(f"exported {name}: {exports[name]['bytes'] / 1e6:.1f} MB in {exports[name]['seconds']:.0f} s "
              f"(check: max abs diff {exports[name]['max_abs_diff']:.2g})", file=sys.stderr)

    task = get_glue_task(a.task)
    tok = transformers.AutoTokenizer.from_pretrained(str(pruned_dir / "model"))
    examples = load_glue(task, task.eval_splits[0], a.data_dir)
    feats = tokenize(tok, examples, task.max_length)
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))  # stable: ties in dataset order
    sorted_feats = [feats[i] for i in order]
    b32 = make_batches(sorted_feats, 32, tok.pad_token_id)
    step = max(1, len(sorted_feats) // 64)
    b1 = make_batches(sorted_feats[::step][:64], 1, tok.pad_token_id)

    dense, pruned = load_for_export(a.model), load_for_export(str(pruned_dir / "model"))
    runs = {("PyTorch", "dense"): Torch(dense), ("PyTorch", "pruned"): Torch(pruned)}
    for name, path in files.items():
        runs[("onnxruntime", name)] = Ort(path, a.threads)

    rows, logits = {}, {}
    for key, run in runs.items():
        out = predict(run, b32)  # also the warm-up pass of batch 32
        logits[key] = np.empty_like(out)
        logits[key][order] = out
        rows[key] = {"engine": key[0], "model": key[1], **score(task, logits[key], examples.labels)}
        for b in b1[:8]:  # warm-up at batch 1
            run(b)
    parity = {m: float(np.abs(logits[("onnxruntime", m)] - logits[("PyTorch", m)]).max()) for m in ("dense", "pruned")}
    agree = {m: float((logits[("onnxruntime", m)].argmax(-1) == logits[("PyTorch", m.split("+")[0])].argmax(-1)).mean())
             for m in ("dense+int8", "pruned+int8")}

    times = {k: {"b32": [], "b1": []} for k in runs}
    for _ in range(a.repeats):
        for key, run in runs.items():
            times[key]["b32"].append(one_pass(run, b32))
            times[key]["b1"].append(one_pass(run, b1))
    base = statistics.median(times[("PyTorch", "dense")]["b32"]), statistics.median(times[("PyTorch", "dense")]["b1"])
    for key in runs:
        t32, t1 = statistics.median(times[key]["b32"]), statistics.median(times[key]["b1"])
        rows[key].update(b32_s=t32, b1_ms=1000 * t1 / len(b1), speedup_b32=base[0] / t32, speedup_b1=base[1] / t1,
                         b32_min_s=min(times[key]["b32"]), b1_min_ms=1000 * min(times[key]["b1"]) / len(b1),
                         b32_all_s=times[key]["b32"], b1_all_s=times[key]["b1"])
        name = key[1]
        rows[key]["bytes"] = exports[name]["bytes"] if key[0] == "onnxruntime" else None
    rows[("PyTorch", "dense")]["params"] = encoder_params(dense)
    rows[("PyTorch", "pruned")]["params"] = encoder_params(pruned)

    summary = json.loads((pruned_dir / "summary.json").read_text()) if (pruned_dir / "summary.json").is_file() else {}
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H:%M")
    result = {
        "date": stamp, "machine": machine(), "threads": a.threads, "repeats": a.repeats,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     **{m: __import__(m).__version__ for m in ("onnx", "onnxscript", "onnxruntime")}},
        "task": a.task, "dense_model": a.model, "pruned_model": str(pruned_dir / "model"),
        "constraint": summary.get("constraint", a.constraint), "flops_removed": summary.get("flops_removed"),
        "heads_kept": summary.get("heads_kept"), "neurons_kept": summary.get("neurons_kept"),
        "dev_examples": len(feats), "b1_examples": len(b1), "b32_batches": len(b32), "opset": a.opset,
        "parity_max_abs_diff": parity, "int8_argmax_agreement_with_float": agree,
        "exports": {k: {kk: v[kk] for kk in ("bytes", "bytes_float32", "max_abs_diff", "seconds")} for k, v in exports.items()},
        "rows": list(rows.values()),
        "command": "python benchmarks/onnx_bench.py " + " ".join(sys.argv[1:]),
    }
    if not a.no_write:
        write(result)
    print(json.dumps(result))


def table(result: dict) -> str:
    lines = ["| engine | model | accuracy | F1 | batch 32: s / dev pass | speedup | batch 1: ms / example | speedup | file MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mb = f"{r['bytes'] / 1e6:.1f}" if r.get("bytes") else "–"
        lines.append(f"| {r['engine']} | {r['model']} | {100 * r['accuracy']:.2f} | {100 * r['f1']:.2f} | "
                     f"{r['b32_s']:.3f} | {r['speedup_b32']:.2f} | {r['b1_ms']:.2f} | {r['speedup_b1']:.2f} | {mb} |")
    return "\n".join(lines)


def write(result: dict) -> None:
    out = HERE / "results" / f"{result['date'][:10]}-onnx-{result['task']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    par = result["parity_max_abs_diff"]
    load = result["load_average_1min"]
    text = (f"\n## ONNX export and onnxruntime, {result['date']} (`benchmarks/onnx_bench.py`)\n\n"
            f"Machine: 2-core CPU ({result['machine']}), {result['threads']} intra-op threads for PyTorch and "
            f"onnxruntime; {', '.join(f'{k} {v}' for k, v in result['versions'].items())}; opset {result['opset']}. "
            f"Command: `{result['command'].strip()}` (`make bench-onnx`). MiniLM-L6 MRPC, dense vs K-prune at "
            f"{result['constraint']:.0%} FLOPs removed (20 000 tokens; heads kept {result['heads_kept']}, neurons kept "
            f"{result['neurons_kept']}). MRPC dev set ({result['dev_examples']} pairs) sorted by length; batch 32 = one "
            f"pass over all of it ({result['b32_batches']} batches), batch 1 = {result['b1_examples']} examples spread "
            f"over the lengths; median of {result['repeats']} interleaved rounds after a warm-up; speedups against "
            f"PyTorch dense. onnxruntime parity with PyTorch over the dev set (max abs logit difference): dense "
            f"{par['dense']:.2g}, pruned {par['pruned']:.2g}. int8 predictions agreeing with float: "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in result["int8_argmax_agreement_with_float"].items())
            + f". 1-minute load average {load['start']:.1f} at the start, {load['end']:.1f} at the end (other work "
            "shared the cores).\n\n" + table(result) + "\n")
    with open(HERE / "RESULTS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
