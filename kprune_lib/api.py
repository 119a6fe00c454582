"""The public API behind the CLI: `prune` and `evaluate` take the same names as the command options."""
from __future__ import annotations

import copy
import inspect
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from kprune_lib._provenance import provenance
from kprune_lib.data.batching import glue_pruning_sample, padded_tokens
from kprune_lib.encoder.arch import QA_HEAD, Arch, has_head
from kprune_lib.config import (BATCH_TOKENS, FFN_WIDTH_MULTIPLE, GLUE_BATCH_SIZE, LATENCY_STALE_TOLERANCE,
                               SQUAD_BATCH_SIZE, PruneConfig)
from kprune_lib.data.evaluate import evaluate_glue
from kprune_lib.costs.flops import UnitFlops, encoder_params
from kprune_lib.data.glue import DataError
from kprune_lib.data.batching import load_split
from kprune_lib.costs.latency import LatencyTable, latency_table
from kprune_lib.costs.timing import measure_latencies
from kprune_lib._atomic import atomic_dir, check_target
from kprune_lib.artifacts.checkpoint import load_model, pruned_shape, save_pruned, weights_bytes
from kprune_lib.artifacts.model_card import reproduction, write_model_card
from kprune_lib.encoder.physical import prune_physically
from kprune_lib.method import methods
from kprune_lib.method.baselines import run_method
from kprune_lib.finetune import FinetuneConfig, finetune as _finetune
from kprune_lib.data.squad import load_squad, squad_only
from kprune_lib.data.squad_features import evaluate_squad, pruning_data
from kprune_lib.data.files import file_task, sources
from kprune_lib.data.tokens import TASK_TYPE as TOKEN_TASK, token_task
from kprune_lib.data.tasks import get_task

log = logging.getLogger(__name__)


class TaskMismatch(ValueError):
    pass


TASK_TYPES = ("sequence-classification", TOKEN_TASK)  # --task-type of your own data (default: the checkpoint's)


def compute_batch_tokens(config: PruneConfig, device: torch.device) -> int:
    """Padded tokens per compute batch: the config's, else the device type's default. A method whose signal depends
    on the batching (the Fisher baseline's squared batch gradients) always computes on the batches as drawn."""
    if methods.get(config.method).batches_as_drawn:
        return 0
    return BATCH_TOKENS.get(device.type, BATCH_TOKENS["cpu"]) if config.batch_tokens is None else config.batch_tokens


def budget_miss(measured_over_budget: float) -> str | None:
    """"over" / "under" when the measured latency is more than LATENCY_STALE_TOLERANCE away from the budget."""
    if measured_over_budget > 1.0 + LATENCY_STALE_TOLERANCE:
        return "over"
    if measured_over_budget < 1.0 - LATENCY_STALE_TOLERANCE:
        return "under"
    return None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available; use --device cpu")
    return torch.device(device)


def _saved_head(model) -> str | None:
    """"qa" / "token" / "classification": what the checkpoint was saved as (config.json `architectures`), if it
    says."""
    saved = getattr(model.config, "architectures", None) or []
    if any(a.endswith("ForQuestionAnswering") for a in saved):
        return "qa"
    if any(a.endswith("ForTokenClassification") for a in saved):
        return "token"
    if any(a.endswith("ForSequenceClassification") for a in saved):
        return "classification"
    return None


def check_task_head(model, task) -> None:
    """The checkpoint's output layer must match the task (label count, QA vs classification).

    A checkpoint loaded with the other task's auto class gets a new random head; its config still names
    the architecture it was saved as, so both directions are caught."""
    saved = _saved_head(model)
    token = saved == "token" or Arch(model).token_head
    if task.problem == "token" or token:
        if task.problem != "token" or not token:
            raise TaskMismatch(f"the checkpoint is a {'token' if token else 'sequence'}-classification model; "
                               f"{'token classification' if task.problem == 'token' else task.name} needs a "
                               f"{'sequence' if token else 'token'}-classification checkpoint (kprune finetune"
                               f"{' --task-type token-classification' if not token else ''})")
        return
    if task.problem == "qa":
        if not has_head(model, QA_HEAD) or saved == "classification":
            raise TaskMismatch(f"the checkpoint is a sequence-classification model; {task.name} needs a "
                               f"question-answering checkpoint (kprune finetune --task {task.name})")
        return
    if has_head(model, QA_HEAD) or saved == "qa":
        raise TaskMismatch(f"the checkpoint is a question-answering model; {task.name} needs a "
                           "sequence-classification checkpoint")
    n = model.config.num_labels
    if n != task.num_labels:
        raise TaskMismatch(f"checkpoint has {n} output label(s) but {task.name} needs {task.num_labels}; "
                           "use a checkpoint fine-tuned on this task (kprune finetune)")


