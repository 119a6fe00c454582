"""Fine-tuning a base encoder on a GLUE task, SQuAD or your own files (sequence or token classification): a plain PyTorch loop.

The recipe is the one the shared fixtures (`../shared/models/minilm-l6-*/FINETUNE.json`) record:
AdamW (lr 8e-5, weight decay 0.01 on all weights except biases and LayerNorm), linear warm-up over the
first 10 % of the steps then linear decay to 0, gradient clipping at norm 1.0, batch 32, dynamic padding
(each batch padded to its longest example), the training set reshuffled every epoch by a seeded generator.
Seeded end to end (head initialisation, dropout, shuffling): on CPU two runs give the same weights.
Output: a standard Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer files)
plus finetune.json (recipe, losses, dev metrics), written atomically.
"""
from __future__ import annotations

import json
import math
import time
from types import SimpleNamespace
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from tqdm.auto import tqdm

from kprune_lib._atomic import atomic_dir, check_target
from kprune_lib._provenance import provenance
from kprune_lib.artifacts.checkpoint import ModelLoadError, damaged_weights, load_tokenizer, weights_bytes
from kprune_lib.data.batching import pad_batch, tokenize
from kprune_lib.data.evaluate import evaluate_glue
from kprune_lib.data.glue import Examples, load_glue
from kprune_lib.data.squad import load_squad, squad_only
from kprune_lib.data.squad_features import evaluate_squad, prepare_features
from kprune_lib.data.tasks import GlueTask, QaTask, get_task
from kprune_lib.data.evaluate import evaluate_tokens
from kprune_lib.data.glue import DataError
from kprune_lib.data.files import FileTask, file_task, label_set
from kprune_lib.data.tokens import TASK_TYPE as TOKEN_TASK, TokenTask, token_task, tokenize_words

FINETUNE_FILE = "finetune.json"
_INPUTS = ("input_ids", "token_type_ids")


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run (defaults: the fixtures' recipe)."""

    epochs: float = 3.0  # passes over the training set (a fraction stops part-way through the last one)
    lr: float = 8e-5  # peak learning rate of AdamW
    batch_size: int = 32
    weight_decay: float = 0.01  # AdamW decoupled weight decay; not on biases and LayerNorm weights
    warmup_ratio: float = 0.1  # fraction of the steps with linearly rising learning rate
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0  # head initialisation, dropout, shuffling, the training subset
    max_length: int | None = None  # None -> task default (128; SST-2 64; SQuAD 384 with stride 128)
    max_train_examples: int | None = None  # seeded random subset of the training set (None = all)
    save_dtype: str = "float32"  # "float16" halves the checkpoint (the fixtures are stored so)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size <= 0:
            raise ValueError("epochs, lr and batch_size must be positive")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"save_dtype must be float32, float16 or bfloat16, got {self.save_dtype!r}")
        if self.max_train_examples is not None and self.max_train_examples <= 0:
            raise ValueError("max_train_examples must be positive")


def linear_warmup_decay(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr factor: step/warmup while warming up, then linear decay to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices / embeddings only (not biases, not LayerNorm), as usual for BERT."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            skip = name == "bias" or isinstance(module, torch.nn.LayerNorm) or "LayerNorm" in type(module).__name__
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def collate(features: list[dict], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Pad the inputs to the batch's longest, and token classification's per-token "label" lists with -100 (as
    "labels", `pad_batch`); every other key ("labels", "start_positions", …) becomes a tensor."""
    batch = pad_batch([{k: f[k] for k in _INPUTS + ("label",) if k in f} for f in features], pad_id, device)
    for k in features[0]:
        if k not in _INPUTS and k != "label":
            batch[k] = torch.tensor([f[k] for f in features], device=device)
    return batch


def train(model: torch.nn.Module, features: list[dict], pad_id: int, cfg: FinetuneConfig,
          progress: bool = True) -> list[float]:
    """The training loop; returns the loss of every step. The model's forward must return `.loss`."""
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(features) / cfg.batch_size)
    total = math.ceil(cfg.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = linear_warmup_decay(optimizer, math.ceil(cfg.warmup_ratio * total), total)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    losses = []
    model.train()
    with tqdm(total=total, desc="fine-tune", unit="step", disable=not progress) as bar:
        while len(losses) < total:
            order = torch.randperm(len(features), generator=shuffle).tolist()
            for i in range(0, len(order), cfg.batch_size):
                if len(losses) == total:
                    break
                batch = collate([features[j] for j in order[i:i + cfg.batch_size]], pad_id, device)
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss at step {len(losses)}; lower --lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


def _subset(n: int, k: int | None, seed: int) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].tolist())


