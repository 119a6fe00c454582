"""The README's measured table: `kprune prune` on the shared MiniLM-L6 fixtures over tasks × constraints.

    python benchmarks/glue_table.py [--tasks mrpc,stsb] [--constraints 0.4,0.5,0.6,0.7,0.8] [--num-tokens 20000]

Runs each point in turn (finished points under --out are reused), then prints a Markdown table
(task, constraint, FLOPs removed, metric, dense, pruned, Δ, params, pruning seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))


def run_point(task: str, constraint: float, tokens: int, seed: int, out: Path) -> dict:
    summary = out / "summary.json"
    if not summary.exists():
        cmd = [sys.executable, "-m", "kprune_lib.cli", "prune", "--model", str(SHARED / "models" / f"minilm-l6-{task}"),
               "--task", task, "--data-dir", str(SHARED / "data" / "glue"), "--constraint", str(constraint),
               "--num-tokens", str(tokens), "--seed", str(seed), "--output", str(out), "--quiet"]
        subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(summary.read_text())


def row(s: dict) -> str:
    metric = s["metric"]
    dense, pruned = 100 * s["dense"][metric], 100 * s["pruned"][metric]
    return (f"| {s['task']} | {s['constraint']} | {100 * s['flops_removed']:.1f} % | {metric} | {dense:.2f} | "
            f"{pruned:.2f} | {pruned - dense:+.2f} | {s['params_pruned'] / 1e6:.1f} M | {s['pruning_seconds']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mrpc,stsb")
    p.add_argument("--constraints", default="0.4,0.5,0.6,0.7,0.8")
    p.add_argument("--num-tokens", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/table", help="one sub-folder per point (reused when present)")
    a = p.parse_args()
    lines = ["| task | constraint | FLOPs removed | metric | dense | pruned | Δ | params | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in a.tasks.split(","):
        for c in a.constraints.split(","):
            s = run_point(task, float(c), a.num_tokens, a.seed, Path(a.out) / f"{task}-c{c}-t{a.num_tokens}-s{a.seed}")
            lines.append(row(s))
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