def _eval_splits(task, data_dir):
    return {split: load_split(task, split, data_dir) for split in task.eval_splits}


def is_custom(task: str | None) -> bool:
    """The user's own data files (--train-file / --validation-file) rather than a GLUE or SQuAD task."""
    return task is None or task.lower() == "custom"


def _custom_options(task: str | None, data_dir, validation_file, text_columns, label_column, task_type=None,
                    hub: dict | None = None, **squad) -> None:
    """A GLUE/SQuAD task takes none of the custom-data options; a custom task takes no SQuAD or --data-dir option.
    hub: the hub data-set options (dataset, dataset_config, train_split, validation_split, metric)."""
    given = [k for k, v in (("validation_file", validation_file), ("text_columns", text_columns),
                            ("label_column", label_column), ("task_type", task_type), *(hub or {}).items())
             if v is not None]
    def flags(names):
        return ", ".join("--" + k.replace("_", "-") for k in names) + (" apply" if len(names) > 1 else " applies")

    if not is_custom(task) and given:
        raise DataError(f"{flags(given)} to your own data files only (leave out --task), not to {task}")
    if is_custom(task):
        extra = [k for k, v in squad.items() if v not in (None, 0)] + (["data_dir"] if data_dir else [])
        if extra:
            raise DataError(f"{flags(extra)} to GLUE or SQuAD tasks only, not to your own data files "
                            "(--train-file, --validation-file)")