def _load_base(base: str, task: GlueTask | QaTask, tokenizer: str | None = None):
    """The base encoder with a fresh task head (an existing head of another shape is replaced) and its tokenizer
    (`tokenizer`'s if given), checked against it."""
    try:
        if task.problem == "qa":
            model = transformers.AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
        elif task.problem == "token":
            names = task.label_names
            model = transformers.AutoModelForTokenClassification.from_pretrained(
                base, dtype=torch.float32, num_labels=len(names), ignore_mismatched_sizes=True,
                id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        else:
            names = task.label_names or tuple(f"LABEL_{i}" for i in range(task.num_labels))
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                base, dtype=torch.float32, num_labels=task.num_labels, ignore_mismatched_sizes=True,
                id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                problem_type="regression" if task.problem == "regression" else "single_label_classification")
    except SafetensorError as e:
        raise ModelLoadError(damaged_weights(base, e)) from None
    except (OSError, ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"could not load base model {base!r}: {msg}") from None
    return model, load_tokenizer(tokenizer or base, model, given=tokenizer is not None)


def _glue_data(task: GlueTask, tokenizer, data_dir, cfg: FinetuneConfig, max_length: int):
    train = load_glue(task, "train", data_dir)
    keep = _subset(len(train), cfg.max_train_examples, cfg.seed)
    train = Examples([train.text_a[i] for i in keep], [train.text_b[i] for i in keep] if train.text_b else None,
                     [float(train.labels[i]) if task.problem == "regression" else train.labels[i] for i in keep])
    features = [{**f, "labels": y} for f, y in zip(tokenize(tokenizer, train, max_length), train.labels)]
    dev = {split: load_glue(task, split, data_dir) for split in task.eval_splits}
    return features, len(train), lambda m: evaluate_glue(m, tokenizer, task, dev, max_length), {}


def _squad_data(task: QaTask, tokenizer, data_dir, cfg: FinetuneConfig, max_length: int, **sources):
    data = load_squad(task, data_dir, need_train=True, **sources)
    train = [data.train[i] for i in _subset(len(data.train), cfg.max_train_examples, cfg.seed)]
    f = prepare_features(tokenizer, train, max_length, task.doc_stride)
    features = [{**x, "start_positions": s, "end_positions": e}
                for x, s, e in zip(f.inputs, f.start_positions, f.end_positions)]
    return features, len(train), lambda m: evaluate_squad(m, tokenizer, task, data.eval, max_length), data.info


def _file_data(task: FileTask, tokenizer, cfg: FinetuneConfig, max_length: int):
    """Sequence classification / regression from the user's files (`files.file_task`): as a GLUE task's."""
    train = task.split("train")
    keep = _subset(len(train), cfg.max_train_examples, cfg.seed)
    train = train.take(keep)
    features = [{**f, "labels": y} for f, y in zip(tokenize(tokenizer, train, max_length), train.labels)]
    dev = {"validation": task.split("validation")}
    return features, len(train), lambda m: evaluate_glue(m, tokenizer, task, dev, max_length), task.data_info


def _token_data(task: TokenTask, tokenizer, cfg: FinetuneConfig, max_length: int):
    """Token classification from the user's files: the training words with their tags on the first sub-words."""
    train = task.split("train")
    train = train.take(_subset(len(train), cfg.max_train_examples, cfg.seed))
    dev = {"validation": task.split("validation")}
    return (tokenize_words(tokenizer, train, max_length), len(train),
            lambda m: evaluate_tokens(m, tokenizer, task, dev, max_length), task.data_info)


