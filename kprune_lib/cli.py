"""`kprune` command line: prune, evaluate."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config import SCHEDULES, PruneConfig

D = PruneConfig()


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1) (fraction of FLOPs removed), got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="fine-tuned checkpoint: local folder, hub id, or a kprune output model/")
    p.add_argument("--task", required=True, help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte")
    p.add_argument("--data-dir", default=None,
                   help="local GLUE root in the official layout (e.g. ../shared/data/glue); default: the hub (nyu-mll/glue)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-length", type=_positive_int, default=None, help="max tokens per example (default: task's, 128; SST-2 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="kprune", description="Retraining-free structured pruning (K-prune).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", formatter_class=fmt, help="prune a checkpoint to a FLOPs budget",
                       description="Prune heads and FFN neurons bottom-up until the FLOPs budget is met; "
                                   "writes OUT/model/ and OUT/summary.json.")
    _common(p)
    p.add_argument("--constraint", type=_fraction, default=D.constraint, help="fraction of FLOPs to remove, in (0, 1)")
    p.add_argument("--num-tokens", type=_positive_int, default=D.num_tokens, help="sample size in tokens")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the sample draw")
    p.add_argument("--lam-pred", type=float, default=D.lam_pred, help="weight of predictive knowledge (0 = ablate)")
    p.add_argument("--lam-rep", type=float, default=D.lam_rep, help="weight of representational knowledge (0 = ablate)")
    p.add_argument("--mu", type=float, default=D.mu, help="head score multiplier")
    p.add_argument("--temperature", type=float, default=D.temperature, help="softmax temperature of the predictive KL")
    p.add_argument("--no-tuning", action="store_true", help="skip knowledge-preserving weight tuning (ablation)")
    p.add_argument("--schedule", choices=SCHEDULES, default=D.schedule,
                   help="cached: never re-run frozen layers; naive: reference full pass per sublayer (same masks)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="sample batch size (default: 32 GLUE)")
    p.add_argument("--output", required=True, help="output folder (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")

    e = sub.add_parser("evaluate", formatter_class=fmt, help="print a checkpoint's dev metrics as JSON")
    _common(e)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kprune: %(message)s")
    from . import api  # heavy imports after argument parsing, so --help is fast

    try:
        if args.command == "prune":
            cfg = PruneConfig(constraint=args.constraint, num_tokens=args.num_tokens, seed=args.seed,
                              lam_pred=args.lam_pred, lam_rep=args.lam_rep, mu=args.mu, temperature=args.temperature,
                              tuning=not args.no_tuning, schedule=args.schedule, batch_size=args.batch_size,
                              max_length=args.max_length)
            summary = api.prune(args.model, args.task, args.output, data_dir=args.data_dir, device=args.device,
                                overwrite=args.overwrite, progress=not args.quiet, config=cfg)
            m = summary["metric"]
            print(json.dumps({k: summary[k] for k in ("task", "constraint", "flops_removed", "metric", "pruning_seconds")}
                             | {"dense": summary["dense"][m], "pruned": summary["pruned"][m], "output": args.output}))
        else:
            print(json.dumps(api.evaluate(args.model, args.task, data_dir=args.data_dir, device=args.device,
                                          max_length=args.max_length, progress=not args.quiet)))
    except (ValueError, OSError, FloatingPointError, KeyError) as e:
        if os.environ.get("KPRUNE_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"kprune: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