def custom_model(model: str, device, tokenizer, train_file, validation_file, text_columns, label_column,
                  task_type: str | None = None, metric: str | None = None):
    """The checkpoint and the custom task its config and the files (or hub data-set splits, `files.sources`) make,
    read and checked here: token classification (`data.tokens`) for a `…ForTokenClassification` checkpoint, else
    sequence classification or regression (`data.files`; metric: its primary metric); task_type, if given, must
    say the same."""
    if task_type not in (None,) + TASK_TYPES:
        raise DataError(f"--task-type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    m, tok = load_model(model, qa=False, device=device, tokenizer=tokenizer)
    if has_head(m, QA_HEAD) or _saved_head(m) == "qa":
        raise TaskMismatch("the checkpoint is a question-answering model; your own data files need a "
                           "sequence- or token-classification checkpoint")
    token = Arch(m).token_head
    if task_type is not None and (task_type == TOKEN_TASK) != token:
        raise TaskMismatch(f"--task-type {task_type}, but the checkpoint is a "
                           f"{TOKEN_TASK if token else TASK_TYPES[0]} model; leave --task-type out (it follows the "
                           "checkpoint) or use a checkpoint of that kind (kprune finetune)")
    if token and metric is not None:
        raise DataError("--metric applies to sequence classification and regression; token classification reports "
                        "entity f1 first (then precision, recall, token accuracy)")
    if token:
        names = tuple(str(m.config.id2label[i]) for i in range(m.config.num_labels))
        return m, tok, token_task(train_file, validation_file, label_names=names, label2id=m.config.label2id,
                                  text_columns=text_columns, label_column=label_column)
    return m, tok, file_task(m.config, train_file, validation_file, text_columns, label_column, metric)


def evaluate(model: str, task: str | None, data_dir: str | None = None, device: str = "auto",
             max_length: int | None = None, progress: bool = True, eval_file: str | None = None,
             split_articles: float | None = None, split_seed: int = 0, tokenizer: str | None = None,
             validation_file: str | None = None, text_columns: str | None = None,
             label_column: str | None = None, task_type: str | None = None, dataset: str | None = None,
             dataset_config: str | None = None, validation_split: str | None = None,
             metric: str | None = None) -> dict[str, float]:
    """Metrics of a checkpoint (ours or any HF one) on the task's dev set(s).

    SQuAD: the evaluation file (or the hub's validation split); with split_articles, only the held-out
    articles that `prune` / `finetune` with the same split evaluate on.
    Your own data (task None or "custom"): validation_file, or a data set's validation_split (default
    "validation") of dataset [dataset_config]; text_columns ("a[,b]"), label_column, metric (docs/own-data.md);
    task_type: "sequence-classification" or "token-classification" (default: what the checkpoint is)."""
    hub = {"dataset": dataset, "dataset_config": dataset_config, "validation_split": validation_split,
           "metric": metric}
    _custom_options(task, data_dir, validation_file, text_columns, label_column, task_type, hub, eval_file=eval_file,
                    split_articles=split_articles)
    if is_custom(task):
        _, validation = sources(None, validation_file, dataset, dataset_config, None, validation_split)
        m, tok, t = custom_model(model, resolve_device(device), tokenizer, None, validation, text_columns,
                                  label_column, task_type, metric)
        check_task_head(m, t)
        return evaluate_glue(m, tok, t, _eval_splits(t, None), max_length or t.max_length, progress)
    t = get_task(task)
    squad_only(t, eval_file=eval_file, split_articles=split_articles, split_seed=split_seed)
    dev = resolve_device(device)
    m, tok = load_model(model, qa=t.problem == "qa", device=dev, tokenizer=tokenizer)
    check_task_head(m, t)
    if t.problem == "qa":
        data = load_squad(t, data_dir, eval_file=eval_file, split_fraction=split_articles, split_seed=split_seed,
                          need_train=False)
        return evaluate_squad(m, tok, t, data.eval, max_length, progress)
    return evaluate_glue(m, tok, t, _eval_splits(t, data_dir), max_length or t.max_length, progress)


def prune(model: str, task: str | None, output: str, data_dir: str | None = None, device: str = "auto",
          overwrite: bool = False, progress: bool = True, config: PruneConfig | None = None,
          train_file: str | None = None, eval_file: str | None = None, split_articles: float | None = None,
          split_seed: int = 0, seq_len: float | str | None = None, command: str | None = None,
          tokenizer: str | None = None, validation_file: str | None = None, text_columns: str | None = None,
          label_column: str | None = None, task_type: str | None = None, dataset: str | None = None,
          dataset_config: str | None = None, train_split: str | None = None, validation_split: str | None = None,
          metric: str | None = None, **overrides) -> dict:
    """Prune a fine-tuned checkpoint on a GLUE or SQuAD task; writes OUT/model/ (with its model card README.md)
    and OUT/summary.json atomically. command: the command line that ran this, for the model card (default: the
    equivalent `kprune prune …` and Python call are written).

    tokenizer: the tokenizer's folder or hub id when `model` has none of its own (checked against the model).
    SQuAD only: train_file (the file the pruning sample is drawn from), eval_file, split_articles (take that
    fraction of the evaluation file's articles as the sample side, seeded by split_seed; evaluate on the rest),
    seq_len (L_seq of the FLOPs formula: None = the paper's 170, "measured", or a number).
    Your own data (task None or "custom", docs/own-data.md): train_file (the sample is drawn from it),
    validation_file (evaluated on; its mean length is L_seq), text_columns ("a[,b]"; default as run_glue),
    label_column (default "label"); or instead of the two files, a data set `datasets.load_dataset` reads (hub id,
    offline from its cache; or a local data-set folder): dataset, dataset_config, train_split (default "train"),
    validation_split (default "validation"); metric: the primary metric (accuracy, f1_macro, mcc; spearman,
    pearson). The problem type and label map come from the checkpoint's config. Token
    classification (a `…ForTokenClassification` checkpoint; task_type "token-classification" says so too): words and
    tags columns (default "tokens", "ner_tags") through text_columns and label_column.

    Hyper-parameters come from `config` (default `PruneConfig()`), with keyword overrides
    (constraint=…, num_tokens=…, seed=…, lam_pred=…, lam_rep=…, mu=…, temperature=…, tuning=…, schedule=…).
    Returns the summary dict.
    """
    requested = methods.configure(config, **overrides)  # an explicit constraint beside a latency budget: refused
    cfg = methods.resolve(requested)
    call = {"model": model, "task": "custom" if task is None else task, "output": output, "data_dir": data_dir, "device": device,  # model card
            "train_file": train_file, "eval_file": eval_file, "split_articles": split_articles,
            "split_seed": split_seed, "seq_len": seq_len, "tokenizer": tokenizer,
            "validation_file": validation_file, "text_columns": text_columns, "label_column": label_column,
            "task_type": task_type, "dataset": dataset, "dataset_config": dataset_config, "train_split": train_split,
            "validation_split": validation_split, "metric": metric}
    custom = is_custom(task)
    hub = {"dataset": dataset, "dataset_config": dataset_config, "train_split": train_split,
           "validation_split": validation_split, "metric": metric}
    _custom_options(task, data_dir, validation_file, text_columns, label_column, task_type, hub, eval_file=eval_file,
                    split_articles=split_articles, split_seed=split_seed, seq_len=seq_len)
    if custom:
        train_src, validation_src = sources(train_file, validation_file, dataset, dataset_config, train_split,
                                            validation_split)
        if train_src is None or validation_src is None:
            raise DataError("your own data needs both --train-file (the pruning sample is drawn from it) and "
                            "--validation-file (evaluated on), or a --dataset, or name a --task")
    else:
        t = get_task(task)
        squad_only(t, train_file=train_file, eval_file=eval_file, split_articles=split_articles,
                   split_seed=split_seed, seq_len=seq_len)
        methods.check(cfg, t.problem)
    out = Path(output)
    check_target(out, overwrite, need_bytes=weights_bytes(model))  # before any work: the pruned model is smaller
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)

    if custom:  # the files are read and checked against the checkpoint's config before any work
        m, tok, t = custom_model(model, dev, tokenizer, train_src, validation_src, text_columns, label_column,
                                  task_type, metric)
        check_task_head(m, t)
        methods.check(cfg, t.problem)
        arch = Arch(m)
    else:
        arch, tok = _load(model, t, dev, tokenizer)  # the one Arch of this run: valid through physical pruning
    timing = _latency_timing(arch, cfg, dev, progress)  # first: a budget outside its range stops before any work
    sample = _draw_sample(t, tok, cfg, dev, progress, data_dir=data_dir, train_file=train_file, eval_file=eval_file,
                          split_articles=split_articles, split_seed=split_seed, seq_len=seq_len)
    dense_metrics, params_dense = sample.score(arch.model), encoder_params(arch.model)
    prov = provenance(dev)  # before pruning: the state of the code and machine the run starts from
    result = run_method(arch, sample.batches, t.problem, cfg, sample.seq_len, progress=progress,
                        latency=timing.table if timing else None, score=sample.score)
    prune_physically(arch, result.head_mask, result.neuron_mask)
    pruned_metrics = sample.score(arch.model)
    latency_info = timing.measure(arch, cfg, result, progress) if timing else {}

    summary = _summary(t, model, cfg, arch, sample, result, dense_metrics, pruned_metrics, params_dense,
                       latency_info, dev, prov)
    _write(out, overwrite, arch, tok, summary, result, *reproduction(call, requested, _defaults(), command))
    return summary


