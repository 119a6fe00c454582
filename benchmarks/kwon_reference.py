"""`--method kwon` against the authors' own Kwon et al. (2022) run on the shared MRPC fixture, stage by stage.

    python benchmarks/kwon_reference.py [--out runs/kwon-reference] [--report benchmarks/KWON.md] [--reuse]

../shared/reference/kwon-mrpc.jsonl holds what WoosukKwon/retraining-free-pruning (806ac5a) produced on
../shared/models/minilm-l6-mrpc at 50 % (MACs kept = FLOPs removed = 0.5), seed 0, 2048 samples: the sample's
hash, the teacher's and the searched head / neuron counts, the final kept indices (after rearrangement, which
rescaling keeps), the units rearrangement changed, the final head scales and per-layer neuron scale statistics, and
the dev accuracy after each stage. This runs `kprune prune --method kwon` with the same settings (a finished run
under --out is reused with --reuse), compares each of these and writes a Markdown report; last, one JSON object.
Exit status 1 if a mask (teacher, search, rearrangement) differs from the authors'.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference" / "kwon-mrpc.jsonl"


def command(out: Path, ref: dict) -> list[str]:
    return [sys.executable, "-m", "kprune_lib.cli", "prune", "--model", str(SHARED / "models" / "minilm-l6-mrpc"),
            "--task", ref["task"], "--data-dir", str(SHARED / "data" / "glue"), "--method", "kwon",
            "--constraint", str(ref["constraint"]), "--seed", str(ref["seed"]), "--device", "cpu",
            "--output", str(out), "--quiet", "--overwrite"]


def sample_sha1(ref: dict) -> str:
    """sha1 of our draw's indices (int64, draw order), as the reference hashed its own."""
    import numpy as np

    from kprune_lib.data.batching import sample_indices
    from kprune_lib.data.glue import load_glue
    from kprune_lib.data.tasks import get_task

    pool = len(load_glue(get_task(ref["task"]), "train", str(SHARED / "data" / "glue")))
    idx = sample_indices(pool, 0, 1.0, ref["seed"], examples=ref["num_samples"]).numpy().astype(np.int64)
    return hashlib.sha1(idx.tobytes()).hexdigest()


def differing(ours: list[list[int]], theirs: list[list[int]]) -> int:
    return sum(len(set(a) ^ set(b)) for a, b in zip(ours, theirs))


def kept_neurons(stage: dict) -> list[list[int]]:
    from kprune_lib.method.kwon import mask_from_hex

    return [mask_from_hex(h, 4 * len(h)).nonzero().flatten().tolist() for h in stage["neuron_masks_hex"]]


def compare(ref: dict, summary: dict) -> dict:
    search, rearrange, rescale = summary["stages"]
    teacher = search["teacher"]
    scales = [[s for s in row] for row in rescale["head_scales"]]
    head_scale_diff = max(abs(a - b) for r1, r2 in zip(scales, ref["final_head_scales"]) for a, b in zip(r1, r2))
    return {
        "sample_sha1_equal": sample_sha1(ref) == ref["sample_idx_sha1"],
        "sample_examples": summary["sample_examples"],
        "teacher": {"ours": [teacher["heads_kept"], teacher["neurons_kept"]],
                    "authors": [ref["teacher_heads_per_layer"], ref["teacher_neurons_per_layer"]]},
        "search": {"ours": [search["heads_kept"], search["neurons_kept"]],
                   "authors": [ref["heads_per_layer_search"], ref["neurons_per_layer_search"]],
                   "dev_acc": search["dev"]["accuracy"], "authors_dev_acc": ref["dev_acc_search"]},
        "rearrange": {"heads_differing": differing(rearrange["kept_heads"], ref["kept_head_indices"]),
                      "neurons_differing": differing(kept_neurons(rearrange), ref["kept_neuron_indices"]),
                      "changed": [rearrange["changed_heads"], rearrange["changed_neurons"]],
                      "authors_changed": [ref["search_vs_rearrange_changed_heads"],
                                          ref["search_vs_rearrange_changed_neurons"]],
                      "dev_acc": rearrange["dev"]["accuracy"], "authors_dev_acc": ref["dev_acc_rearrange"]},
        "rescale": {"heads_differing": differing(rescale["kept_heads"], ref["kept_head_indices"]),
                    "neurons_differing": differing(kept_neurons(rescale), ref["kept_neuron_indices"]),
                    "solves": [[s["sublayer"], s["istop"], s["accepted"]] for s in rescale["solves"]],
                    "stopped_at": rescale["stopped_at"], "head_scale_max_abs_diff": head_scale_diff,
                    "neuron_scale_stats": rescale["neuron_scale_stats"],
                    "authors_neuron_scale_stats": ref["final_neuron_scale_stats_per_layer"],
                    "dev_acc": rescale["dev"]["accuracy"], "authors_dev_acc": ref["dev_acc_rescale"]},
        "saved_model_dev_acc": summary["pruned"]["accuracy"], "dense_dev_acc": summary["dense"]["accuracy"],
        "authors_dense_dev_acc": ref["dense_dev_acc"],
        "mac_fraction_kept": 1.0 - summary["flops_removed"], "authors_mac_fraction_kept": ref["mac_fraction_final"],
        "seconds": summary["stage_seconds"], "pruning_seconds": summary["pruning_seconds"],
        "authors_seconds": ref["seconds"],
    }


def masks_equal(c: dict) -> bool:
    return (c["teacher"]["ours"] == c["teacher"]["authors"] and c["search"]["ours"] == c["search"]["authors"]
            and c["rearrange"]["heads_differing"] == 0 and c["rearrange"]["neurons_differing"] == 0)


