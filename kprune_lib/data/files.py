"""The user's own sequence-classification / regression data (transformers' run_glue.py conventions): a training
and a validation file (.csv, .tsv, .json / .jsonl, .parquet) or two splits of a hub data set (`HubSplit`, through
`datasets.load_dataset`; offline from its cache), text columns, a label column, read into `Examples`, and a task
record (`FileTask`, name "custom") built from them and the checkpoint's config, so that the sample draw, the
evaluation and summary.json take the same paths as a GLUE task."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from kprune_lib.config import DEFAULT_MAX_LENGTH
from kprune_lib.data.glue import DataError, Examples
from kprune_lib.data.tasks import GlueTask

FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "mcc")
REGRESSION_METRICS = ("spearman", "pearson")


@dataclass(frozen=True)
class FileTask(GlueTask):
    """A task from the user's files: num_labels and the label map come from the checkpoint's config."""

    train_file: str | None = None
    validation_file: str | None = None
    text_columns: tuple[str, ...] = ()
    label_column: str = "label"
    label_map: dict | None = field(default=None, compare=False, hash=False)  # label name -> class id (None: ids)
    dataset: dict | None = field(default=None, compare=False, hash=False)  # a hub data set: name, config, splits
    data: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # split -> Examples

    def split(self, split: str) -> Examples:
        if split not in self.data:
            raise DataError(f"no {split} data for the custom task: pass --"
                            f"{'train' if split == 'train' else 'validation'}-file")
        return self.data[split]

    @property
    def data_info(self) -> dict:
        """summary.json's "data": where the sample and the evaluation set came from, and what L_seq is."""
        where = self.dataset or {"train_file": self.train_file, "validation_file": self.validation_file}
        return {**where, "text_columns": list(self.text_columns), "label_column": self.label_column,
                "label_map": self.label_map,
                "seq_len": "mean real (tokenised, truncated) length of the validation set"}


@dataclass(frozen=True)
class HubSplit:
    """One split of a data set that `datasets.load_dataset` reads: a hub id (offline: from the datasets cache) or a
    local data-set folder, with its configuration (`--dataset-config`)."""

    name: str
    config: str | None
    split: str

    def __str__(self) -> str:
        return f"data set {self.name}{'/' + self.config if self.config else ''} [{self.split}]"

    def load(self):
        """The split as a `datasets.Dataset`; one-line DataError when it cannot be loaded (its splits, if known)."""
        try:
            import datasets

            return datasets.load_dataset(self.name, self.config, split=self.split)
        except ValueError as e:  # an unknown split or configuration: datasets names the ones there are
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{self}: {first}; choose them with --dataset-config / --train-split / "
                            "--validation-split") from None
        except Exception as e:  # network, cache, no such data set
            first = str(e).splitlines()[0] if str(e) else ""
            raise DataError(f"could not load {self} ({type(e).__name__}: {first}); offline, only a data set in the "
                            "datasets cache loads — or pass --train-file / --validation-file") from None

    def frame(self):
        """The split as a DataFrame; a ClassLabel (or ClassLabel-sequence) column's class names in
        `frame.attrs["label_names"][column]`."""
        ds = self.load()
        df = ds.to_pandas()
        names = {c: getattr(f, "names", None) or getattr(getattr(f, "feature", None), "names", None)
                 for c, f in ds.features.items()}  # ClassLabel, or a sequence of them (NER tags)
        df.attrs["label_names"] = {c: list(n) for c, n in names.items() if n}
        return df


