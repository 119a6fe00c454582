"""`kprune` command line: prune, evaluate, finetune, sweep, export, latency-table."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from kprune_lib.config import (LATENCY_STALE_TOLERANCE, LATENCY_TABLE_POLICIES, PRED_KNOWLEDGE, SCHEDULES, Budget,
                               PruneConfig)
from kprune_lib.method.methods import METHOD_NAMES, format_methods, methods_by_role
from kprune_lib.finetune import FinetuneConfig

D = PruneConfig()
FT = FinetuneConfig()


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


def _split_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1) (fraction of the articles), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _latency_options(p: argparse.ArgumentParser, budget: bool) -> None:
    """The latency budget's setting (README "Latency budgets"); the budget itself only where `budget`."""
    g = p.add_argument_group("latency" + (" budget (instead of --constraint)" if budget else ""))
    if budget:
        g.add_argument("--latency-budget", "--latency-budget-ms", dest="latency_budget_ms", type=_positive_float,
                       default=D.latency_budget_ms, metavar="MS",
                       help="prune until one forward of --latency-batch examples × --latency-seq tokens is predicted "
                            "to take at most MS milliseconds on --latency-device (instead of --constraint)")
    g.add_argument("--latency-batch", type=_positive_int, default=D.latency_batch, help="examples per batch")
    g.add_argument("--latency-seq", type=_positive_int, default=D.latency_seq, help="tokens per example (all real)")
    g.add_argument("--latency-device", choices=("cpu", "cuda"), default=D.latency_device,
                   help="device the latency is measured on (default: the pruning --device)")
    g.add_argument("--threads", type=_positive_int, default=D.threads,
                   help="CPU threads of the latency measurements (default: torch's current setting)")
    g.add_argument("--latency-table-policy", choices=LATENCY_TABLE_POLICIES, default=D.latency_table_policy,
                   help="a cached table whose dense total is more than "
                        f"{100 * LATENCY_STALE_TOLERANCE:.0f} %% off the model re-timed now (another machine state): "
                        "remeasure it, or keep it (with a warning)")