def render(c: dict, cmd: str, summary: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    yes = lambda b: "yes" if b else "**no**"  # noqa: E731
    s, r, q = c["search"], c["rearrange"], c["rescale"]
    stats = [f"{o['min']:.3f} / {o['max']:.3f} / {o['mean']:.3f} vs {a['min']:.3f} / {a['max']:.3f} / {a['mean']:.3f}"
             for o, a in zip(q["neuron_scale_stats"], q["authors_neuron_scale_stats"])]
    lines = [
        "# `--method kwon` against the authors' Kwon et al. (2022) code, stage by stage",
        "",
        f"Run {summary['date'][:10]} on {summary['device']} (torch {summary['versions']['torch']}, transformers "
        f"{summary['versions']['transformers']}), {summary['provenance']['threads']} threads, commit "
        f"{str(summary['provenance'].get('commit'))[:12]}{' (uncommitted changes)' if summary['provenance'].get('dirty') else ''}. "
        "Command (what `python benchmarks/kwon_reference.py` runs):",
        "",
        "```bash",
        cmd,
        "```",
        "",
        "The reference is `../shared/reference/kwon-mrpc.jsonl`: WoosukKwon/retraining-free-pruning (806ac5a) run as "
        "its `main.py` is written on `../shared/models/minilm-l6-mrpc`, MRPC, 50 % (their 0.5 of MACs kept = our "
        "0.5 of FLOPs removed), seed 0, 2048 samples, CPU float32 (its README lists the environment bridges).",
        "",
        "| stage | what is compared | ours | authors' | equal |",
        "|---|---|---|---|---|",
        f"| sample | sha1 of the 2048 drawn indices | | | {yes(c['sample_sha1_equal'])} |",
        f"| teacher search (√0.5 of MACs kept) | heads / neurons kept per layer | {c['teacher']['ours']} | "
        f"{c['teacher']['authors']} | {yes(c['teacher']['ours'] == c['teacher']['authors'])} |",
        f"| search | heads / neurons kept per layer | {s['ours']} | {s['authors']} | {yes(s['ours'] == s['authors'])} |",
        f"| search | dev accuracy | {pct(s['dev_acc'])} | {pct(s['authors_dev_acc'])} | "
        f"{yes(abs(s['dev_acc'] - s['authors_dev_acc']) < 1e-9)} |",
        f"| rearrangement | units changed from the search (heads, neurons) | {r['changed']} | {r['authors_changed']} | "
        f"{yes(r['changed'] == r['authors_changed'])} |",
        f"| rearrangement | kept heads / neurons differing from theirs, by index | {r['heads_differing']} / "
        f"{r['neurons_differing']} | 0 / 0 | {yes(r['heads_differing'] == 0 and r['neurons_differing'] == 0)} |",
        f"| rearrangement | dev accuracy | {pct(r['dev_acc'])} | {pct(r['authors_dev_acc'])} | "
        f"{yes(abs(r['dev_acc'] - r['authors_dev_acc']) < 1e-9)} |",
        f"| rescaling | kept units differing (heads / neurons) | {q['heads_differing']} / {q['neurons_differing']} | "
        f"0 / 0 | {yes(q['heads_differing'] == 0 and q['neurons_differing'] == 0)} |",
        f"| rescaling | largest head-scale difference | {q['head_scale_max_abs_diff']:.2e} | | |",
        f"| rescaling | dev accuracy (masked model) | {pct(q['dev_acc'])} | {pct(q['authors_dev_acc'])} | "
        f"{yes(abs(q['dev_acc'] - q['authors_dev_acc']) < 1e-9)} |",
        f"| saved model | dev accuracy of the physically pruned model (scales folded into the weights) | "
        f"{pct(c['saved_model_dev_acc'])} | | |",
        f"| | MACs (= FLOPs) kept (L_seq: ours measured, 53.2426; theirs 53.24) | {c['mac_fraction_kept']:.7f} | "
        f"{c['authors_mac_fraction_kept']:.7f} | |",
        f"| dense | dev accuracy | {pct(c['dense_dev_acc'])} | {pct(c['authors_dense_dev_acc'])} | |",
        "",
        "Rescaling solves (sublayer, LSMR istop, accepted; istop −1: the 1 × 1 closed form): "
        + ", ".join(f"({s}, {i}, {'yes' if a else 'no'})" for s, i, a in q["solves"])
        + f"; stopped at: {q['stopped_at'] if q['stopped_at'] is not None else 'none (every kept unit rescaled)'}.",
        "",
        "Neuron scales per layer, min / max / mean, ours vs theirs: " + "; ".join(stats) + ".",
        "",
        f"Pruning time {c['pruning_seconds']:.0f} s (stages: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in c["seconds"].items())
        + f"; dev evaluations excluded); the authors' run on its own machine: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in c["authors_seconds"].items() if k in ("grads", "search", "rearrange",
                                                                                       "rescale")) + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "kwon-reference")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "KWON.md")
    ap.add_argument("--reuse", action="store_true", help="reuse a finished run under --out")
    args = ap.parse_args(argv)
    ref = json.loads(REFERENCE.read_text().splitlines()[0])
    cmd = command(args.out, ref)
    if not (args.reuse and (args.out / "summary.json").exists()):
        subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT)
    summary = json.loads((args.out / "summary.json").read_text())
    c = compare(ref, summary)
    shown = " ".join(["python"] + [a if "/" not in a else os.path.relpath(a, ROOT) for a in cmd[1:]])
    args.report.write_text(render(c, shown, summary))
    print(json.dumps({**c, "masks_equal": masks_equal(c), "checked": dt.date.today().isoformat()}))
    return 0 if masks_equal(c) else 1


if __name__ == "__main__":
    sys.exit(main())