def read_table(path: str | Path | HubSplit):
    """A data file as a pandas DataFrame, by its extension; strings stay strings ("NA", "null" included).
    A `HubSplit`: that split of the data set (`HubSplit.frame`)."""
    import pandas as pd

    if isinstance(path, HubSplit):
        return path.frame()
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise DataError(f"{path}: unsupported file type {ext or '(none)'!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if ext in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if ext == ".tsv" else ",", keep_default_na=False, encoding="utf-8-sig",
                               quoting=csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL)
        if ext == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise DataError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
            return pd.read_parquet(path)
        try:
            return pd.read_json(path, lines=True, dtype=False)
        except ValueError:
            if ext == ".jsonl":
                raise
            return pd.read_json(path, dtype=False)  # .json: one array of records
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; it needs a header row and at least one example") from None
    except (ValueError, pd.errors.ParserError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: could not read it as {ext[1:]} ({first})") from None


def _string_columns(df, label_column: str) -> list[str]:
    return [c for c in df.columns if c != label_column and df[c].map(lambda v: isinstance(v, str)).all()]


def default_text_columns(df, label_column: str) -> tuple[str, ...]:
    """run_glue's choice: sentence1, sentence2 when present, else the first one or two string columns."""
    if "sentence1" in df.columns and "sentence2" in df.columns:
        return ("sentence1", "sentence2")
    cols = _string_columns(df, label_column)
    return tuple(cols[:2])


def class_id(value, label2id: dict, num_labels: int) -> int | None:
    """A label as a class id: a class name of the checkpoint's label2id, or an integral id in 0 … num_labels − 1;
    None when it is neither (the caller names the file and column in its error)."""
    if isinstance(value, str) and value in label2id:
        return int(label2id[value])
    try:
        as_int = int(value) if not isinstance(value, bool) and float(value) == int(float(value)) else None
    except (TypeError, ValueError, OverflowError):
        return None
    return as_int if as_int is not None and 0 <= as_int < num_labels else None


def _labels(values, path: Path, column: str, num_labels: int, label2id: dict,
            class_names: list[str] | None = None) -> tuple[list, dict | None]:
    """The column's labels as class ids (through label2id for strings) or, for a regression model, floats.
    class_names: a data set's ClassLabel names of the column: its ids are read as these names when the checkpoint's
    label2id knows every one of them (the checkpoint's order may differ from the data set's), else as class ids."""
    if class_names and num_labels > 1 and set(class_names) <= set(label2id):
        values = [class_names[int(v)] if not isinstance(v, str) and 0 <= int(v) < len(class_names) else v
                  for v in values]
    if num_labels == 1:
        out = []
        for v in values:
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise DataError(f"{path}: column {column!r} has the non-numeric label {v!r} but the model is a "
                                "regression model (num_labels == 1); give numeric scores, or use a classification "
                                "checkpoint") from None
            if math.isnan(x):
                raise DataError(f"{path}: column {column!r} has an empty (NaN) label; fill or drop that row")
            out.append(x)
        return out, None
    out, used_names = [], False
    for v in values:
        as_int = class_id(v, label2id, num_labels)
        used_names = used_names or (isinstance(v, str) and v in label2id)
        if as_int is None:
            known = ", ".join(repr(k) for k in label2id)
            raise DataError(f"{path}: label {v!r} in column {column!r} is not one the checkpoint knows (label2id: "
                            f"{known}; or class ids 0..{num_labels - 1}); relabel the data or use the checkpoint "
                            "fine-tuned on these labels")
        out.append(as_int)
    return out, ({str(k): int(i) for k, i in label2id.items()} if used_names else None)


def read_examples(path: str | Path | HubSplit, text_columns: tuple[str, ...] | None, label_column: str,
                  num_labels: int, label2id: dict) -> tuple[Examples, tuple[str, ...], dict | None]:
    """One file (or data-set split) as Examples; returns (examples, the text columns used, the label map used or
    None)."""
    path = path if isinstance(path, HubSplit) else Path(path)
    df = read_table(path)
    if len(df) == 0:
        raise DataError(f"{path} has no examples; it needs a header row and at least one example")
    if label_column not in df.columns:
        raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(map(str, df.columns))}); "
                        "name it with --label-column")
    cols = tuple(text_columns) if text_columns else default_text_columns(df, label_column)
    if not cols:
        raise DataError(f"{path}: no text column found (columns: {', '.join(map(str, df.columns))}); "
                        "name it with --text-columns")
    if len(cols) > 2:
        raise DataError(f"--text-columns takes one or two columns, got {len(cols)}: {', '.join(cols)}")
    for c in cols:
        if c not in df.columns:
            raise DataError(f"{path}: no text column {c!r} (columns: {', '.join(map(str, df.columns))}); "
                            "name the right one with --text-columns")
    text = [[str(v) for v in df[c].tolist()] for c in cols]
    labels, label_map = _labels(df[label_column].tolist(), path, label_column, num_labels, label2id,
                                df.attrs.get("label_names", {}).get(label_column))
    return Examples(text[0], text[1] if len(text) > 1 else None, labels), cols, label_map