def _seq_len(text: str) -> float | str:
    if text in ("measured", "reference"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'reference', 'measured' or a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _common(p: argparse.ArgumentParser, model_help: str = "fine-tuned checkpoint: local folder, hub id, or a kprune "
            "output model/", own_data: bool = False) -> None:
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--tokenizer", default=None, metavar="NAME_OR_DIR",
                   help="the tokenizer's folder or hub id, when --model has none of its own (a folder saved with "
                        "save_pretrained of the model alone); default: the model's")
    if own_data:
        p.add_argument("--task", default=None, help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte; or squad, "
                                                    "squad_v2; leave it out (or 'custom') for your own data files "
                                                    "(--validation-file, docs/own-data.md)")
    else:
        p.add_argument("--task", required=True, help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte; or squad, "
                                                     "squad_v2")
    p.add_argument("--data-dir", default=None,
                   help="local GLUE root in the official layout (e.g. ../shared/data/glue), or for SQuAD a folder with "
                        "the official train-v1.1.json / dev-v1.1.json (v2.0); default: the hub (nyu-mll/glue, "
                        "rajpurkar/squad, rajpurkar/squad_v2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-length", type=_positive_int, default=None,
                   help="max tokens per example (default: task's, 128; SST-2 64; SQuAD 384 with a 128-token stride)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _squad_options(p: argparse.ArgumentParser, train_side: str | None) -> None:
    """SQuAD-only data options; train_side names what the training-side file is for (None: no such file)."""
    g = p.add_argument_group("SQuAD data (squad, squad_v2 only)")
    g.add_argument("--eval-file", default=None, help="official SQuAD JSON to evaluate on (default: under --data-dir, "
                                                     "else the hub's validation split)")
    if train_side:
        g.add_argument(*(["--sample-file", "--train-file"] if train_side == "sample" else ["--train-file"]),
                       dest="train_file", default=None,
                       help=f"official SQuAD JSON the {'pruning sample is drawn' if train_side == 'sample' else 'model is trained'}"
                            " from (default: under --data-dir, else the hub's train split); must share no question id "
                            "or article title with the evaluation file"
                            + ("; without --task: your own data file the sample is drawn from (see "
                               "--validation-file)" if train_side == "sample" else ""))
    g.add_argument("--split-articles", type=_split_fraction, default=None, metavar="FRACTION",
                   help="cut the evaluation file by article: this fraction of its articles (seeded by --split-seed) is "
                        "the training/sample side, the rest is evaluated; the same FRACTION and seed give the same cut "
                        "in finetune, prune and evaluate")
    g.add_argument("--split-seed", type=int, default=0, help="seed of --split-articles")


def _own_data_options(p: argparse.ArgumentParser, train: bool | None) -> None:
    """Your own sequence-classification / regression files (run_glue.py's conventions) or token-classification
    files (run_ner.py's; docs/own-data.md). train: prune (True), evaluate (False), finetune (None)."""
    g = p.add_argument_group("your own data (without --task; .csv, .tsv, .json/.jsonl, .parquet)")
    g.add_argument("--validation-file", default=None, metavar="FILE",
                   help="the data set evaluated on (its mean length is L_seq of the FLOPs formula)"
                        + ("; the pruning sample is drawn from --train-file" if train else ""))
    g.add_argument("--text-columns", default=None, metavar="A[,B]",
                   help="one or two text columns (default: sentence1,sentence2 when present, else the first one or "
                        "two string columns, as run_glue.py)")
    g.add_argument("--label-column", default=None, metavar="NAME",
                   help="the label column (default: label): class names of the checkpoint's label2id or class ids; "
                        "numbers for a regression checkpoint (num_labels 1)")
    g.add_argument("--task-type", choices=("sequence-classification", "token-classification"), default=None,
                   help="token-classification: a words column (--text-columns, default tokens) and a tags column "
                        "(--label-column, default ner_tags), as run_ner.py; default: what the checkpoint is "
                        "(…ForTokenClassification: token classification)" + ("; kprune finetune needs it for your own files"
                                                                           if train is None else ""))
    if train is None:
        return
    g.add_argument("--dataset", default=None, metavar="NAME",
                   help="instead of the files: a data set datasets.load_dataset reads (a hub id, offline from its "
                        "cache, or a local data-set folder) with its splits"
                        + (" --train-split and" if train else "") + " --validation-split")
    g.add_argument("--dataset-config", default=None, metavar="CONFIG", help="the data set's configuration")
    if train:
        g.add_argument("--train-split", default=None, metavar="SPLIT",
                       help="the split the pruning sample is drawn from (default: train)")
    g.add_argument("--validation-split", default=None, metavar="SPLIT",
                   help="the split evaluated on (default: validation)")
    g.add_argument("--metric", default=None, metavar="NAME",
                   help="the primary metric of your own sequence-classification or regression data: accuracy, "
                        "f1_macro or mcc (default accuracy); spearman or pearson (default spearman)")


def _squad_args(args) -> dict:
    """The data options of prune, evaluate and finetune beside --model and --task (SQuAD files, your own files,
    --tokenizer)."""
    return {k: getattr(args, k) for k in ("train_file", "eval_file", "split_articles", "split_seed", "tokenizer",
                                          "validation_file", "text_columns", "label_column", "task_type",
                                          "dataset", "dataset_config", "train_split", "validation_split", "metric")
            if hasattr(args, k)}


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="kprune", description="Retraining-free structured pruning (K-prune).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", formatter_class=fmt, help="prune a checkpoint to a FLOPs or latency budget",
                       description="Prune heads and FFN neurons bottom-up until the FLOPs (or latency) budget is met; "
                                   "writes OUT/model/ and OUT/summary.json.")
    _common(p, own_data=True)
    p.add_argument("--constraint", type=_fraction, default=None,
                   help=f"fraction of FLOPs to remove, in (0, 1) (default {D.constraint}; or --latency-budget)")
    p.add_argument("--num-tokens", type=_positive_int, default=D.num_tokens, help="sample size in tokens")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the sample draw")
    p.add_argument("--lam-pred", type=float, default=D.lam_pred, help="weight of predictive knowledge (0 = ablate)")
    p.add_argument("--lam-rep", type=float, default=D.lam_rep, help="weight of representational knowledge (0 = ablate)")
    p.add_argument("--mu", type=float, default=D.mu, help="head score multiplier")
    p.add_argument("--temperature", type=float, default=D.temperature, help="softmax temperature of the predictive KL")
    p.add_argument("--no-tuning", action="store_true", help="skip knowledge-preserving weight tuning (ablation)")
    p.add_argument("--method", choices=METHOD_NAMES, default=D.method, metavar="METHOD",
                   help=f"{methods_by_role()} (`kprune methods` lists what each one changes)")
    p.add_argument("--schedule", choices=SCHEDULES, default=D.schedule,
                   help="cached: never re-run frozen layers; naive: reference full pass per sublayer (same masks)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="sample batch size: consecutive draws whose mean loss is differentiated (default: 32 GLUE, "
                        "12 SQuAD)")
    p.add_argument("--batch-tokens", type=int, default=D.batch_tokens,
                   help="padded tokens per length-sorted compute batch (default: 2048 CPU, 16384 CUDA); 0 computes "
                        "on the sample batches as drawn; the masks do not depend on it")
    p.add_argument("--pred-knowledge", choices=PRED_KNOWLEDGE, default=D.pred_knowledge,
                   help="batch: the paper's ½(batch-mean gradient)²; example: per-example empirical Fisher; "
                        "gauss-newton: per-example ½ JᵀHJ of the predictive loss (classification, regression)")
    p.add_argument("--damping", type=float, default=D.damping,
                   help="K-prune+ candidate: shrink the tuned weights toward the current ones, δ = damping·mean "
                        "diag(AᵀA) (0 = the paper's least squares)")
    p.add_argument("--gold-first", action="store_true",
                   help="at the first sublayer, measure predictive knowledge with the gold-label loss (GLUE only)")
    p.add_argument("--seq-len", type=_seq_len, default=None,
                   help="SQuAD only: L_seq of the FLOPs formula: 'reference' (the paper's 170, default), 'measured' "
                        "(mean length of the evaluation features) or a number; GLUE always measures its dev set")
    p.add_argument("--output", required=True, help="output folder (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")

    _squad_options(p, "sample")
    _own_data_options(p, train=True)
    _latency_options(p, budget=True)

    lt = sub.add_parser("latency-table", formatter_class=fmt, help="measure (or show the cached) latency table",
                        description="Time the model's attention sublayer with 0…H heads and its FFN sublayer on a grid "
                                    "of widths (physically shrunk, median of interleaved rounds, made monotone) and "
                                    "its whole forward on the device; print the table (cached under "
                                    "$KPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/kprune or ~/.cache/kprune); the last line "
                                    "is 'dense: <X> ms'.")
    lt.add_argument("--model", required=True, help="checkpoint: local folder, hub id, or a kprune output model/")
    _latency_options(lt, budget=False)
    lt.add_argument("--refresh", "--remeasure", dest="remeasure", action="store_true",
                    help="measure again even if the table is cached")
    lt.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("methods", formatter_class=fmt, help="list the methods of --method: what each changes, its labels, "
                   "budgets and task kinds")
    e = sub.add_parser("evaluate", formatter_class=fmt, help="print a checkpoint's dev metrics as JSON")
    _common(e, own_data=True)
    _squad_options(e, None)
    _own_data_options(e, train=False)

    w = sub.add_parser("sweep", formatter_class=fmt, help="run notebook 04 over a YAML grid, then the report",
                       description="Execute notebooks/04 (papermill) for every point of GRID into "
                                   "OUTPUT/<task>/<method>/c<constraint>/seed<seed>/, aggregate RESULTS/results.csv "
                                   "and render RESULTS/report.html with notebooks/05. A finished point is reused "
                                   "only when its point.json identity (model and data fingerprints, every parameter) "
                                   "equals the planned one; any other reruns, and the sweep says why.")
    w.add_argument("grid", help="YAML grid, e.g. papermill_runs/grid_minilm.yaml")
    w.add_argument("--workers", type=_positive_int, default=argparse.SUPPRESS,
                   help="local executor: points run in parallel worker processes, each on its own GPU "
                        "(CUDA_VISIBLE_DEVICES) when there are GPUs (default: one per GPU, else 1)")
    w.add_argument("--output-dir", default=None, help="point folders (overrides the grid's output_dir)")
    w.add_argument("--results-dir", default=None, help="results.csv, report.html, figures/ (overrides the grid's results_dir)")
    w.add_argument("--no-report", action="store_true", help="aggregate results.csv but do not render the report")
    w.add_argument("--report-only", action="store_true", help="run no point; aggregate and render the report")
    w.add_argument("--reuse", choices=("identical", "never"), default="identical",
                   help="identical: reuse a finished point whose identity matches; never: rerun every point")
    w.add_argument("--dry-run", action="store_true",
                   help="list each point with what would happen (reuse, or run and why); change nothing")
    w.add_argument("--executor", choices=("local", "slurm"), default=argparse.SUPPRESS,
                   help="where points run: local worker processes, or one SLURM job per point through submitit "
                        "(default: the grid's executor:, else local)")
    s = w.add_argument_group("SLURM (--executor slurm; each overrides the grid's slurm: key of the same name)")
    s.add_argument("--partition", default=argparse.SUPPRESS, help="partition (default: the cluster's default)")
    s.add_argument("--account", default=argparse.SUPPRESS, help="account to charge")
    s.add_argument("--qos", default=argparse.SUPPRESS, help="quality of service")
    s.add_argument("--time-min", type=_positive_int, default=argparse.SUPPRESS,
                   help="time limit per point's job, minutes (60)")
    s.add_argument("--gpus", type=int, default=argparse.SUPPRESS, help="GPUs per job (0)")
    s.add_argument("--cpus-per-task", type=_positive_int, default=argparse.SUPPRESS,
                   help="CPU cores per job, also its threads (4)")
    s.add_argument("--mem-gb", type=float, default=argparse.SUPPRESS,
                   help="memory per job in GB (16; 0: the partition's default)")
    s.add_argument("--array-parallelism", type=_positive_int, default=argparse.SUPPRESS,
                   help="at most this many points' jobs at once (32)")

    f = sub.add_parser("finetune", formatter_class=fmt, help="fine-tune a base encoder on a GLUE task, SQuAD or your "
                       "own token-classification files",
                       description="Plain PyTorch fine-tuning (AdamW, linear warm-up/decay, grad clipping, dynamic "
                                   "padding, seeded); writes a Hugging Face checkpoint folder and finetune.json.")
    _common(f, model_help="base encoder: local folder or hub id (a new task head is initialised)", own_data=True)
    f.add_argument("--output", required=True, help="output folder (written atomically)")
    f.add_argument("--epochs", type=float, default=FT.epochs, help="passes over the training set (fractions allowed)")
    f.add_argument("--lr", type=float, default=FT.lr, help="peak learning rate")
    f.add_argument("--batch-size", type=_positive_int, default=FT.batch_size, help="training batch size")
    f.add_argument("--seed", type=int, default=FT.seed, help="seed of head init, dropout, shuffling and subset")
    f.add_argument("--weight-decay", type=float, default=FT.weight_decay, help="AdamW weight decay")
    f.add_argument("--warmup-ratio", type=float, default=FT.warmup_ratio, help="fraction of steps of linear warm-up")
    f.add_argument("--max-train-examples", type=_positive_int, default=None,
                   help="train on a seeded random subset of this many examples (None: all)")
    f.add_argument("--save-dtype", choices=("float32", "float16", "bfloat16"), default=FT.save_dtype,
                   help="dtype of the saved weights")
    f.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    _squad_options(f, "train")
    _own_data_options(f, train=None)

    x = sub.add_parser("export", formatter_class=fmt, help="export a model to ONNX for onnxruntime",
                       description="Write one self-contained ONNX file (atomically): inputs input_ids, attention_mask "
                                   "(and token_type_ids where the architecture has them), dynamic batch and sequence "
                                   "axes; outputs logits, or start_logits and end_logits for question answering. "
                                   "Layers with no head export no attention work. The file is checked in onnxruntime "
                                   "against PyTorch (max abs logit difference <= 1e-4) before it is written. Needs "
                                   "pip install 'kprune-lib[onnx]'.")
    x.add_argument("--model", required=True,
                   help="a pruned OUT/model folder (written by kprune prune), or a dense fine-tuned checkpoint (local "
                        "folder or hub id) of a supported architecture, e.g. to compare with the pruned one")
    x.add_argument("--output", required=True, help="the .onnx file to write")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset, 17-25 (LayerNormalization needs 17; from 23 on "
                                                         "attention is one Attention node)")
    x.add_argument("--int8", action="store_true",
                   help="write onnxruntime's dynamically quantized graph instead (int8 MatMul weights, activations "
                        "quantized at run time; the float32 graph is checked first)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM sends on pre-emption), raised where the program is, so that it unwinds like Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


class _LineEnd:
    """sys.stderr, remembering whether its last write ended a line (an interrupt's message must start one)."""

    def __init__(self, stream):
        self._stream, self.at_line_start = stream, True

    def write(self, text):
        if text:
            self.at_line_start = text[-1] in "\n\r"
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _clear_progress_bars() -> None:
    """Erase the progress bars an interrupt left half-drawn, so that its message starts a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    classes, bars = [tqdm], set()
    while classes:  # a subclass made before any tqdm keeps its own _instances (e.g. transformers' loading bars)
        cls = classes.pop()
        bars.update(cls.__dict__.get("_instances", ()))
        classes.extend(cls.__subclasses__())
    for bar in bars:
        bar.leave = False
        bar.close()


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C (or SIGTERM) prints one line and exits 130 (143): outputs are written atomically, so nothing is
    half-written; a sweep keeps its finished points and cancels or stops the rest (a re-run resumes)."""
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() \
        else None
    stderr = sys.stderr = _LineEnd(sys.stderr)
    try:
        return _run(argv)
    except KeyboardInterrupt as e:
        if os.environ.get("KPRUNE_DEBUG"):
            raise
        terminated = isinstance(e, Terminated)
        _clear_progress_bars()
        print(f"{'' if stderr.at_line_start else chr(10)}kprune: {'terminated' if terminated else 'interrupted'}; "
              "nothing written", file=sys.stderr, flush=True)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        sys.stderr = stderr._stream
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kprune: %(message)s")
    if args.command == "sweep":
        from kprune_lib.workbook.sweep import GridError, main_sweep

        try:
            slurm = {k: getattr(args, k, None) for k in ("partition", "account", "qos", "time_min", "gpus",
                                                         "cpus_per_task", "mem_gb", "array_parallelism")}
            return main_sweep(args.grid, getattr(args, "workers", None), args.output_dir, args.results_dir,
                              report=not args.no_report, report_only=args.report_only,
                              executor=getattr(args, "executor", None), slurm=slurm, reuse=args.reuse,
                              dry_run=args.dry_run)
        except GridError as e:
            print(f"kprune: error: {e}", file=sys.stderr)
            return 2
    if args.command == "methods":
        print(format_methods())
        return 0
    from kprune_lib import api  # heavy imports after argument parsing, so --help is fast

    try:
        if args.command == "prune":
            if args.constraint is not None and args.latency_budget_ms is not None:
                Budget.of(args.constraint, args.latency_budget_ms)  # both given: the one check says so
            constraint = D.constraint if args.constraint is None else args.constraint
            cfg = PruneConfig(constraint=constraint, num_tokens=args.num_tokens, seed=args.seed,
                              lam_pred=args.lam_pred, lam_rep=args.lam_rep, mu=args.mu, temperature=args.temperature,
                              tuning=not args.no_tuning, schedule=args.schedule, batch_size=args.batch_size,
                              method=args.method, max_length=args.max_length, batch_tokens=args.batch_tokens,
                              pred_knowledge=args.pred_knowledge, gold_first=args.gold_first,
                              damping=args.damping, latency_budget_ms=args.latency_budget_ms,
                              latency_batch=args.latency_batch, latency_seq=args.latency_seq,
                              latency_device=args.latency_device, threads=args.threads,
                              latency_table_policy=args.latency_table_policy)
            summary = api.prune(args.model, args.task, args.output, data_dir=args.data_dir, device=args.device,
                                overwrite=args.overwrite, progress=not args.quiet, config=cfg, seq_len=args.seq_len,
                                **_squad_args(args))
            m = summary["metric"]
            keys = ("task", "constraint", "latency_budget_ms", "predicted_latency_ms", "measured_latency_ms",
                    "measured_over_budget", "budget_miss", "dense_latency_ms", "flops_removed", "metric",
                    "pruning_seconds")
            collapse = {"collapsed": "the pruned model predicts one class for every dev example (a near-constant "
                                     "for regression): its metric is the data's, not the model's"} \
                if summary.get("collapsed", {}).get("pruned") else {}
            print(json.dumps({k: summary[k] for k in keys if k in summary}
                             | {"dense": summary["dense"][m], "pruned": summary["pruned"][m]} | collapse
                             | {"output": args.output}))
        elif args.command == "latency-table":
            from kprune_lib.artifacts.checkpoint import load_model
            from kprune_lib.costs.latency import format_table, latency_table

            device = api.resolve_device(args.latency_device or "auto")
            model, _ = load_model(args.model, device=device)
            table = latency_table(model, args.latency_batch, args.latency_seq, device, args.threads,
                                  refresh=args.remeasure, progress=not args.quiet,
                                  policy=args.latency_table_policy)
            print(format_table(table))
        elif args.command == "finetune":
            ft = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
                                max_length=args.max_length, max_train_examples=args.max_train_examples,
                                save_dtype=args.save_dtype)
            record = api.finetune(args.model, args.task, args.output, data_dir=args.data_dir, device=args.device,
                                  overwrite=args.overwrite, progress=not args.quiet, config=ft, **_squad_args(args))
            print(json.dumps({k: record[k] for k in ("task", "train_examples", "steps", "train_seconds", "dev_metrics")}
                             | {"output": args.output}))
        elif args.command == "export":
            print(json.dumps(api.export_onnx(args.model, args.output, opset=args.opset, int8=args.int8,
                                             overwrite=args.overwrite)))
        else:
            print(json.dumps(api.evaluate(args.model, args.task, data_dir=args.data_dir, device=args.device,
                                          max_length=args.max_length, progress=not args.quiet, **_squad_args(args))))
    except (ValueError, OSError, FloatingPointError, KeyError) as e:
        if os.environ.get("KPRUNE_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"kprune: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
