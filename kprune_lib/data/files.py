"""The user's own sequence-classification / regression data (transformers' run_glue.py conventions): a training
and a validation file (.csv, .tsv, .json / .jsonl, .parquet), text columns, a label column, read into `Examples`,
and a task record (`FileTask`, name "custom") built from the files and the checkpoint's config, so that the sample
draw, the evaluation and summary.json take the same paths as a GLUE task."""
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
    data: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # split -> Examples

    def split(self, split: str) -> Examples:
        if split not in self.data:
            raise DataError(f"no {split} data for the custom task: pass --"
                            f"{'train' if split == 'train' else 'validation'}-file")
        return self.data[split]

    @property
    def data_info(self) -> dict:
        """summary.json's "data": where the sample and the evaluation set came from, and what L_seq is."""
        return {"train_file": self.train_file, "validation_file": self.validation_file,
                "text_columns": list(self.text_columns), "label_column": self.label_column,
                "label_map": self.label_map,
                "seq_len": "mean real (tokenised, truncated) length of the validation set"}


def read_table(path: str | Path):
    """A data file as a pandas DataFrame, by its extension; strings stay strings ("NA", "null" included)."""
    import pandas as pd

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


def _labels(values, path: Path, column: str, num_labels: int, label2id: dict) -> tuple[list, dict | None]:
    """The column's labels as class ids (through label2id for strings) or, for a regression model, floats."""
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
        if isinstance(v, str) and v in label2id:
            out.append(int(label2id[v]))
            used_names = True
            continue
        try:
            as_int = int(v) if not isinstance(v, bool) and float(v) == int(float(v)) else None
        except (TypeError, ValueError):
            as_int = None
        if as_int is None or not 0 <= as_int < num_labels:
            known = ", ".join(repr(k) for k in label2id)
            raise DataError(f"{path}: label {v!r} in column {column!r} is not one the checkpoint knows (label2id: "
                            f"{known}; or class ids 0..{num_labels - 1}); relabel the data or use the checkpoint "
                            "fine-tuned on these labels")
        out.append(as_int)
    return out, ({str(k): int(i) for k, i in label2id.items()} if used_names else None)


def read_examples(path: str | Path, text_columns: tuple[str, ...] | None, label_column: str, num_labels: int,
                  label2id: dict) -> tuple[Examples, tuple[str, ...], dict | None]:
    """One file as Examples; returns (examples, the text columns used, the label map used or None)."""
    path = Path(path)
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
    labels, label_map = _labels(df[label_column].tolist(), path, label_column, num_labels, label2id)
    return Examples(text[0], text[1] if len(text) > 1 else None, labels), cols, label_map


def file_task(model_config, train_file: str | None, validation_file: str | None,
              text_columns: str | tuple[str, ...] | None = None, label_column: str | None = None) -> FileTask:
    """The custom task of these files for this checkpoint: its problem type (num_labels == 1: regression) and label
    map come from the model's config; both files are read and checked here, before any work."""
    if validation_file is None:
        raise DataError("a custom task needs --validation-file (the set it is evaluated on, and whose mean length "
                        "is L_seq of the FLOPs formula)")
    if isinstance(text_columns, str):
        text_columns = tuple(c.strip() for c in text_columns.split(",") if c.strip())
    label_column = label_column or "label"
    num_labels = int(model_config.num_labels)
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
    regression = num_labels == 1
    return FileTask("custom", "", tuple(cols), num_labels,
                    REGRESSION_METRICS if regression else CLASSIFICATION_METRICS,
                    "spearman" if regression else "accuracy", max_length=DEFAULT_MAX_LENGTH,
                    label_names=() if regression else tuple(
                        str(getattr(model_config, "id2label", {}).get(i, i)) for i in range(num_labels)),
                    train_file=None if train_file is None else str(train_file), validation_file=str(validation_file),
                    text_columns=tuple(cols), label_column=label_column, label_map=label_map, data=data)