def sources(train_file=None, validation_file=None, dataset: str | None = None, dataset_config: str | None = None,
            train_split: str | None = None, validation_split: str | None = None):
    """Where the user's data come from: (train, validation) as file paths, or as `HubSplit`s of `dataset` (its
    `train_split`, default "train", and `validation_split`, default "validation", as run_glue.py names them);
    one-line DataError for a mix of the two or a split named without a data set."""
    if dataset is None:
        if train_split is not None or validation_split is not None or dataset_config is not None:
            given = [f for f, v in (("--dataset-config", dataset_config), ("--train-split", train_split),
                                    ("--validation-split", validation_split)) if v is not None]
            raise DataError(f"{', '.join(given)} name parts of a hub data set: pass --dataset NAME too")
        return train_file, validation_file
    if train_file is not None or validation_file is not None:
        raise DataError("pass either --dataset or --train-file / --validation-file, not both")
    return (HubSplit(dataset, dataset_config, train_split or "train"),
            HubSplit(dataset, dataset_config, validation_split or "validation"))


def main_metric(metrics: tuple[str, ...], metric: str | None) -> str:
    """The metric a custom task reports first (summary.json's "metric", the report's): `metric` if given (one of
    the task's), else the first (accuracy; spearman for a regression model)."""
    if metric is None:
        return metrics[0]
    if metric not in metrics:
        raise DataError(f"--metric {metric} is not one this model's task reports; choose one of {', '.join(metrics)}")
    return metric


def file_task(model_config, train_file, validation_file, text_columns: str | tuple[str, ...] | None = None,
              label_column: str | None = None, metric: str | None = None) -> FileTask:
    """The custom task of these files (or `HubSplit`s, `sources`) for this checkpoint: its problem type
    (num_labels == 1: regression) and label map come from the model's config; both are read and checked here,
    before any work. metric: the primary metric (`main_metric`)."""
    if validation_file is None:
        raise DataError("a custom task needs --validation-file (the set it is evaluated on, and whose mean length "
                        "is L_seq of the FLOPs formula)")
    if isinstance(text_columns, str):
        text_columns = tuple(c.strip() for c in text_columns.split(",") if c.strip())
    label_column = label_column or "label"
    num_labels = int(model_config.num_labels)
    regression = num_labels == 1
    metrics = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    primary = main_metric(metrics, metric)
    label2id = dict(getattr(model_config, "label2id", None) or {})
    data, label_map, cols = {}, None, text_columns or None
    for split, path in (("validation", validation_file), ("train", train_file)):
        if path is None:
            continue
        ex, used, lm = read_examples(path, cols, label_column, num_labels, label2id)
        if cols is None:
            cols = used
        elif tuple(used) != tuple(cols):
            raise DataError(f"{path}: text columns {', '.join(used)} differ from {', '.join(cols)}")
        label_map = label_map or lm
        data[split] = ex
    hub = validation_file if isinstance(validation_file, HubSplit) else None
    dataset = None if hub is None else {
        "dataset": hub.name, "dataset_config": hub.config, "validation_split": hub.split,
        "train_split": train_file.split if isinstance(train_file, HubSplit) else None}
    return FileTask("custom", "", tuple(cols), num_labels, (primary,) + tuple(m for m in metrics if m != primary),
                    primary, max_length=DEFAULT_MAX_LENGTH,
                    label_names=() if regression else tuple(
                        str(getattr(model_config, "id2label", {}).get(i, i)) for i in range(num_labels)),
                    train_file=None if train_file is None or hub else str(train_file),
                    validation_file=None if hub else str(validation_file),
                    text_columns=tuple(cols), label_column=label_column, label_map=label_map, dataset=dataset,
                    data=data)


def label_set(paths, label_column: str | None = None) -> tuple[int, tuple[str, ...]]:
    """For fine-tuning a base encoder on the user's files (its head is new): the label set of the data, as
    run_glue.py derives it: a float column is a regression target (num_labels 1, no names), else the classes are
    the sorted distinct labels (their names become the head's id2label). Returns (num_labels, names)."""
    label_column = label_column or "label"
    frames = [read_table(path if isinstance(path, HubSplit) else Path(path)) for path in paths if path is not None]
    for path, df in zip([p for p in paths if p is not None], frames):
        if label_column not in df.columns:
            raise DataError(f"{path}: no label column {label_column!r} (columns: {', '.join(map(str, df.columns))}); "
                            "name it with --label-column")
        if len(df) == 0:
            raise DataError(f"{path} has no examples; it needs a header row and at least one example")
    if all(df[label_column].dtype.kind == "f" for df in frames):
        return 1, ()
    raw = {v for df in frames for v in df[label_column].tolist()}
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
    values = [str(v) for v in sorted(raw)] if numeric else sorted({str(v) for v in raw})  # class ids in order
    if len(values) < 2:
        raise DataError(f"{paths[0]}: column {label_column!r} has a single class ({values[0]!r}); a classifier "
                        "needs at least two")
    return len(values), tuple(values)