def _load(model: str, task, device: torch.device, tokenizer: str | None) -> tuple[Arch, object]:
    """The checkpoint, checked against the task, as an Arch, and its tokenizer."""
    m, tok = load_model(model, qa=task.problem == "qa", device=device, tokenizer=tokenizer)
    check_task_head(m, task)
    return Arch(m), tok


@dataclass
class _LatencyTiming:
    """A latency budget's table, its device, and a CPU copy of the dense model to re-time beside the pruned one
    (the machine's speed drifts)."""

    table: LatencyTable
    device: torch.device
    dense: torch.nn.Module | None

    def measure(self, arch: Arch, cfg: PruneConfig, result, progress: bool) -> dict:
        """The pruned model's real end-to-end latency at the budget's batch and sequence length, for summary.json."""
        dense, self.dense = self.dense, None  # freed once timed
        ms = measure_latencies({"dense": dense, "pruned": arch}, cfg.latency_batch, cfg.latency_seq, self.device,
                               cfg.threads, progress=progress)
        table = self.table
        return {
            "latency_budget_ms": cfg.latency_budget_ms, "predicted_latency_ms": result.predicted_latency_ms,
            "measured_latency_ms": ms["pruned"], "dense_latency_ms": table.total_ms,
            # the dense model timed in the same interleaved rounds as measured_latency_ms; their ratio against
            # latency_budget_ms / dense_latency_ms is free of the machine's drift since the table was measured
            "dense_latency_remeasured_ms": ms["dense"], "measured_fraction_of_dense": ms["pruned"] / ms["dense"],
            # the pruned model measured against its budget; a miss beyond LATENCY_STALE_TOLERANCE is flagged
            "measured_over_budget": ms["pruned"] / cfg.latency_budget_ms,
            "budget_miss": budget_miss(ms["pruned"] / cfg.latency_budget_ms),
            "latency": {"batch": cfg.latency_batch, "seq": cfg.latency_seq, "device": table.key["device"],
                        "device_name": table.key["device_name"], "threads": table.key["threads"],
                        "fixed_ms": table.fixed_ms, "floor_ms": table.floor_ms(), "table": table.path,
                        "table_measured_at": table.measured_at, "table_loadavg": table.loadavg,
                        "table_check": table.check},
        }