def own_data_task(task: str | None, task_type: str | None, train_file, validation_file, text_columns,
                  label_column) -> TokenTask | FileTask | None:
    """Your own files to fine-tune on (task None or "custom"): token classification (its tag names from the
    training file) or sequence classification / regression (the label set from the files, `files.label_set`);
    None for a GLUE or SQuAD task."""
    if task is not None and task.lower() != "custom":
        if task_type is not None or validation_file is not None:
            raise DataError(f"--task-type and --validation-file apply to your own data files only (leave out --task), "
                            f"not to {task}")
        return None
    if task_type is None:
        raise DataError("kprune finetune on your own files needs --task-type sequence-classification or "
                        "--task-type token-classification (a base encoder has no head to tell which)")
    if train_file is None or validation_file is None:
        raise DataError("fine-tuning on your own data needs --train-file and --validation-file")
    if task_type == TOKEN_TASK:
        return token_task(train_file, validation_file, text_columns=text_columns, label_column=label_column)
    num_labels, names = label_set([train_file, validation_file], label_column)
    head = SimpleNamespace(num_labels=num_labels, label2id={n: i for i, n in enumerate(names)},
                           id2label=dict(enumerate(names)))  # the new head's, as _load_base builds it
    return file_task(head, train_file, validation_file, text_columns, label_column)


def finetune(model: str, task: str | None, output: str, data_dir: str | None = None, config: FinetuneConfig | None = None,
             device: str | torch.device = "cpu", overwrite: bool = False, progress: bool = True, train_file: str | None = None,
             eval_file: str | None = None, split_articles: float | None = None, split_seed: int = 0,
             tokenizer: str | None = None, validation_file: str | None = None, text_columns: str | None = None,
             label_column: str | None = None, task_type: str | None = None) -> dict:
    """Fine-tune base encoder `model` on `task`; writes OUTPUT/ (HF checkpoint + finetune.json). Returns the record.
    tokenizer: its folder or hub id when `model` has none of its own.

    SQuAD sources as in `api.prune`: train_file / eval_file, or split_articles of the evaluation file.
    Your own files (task None): task_type "sequence-classification" (train_file, validation_file, text_columns,
    label_column as `api.prune`'s; a float label column is a regression target, else the sorted distinct labels are
    the classes and the head's id2label, as run_glue.py) or "token-classification" (text_columns: the words column,
    default "tokens"; label_column: the tags, default "ner_tags"; the tag names are the training file's, sorted, as
    run_ner.py, and become the head's id2label).
    """
    cfg = config or FinetuneConfig()
    t = own_data_task(task, task_type, train_file, validation_file, text_columns, label_column)
    if t is None:
        t = get_task(task)
        squad_only(t, train_file=train_file, eval_file=eval_file, split_articles=split_articles,
                   split_seed=split_seed)
    out = Path(output)
    check_target(out, overwrite, need_bytes=2 * weights_bytes(model))  # before any work (float32 may double fp16)
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)  # the new head's initialisation, then dropout
    net, tok = _load_base(model, t, tokenizer)
    net.to(dev)
    max_length = cfg.max_length or t.max_length
    if t.problem == "qa":
        features, n_examples, score, data_info = _squad_data(t, tok, data_dir, cfg, max_length, train_file=train_file,
                                                             eval_file=eval_file, split_fraction=split_articles,
                                                             split_seed=split_seed)
    elif t.problem == "token":
        features, n_examples, score, data_info = _token_data(t, tok, cfg, max_length)
    elif isinstance(t, FileTask):
        features, n_examples, score, data_info = _file_data(t, tok, cfg, max_length)
    else:
        features, n_examples, score, data_info = _glue_data(t, tok, data_dir, cfg, max_length)

    start = time.perf_counter()
    losses = train(net, features, tok.pad_token_id, cfg, progress)
    seconds = time.perf_counter() - start
    metrics = score(net)
    per_epoch = math.ceil(len(features) / cfg.batch_size)
    prov = provenance(dev)
    record = {
        "base": str(model), "task": t.name, "train_examples": n_examples, "train_features": len(features),
        **asdict(cfg), "max_length": max_length, "steps": len(losses), "dev_metrics": metrics,
        "metric": t.main_metric, "train_loss_per_epoch": [sum(c) / len(c) for c in
                                                          (losses[i:i + per_epoch] for i in range(0, len(losses), per_epoch))],
        "train_seconds": seconds, "optimizer": "AdamW", "schedule": "linear warm-up then linear decay to 0",
        "shuffle": "every epoch, seeded", "padding": "dynamic, per batch",
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "versions": {k: prov[k] for k in ("kprune_lib", "torch", "transformers", "python")}, "date": prov["date"],
        "provenance": prov,
        **({"data": data_info} if data_info else {}),
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        net.to("cpu", dtype=getattr(torch, cfg.save_dtype)).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / FINETUNE_FILE).write_text(json.dumps(record, indent=2))
    return record
