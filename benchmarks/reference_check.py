"""Reproduce every entry of the K-prune authors' reference runs (../shared/reference/mrpc.jsonl …) unit for unit.

    python benchmarks/reference_check.py [--out runs/accuracy] [--report benchmarks/REFERENCE.md]

Each entry names a task, constraint, num_tokens and seed run by the authors' code on the shared fixture; this runs
`kprune prune` with the same settings (finished points under --out are reused), then counts the kept heads and
neurons that differ from the authors' and compares the dev metrics. Points live in the accuracy protocol's layout
(OUT/<task>/kprune/c<constraint>/seed<seed>/), so its kprune points at the same settings are reused. Prints a Markdown table and, last, one JSON
object; exit status 1 if any entry is not reproduced exactly.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KPRUNE_SHARED", ROOT.parent / "shared"))


def load_reference(folder: Path) -> list[dict]:
    entries = []
    for path in sorted(folder.glob("*.jsonl")):
        if path.name.startswith("kwon-"):  # Kwon et al.'s runs: benchmarks/kwon_reference.py reproduces those
            continue
        entries += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not entries:
        raise FileNotFoundError(f"no reference entries (*.jsonl) under {folder}")
    return entries


def run_entry(entry: dict, out: Path) -> tuple[dict, dict]:
    """(summary.json, kprune.json) of our run with the entry's settings."""
    summary = out / "summary.json"
    if summary.exists() and json.loads(summary.read_text())["num_tokens"] != entry["num_tokens"]:
        raise ValueError(f"{out} holds a run with another num_tokens; pass another --out")
    if not summary.exists():
        cmd = [sys.executable, "-m", "kprune_lib.cli", "prune", "--model",
               str(SHARED / "models" / f"minilm-l6-{entry['task']}"), "--task", entry["task"],
               "--data-dir", str(SHARED / "data" / "glue"), "--constraint", str(entry["constraint"]),
               "--num-tokens", str(entry["num_tokens"]), "--seed", str(entry["seed"]), "--method", "kprune",
               "--output", str(out), "--quiet", "--overwrite"]
        subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads((out / "summary.json").read_text()), json.loads((out / "model" / "kprune.json").read_text())


def units_differing(ours: list[list[int]], theirs: list[list[int]]) -> int:
    """Units kept by exactly one of the two, summed over layers."""
    return sum(len(set(a) ^ set(b)) for a, b in zip(ours, theirs))


def compare(entry: dict, summary: dict, meta: dict) -> dict:
    metrics_equal = all(abs(summary["pruned"][k] - v) < 1e-9 for k, v in entry["pruned"].items())
    row = {"task": entry["task"], "constraint": entry["constraint"], "seed": entry["seed"],
           "heads_differing": units_differing(meta["kept_heads"], entry["kept_heads"]),
           "neurons_differing": units_differing(meta["kept_neurons"], entry["kept_neurons"]),
           "ours": summary["pruned"], "authors": entry["pruned"], "metrics_equal": metrics_equal,
           "pruning_seconds": summary["pruning_seconds"]}
    row["reproduced"] = row["heads_differing"] == 0 and row["neurons_differing"] == 0 and metrics_equal
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| task | constraint | seed | heads differing | neurons differing | ours (acc / f1) | authors (acc / f1) "
             "| reproduced |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda m: " / ".join(f"{100 * v:.2f}" for v in m.values())
        lines.append(f"| {r['task']} | {r['constraint']} | {r['seed']} | {r['heads_differing']} | "
                     f"{r['neurons_differing']} | {fmt(r['ours'])} | {fmt(r['authors'])} | "
                     f"{'yes' if r['reproduced'] else 'NO'} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "runs" / "accuracy"),
                   help="points as OUT/<task>/kprune/c<constraint>/seed<seed>/ (the accuracy protocol's; reused)")
    p.add_argument("--report", default=str(ROOT / "benchmarks" / "REFERENCE.md"))
    a = p.parse_args()
    rows = []
    try:
        for e in load_reference(SHARED / "reference"):
            out = Path(a.out) / e["task"] / "kprune" / f"c{e['constraint']}" / f"seed{e['seed']}"
            rows.append(compare(e, *run_entry(e, out)))
            print(table(rows)[-1], flush=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"reference_check: error: {e}", file=sys.stderr)
        return 2
    lines = ["# The authors' reference runs, reproduced", "",
             f"`python benchmarks/reference_check.py` ({dt.date.today().isoformat()}): every entry of "
             "`../shared/reference/` (the authors' code on the shared MiniLM-L6 fixture) rerun with `kprune prune` "
             "and the same task, constraint, tokens and seed; units differing = kept by exactly one of the two.", "",
             *table(rows), ""]
    Path(a.report).write_text("\n".join(lines))
    print("\n".join(table(rows)))
    print(json.dumps({"entries": len(rows), "reproduced": sum(r["reproduced"] for r in rows),
                      "units_differing": sum(r["heads_differing"] + r["neurons_differing"] for r in rows)}))
    return 0 if all(r["reproduced"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