def _latency_timing(arch: Arch, cfg: PruneConfig, device: torch.device, progress: bool) -> _LatencyTiming | None:
    """Under a latency budget, the model's latency table (cached or measured) with the budget checked against its
    feasible range; None under a FLOPs constraint."""
    if cfg.latency_budget_ms is None:
        return None
    lat_dev = resolve_device(cfg.latency_device or str(device))
    table = latency_table(arch, cfg.latency_batch, cfg.latency_seq, lat_dev, cfg.threads, progress=progress,
                          policy=cfg.latency_table_policy)
    table.check_budget(cfg.latency_budget_ms)
    return _LatencyTiming(table, lat_dev, copy.deepcopy(arch.model).cpu())


@dataclass
class _Sample:
    """The pruning sample, L_seq, and how the task scores a model."""

    batches: list[dict]
    examples: int
    seq_len: float
    score: Callable[[torch.nn.Module], dict]
    batch_tokens: int  # padded tokens per compute batch (0: as drawn)
    data_info: dict  # SQuAD: where the sample and the evaluation set came from

    def __post_init__(self) -> None:
        self.tokens = int(sum(b["attention_mask"].sum() for b in self.batches))  # real tokens
        self.computed_tokens = padded_tokens(self.batches)  # tokens computed, padding included


def _draw_sample(t, tok, cfg: PruneConfig, device: torch.device, progress: bool, *, data_dir, train_file, eval_file,
                 split_articles, split_seed, seq_len) -> _Sample:
    """The task's data, the pruning sample drawn from it (cfg.num_tokens, cfg.seed) and its dev-set scorer."""
    max_length = cfg.max_length or t.max_length
    batch_size = cfg.batch_size or (SQUAD_BATCH_SIZE if t.problem == "qa" else GLUE_BATCH_SIZE)
    batch_tokens = compute_batch_tokens(cfg, device)
    if t.problem == "qa":
        data = load_squad(t, data_dir, train_file, eval_file, split_articles, split_seed)
        batches, n_sample, seq_len, score = pruning_data(t, tok, data, num_tokens=cfg.num_tokens, seed=cfg.seed,
                                                         max_length=max_length, batch_size=batch_size,
                                                         seq_len=seq_len, device=device, progress=progress,
                                                         batch_tokens=batch_tokens,
                                                         examples=methods.get(cfg.method).sample_examples)
        return _Sample(batches, n_sample, seq_len, score, batch_tokens, data.info)
    drawn = glue_pruning_sample(tok, t, data_dir, cfg, device=device, batch_tokens=batch_tokens,
                                examples=methods.get(cfg.method).sample_examples)

    def score(net):
        return evaluate_glue(net, tok, t, drawn.eval_splits, drawn.max_length, progress)
    return _Sample(drawn.batches, drawn.examples, drawn.seq_len, score, batch_tokens, getattr(t, "data_info", {}))


def _summary(t, model: str, cfg: PruneConfig, arch: Arch, sample: _Sample, result, dense_metrics: dict,
             pruned_metrics: dict, params_dense: int, latency_info: dict, dev: torch.device, prov: dict) -> dict:
    """summary.json: the run's budget, sample, FLOPs, shapes, metrics, hyper-parameters and provenance."""
    by_latency = cfg.latency_budget_ms is not None
    widths = pruned_shape(arch)["neurons_per_layer"]
    summary = {
        "task": t.name, "model": str(model), "method": cfg.method,
        "constraint": None if by_latency else cfg.constraint, **latency_info,
        "num_tokens": cfg.num_tokens, "seed": cfg.seed,
        "sample_examples": sample.examples, "sample_tokens": sample.tokens, "seq_len": sample.seq_len,
        "batch_tokens": sample.batch_tokens, "padding_ratio_computed": sample.computed_tokens / sample.tokens,
        "flops_dense": result.flops_dense, "flops_pruned": result.flops_pruned,
        "flops_removed": 1.0 - result.flops_pruned / result.flops_dense,
        # the saved model's FFN widths: padded up to multiples of FFN_WIDTH_MULTIPLE with inert neurons (faster
        # kernels), so it computes slightly more than flops_pruned, the FLOPs the constraint binds
        "ffn_width_multiple": FFN_WIDTH_MULTIPLE, "neurons_physical": widths,
        "flops_physical": UnitFlops.of(arch).model(result.heads_kept, widths, sample.seq_len),
        "params_dense": params_dense, "params_pruned": encoder_params(arch.model),
        "metric": t.main_metric, "dense": dense_metrics, "pruned": pruned_metrics,
        # GLUE: whether a model predicts one class for the whole dev set (regression: a near-constant), so that its
        # metric is the data's, not the model's (data.evaluate.collapsed); None where it is not measured (SQuAD)
        "collapsed": {"dense": getattr(dense_metrics, "collapsed", None),
                      "pruned": getattr(pruned_metrics, "collapsed", None)},
        "heads_kept": result.heads_kept, "neurons_kept": result.neurons_kept,
        "pruning_seconds": result.seconds, "stage_seconds": result.timings,
        "ridge_fallbacks": result.ridge_fallbacks, "sublayers": result.sublayers,
        "hyperparameters": cfg.to_dict() | ({"constraint": None} if by_latency else {}),
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "versions": {k: prov[k] for k in ("kprune_lib", "torch", "transformers", "python")}, "date": prov["date"],
        "provenance": prov,
    }
    if sample.data_info:  # SQuAD, your own files: where the sample and the evaluation set came from
        summary["data"] = sample.data_info
    if getattr(result, "stages", None):  # a method with stages (kwon): masks and dev metrics after each
        summary["stages"] = result.stages
    return summary


