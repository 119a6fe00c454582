"""GLUE data: from the hub (`nyu-mll/glue`) or a local folder in the official GLUE layout."""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from kprune_lib.data.tasks import GlueTask

csv.field_size_limit(sys.maxsize)


class DataError(ValueError):
    """Missing or malformed task data."""


@dataclass
class Examples:
    text_a: list[str]
    text_b: list[str] | None
    labels: list  # int class ids, or float scores for regression

    def __len__(self) -> int:
        return len(self.text_a)

    def take(self, idx: list[int]) -> "Examples":
        """The examples at idx, in that order (repeats kept: the sample is drawn with replacement)."""
        return Examples([self.text_a[i] for i in idx], None if self.text_b is None else [self.text_b[i] for i in idx],
                        [self.labels[i] for i in idx])


# label strings used in the GLUE files -> ids in the `nyu-mll/glue` convention
_LABELS = {
    "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2},
    "qnli": {"entailment": 0, "not_entailment": 1},
    "rte": {"entailment": 0, "not_entailment": 1},
}
# (text columns, label column) by header name; CoLA has no header (source, label, orig label, sentence)
_COLUMNS = {
    "sst2": (("sentence",), "label"),
    "mrpc": (("#1 String", "#2 String"), "Quality"),
    "stsb": (("sentence1", "sentence2"), "score"),
    "qqp": (("question1", "question2"), "is_duplicate"),
    "mnli": (("sentence1", "sentence2"), "gold_label"),
    "qnli": (("question", "sentence"), "label"),
    "rte": (("sentence1", "sentence2"), "label"),
}
_SPLIT_FILES = {
    "train": ["train.tsv"],
    "validation": ["dev.tsv"],
    "validation_matched": ["dev_matched.tsv"],
    "validation_mismatched": ["dev_mismatched.tsv"],
}
_COLA_FILES = {"train": [["train.tsv"], ["in_domain_train.tsv"]],
               "validation": [["dev.tsv"], ["in_domain_dev.tsv", "out_of_domain_dev.tsv"]]}


def _read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC files start with a BOM
        return [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def _task_files(task: GlueTask, split: str, data_dir: Path) -> list[Path]:
    folder = data_dir / task.folder
    if not folder.is_dir() and any((data_dir / n).exists() for n in ("train.tsv", "dev.tsv", "in_domain_train.tsv")):
        folder = data_dir  # data_dir already is the task folder
    options = _COLA_FILES[split] if task.name == "cola" and split in _COLA_FILES else [_SPLIT_FILES.get(split)]
    if options == [None]:
        raise DataError(f"split {split!r} does not exist for {task.name}; use one of {list(_SPLIT_FILES)}")
    for names in options:
        paths = [folder / n for n in names]
        if all(p.is_file() for p in paths):
            return paths
    tried = " or ".join("+".join(str(folder / n) for n in names) for names in options)
    raise DataError(f"no {split} data for {task.name}: expected {tried} (official GLUE layout under --data-dir)")


def _parse_label(task: GlueTask, raw: str, where: str):
    try:
        if task.problem == "regression":
            return float(raw)
        if task.name in _LABELS:
            return _LABELS[task.name][raw]
        value = int(raw)
    except (ValueError, KeyError):
        raise DataError(f"{where}: bad label {raw!r} for {task.name}") from None
    if not 0 <= value < task.num_labels:
        raise DataError(f"{where}: label {value} out of range for {task.name} ({task.num_labels} classes)")
    return value


def load_local(task: GlueTask, split: str, data_dir: str | Path) -> Examples:
    """Read one split of a GLUE task from the official GLUE folder layout."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a folder; point it at the GLUE root (e.g. ../shared/data/glue)")
    text_a, text_b, labels = [], [], []
    for path in _task_files(task, split, data_dir):
        rows = _read_tsv(path)
        if task.name == "cola":
            idx_text, idx_label, body, start = (3,), 1, rows, 0
        else:
            if not rows:
                raise DataError(f"{path} is empty")
            header = rows[0]
            text_cols, label_col = _COLUMNS[task.name]
            missing = [c for c in (*text_cols, label_col) if c not in header]
            if missing:
                raise DataError(f"{path}: header lacks column(s) {missing}; is this the {task.name} file?")
            idx_text, idx_label, body, start = tuple(header.index(c) for c in text_cols), header.index(label_col), rows[1:], 2
        need = max(*idx_text, idx_label) + 1
        for n, row in enumerate(body, start=start or 1):
            where = f"{path}:{n}"
            if len(row) < need:
                raise DataError(f"{where}: {len(row)} fields, expected at least {need} (malformed TSV?)")
            if task.name == "mnli" and row[idx_label] == "-":
                continue
            text_a.append(row[idx_text[0]])
            if len(idx_text) > 1:
                text_b.append(row[idx_text[1]])
            labels.append(_parse_label(task, row[idx_label], where))
    if not labels:
        raise DataError(f"no examples in {task.name} {split} under {data_dir}")
    return Examples(text_a, text_b if text_b else None, labels)


def load_hub(task: GlueTask, split: str) -> Examples:
    """One split of `nyu-mll/glue` via `datasets` (needs the hub or a populated HF cache)."""
    try:
        import datasets

        ds = datasets.load_dataset("nyu-mll/glue", task.name, split=split)
    except Exception as e:  # network, cache, unknown split
        raise DataError(f"could not load nyu-mll/glue/{task.name} [{split}] from the hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); offline, pass --data-dir with local GLUE files") from None
    cols = task.hub_columns
    return Examples(list(ds[cols[0]]), list(ds[cols[1]]) if len(cols) > 1 else None,
                    [float(x) if task.problem == "regression" else int(x) for x in ds["label"]])


def load_glue(task: GlueTask, split: str, data_dir: str | Path | None = None) -> Examples:
    return load_local(task, split, data_dir) if data_dir is not None else load_hub(task, split)


def files_read(task: GlueTask, data_dir: str | Path) -> list[Path]:
    """The local files load_glue reads for this task (every split present: the sample's train split and the
    evaluation's validation split among them); what a sweep point's identity fingerprints (workbook/identity.py)."""
    out = []
    for split in _SPLIT_FILES:
        try:
            out += _task_files(task, split, Path(data_dir))
        except DataError:
            continue
    return out