def _write(out: Path, overwrite: bool, arch: Arch, tok, summary: dict, result, *card) -> None:
    """OUT/model/ (weights, config, code, tokenizer, kprune.json with the kept units, the model card `card`) and
    OUT/summary.json, atomically: all of it or nothing."""
    info = {"kept_heads": [r.nonzero().flatten().tolist() for r in result.head_mask],
            "kept_neurons": [r.nonzero().flatten().tolist() for r in result.neuron_mask],
            **{k: summary[k] for k in ("task", "model", "constraint", "seq_len", "flops_dense", "flops_pruned",
                                       "flops_removed", "ffn_width_multiple", "flops_physical", "hyperparameters",
                                       "ridge_fallbacks")}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        arch.model.cpu()  # in place: the Arch still sees it
        save_pruned(arch, tmp / "model", tok, info)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        write_model_card(tmp / "model", summary, *card)


def _defaults() -> dict:
    """`prune`'s keyword defaults (the model card leaves out what was left at them)."""
    return {k: p.default for k, p in inspect.signature(prune).parameters.items() if p.default is not p.empty}


def finetune(model: str, task: str, output: str, data_dir: str | None = None, device: str = "auto",
             overwrite: bool = False, progress: bool = True, config: FinetuneConfig | None = None,
             train_file: str | None = None, eval_file: str | None = None, split_articles: float | None = None,
             split_seed: int = 0, tokenizer: str | None = None, validation_file: str | None = None,
             text_columns: str | None = None, label_column: str | None = None, task_type: str | None = None,
             **overrides) -> dict:
    """Fine-tune a base encoder on a GLUE task, SQuAD, or your own token-classification files (task None,
    task_type "token-classification", train_file, validation_file, text_columns, label_column: docs/own-data.md);
    writes OUT/ (HF checkpoint + finetune.json) atomically.

    Hyper-parameters come from `config` (default `FinetuneConfig()`: the fixtures' recipe), with keyword
    overrides (epochs=…, lr=…, batch_size=…, max_length=…, seed=…, max_train_examples=…, save_dtype=…).
    """
    cfg = replace(config or FinetuneConfig(), **overrides)
    return _finetune(model, task, output, data_dir=data_dir, config=cfg, device=resolve_device(device),
                     overwrite=overwrite, progress=progress, train_file=train_file, eval_file=eval_file,
                     split_articles=split_articles, split_seed=split_seed, tokenizer=tokenizer,
                     validation_file=validation_file, text_columns=text_columns, label_column=label_column,
                     task_type=task_type)


def export_onnx(model: str, output: str, opset: int = 18, int8: bool = False, overwrite: bool = False,
                check: bool = True) -> dict:
    """Export a pruned OUT/model folder (or a dense checkpoint) to one ONNX file, checked in onnxruntime;
    int8=True writes onnxruntime's dynamically quantized graph. See `kprune_lib.artifacts.onnx.export_onnx`."""
    from kprune_lib.artifacts.onnx import export_onnx as _export  # onnx, onnxscript, onnxruntime: the `onnx` extra

    return _export(model, output, opset=opset, int8=int8, overwrite=overwrite, check=check)
