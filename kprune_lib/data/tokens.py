"""Token classification (NER) from the user's own files, with transformers' run_ner.py conventions: one example per
row, a column of words (`tokens`) and a column of one tag per word (`ner_tags`: IOB names such as B-PER, or class
ids), in .csv / .tsv / .json / .jsonl / .parquet (`files.read_table`). Labels are aligned to the first sub-word of
each word, every other position (special tokens, later sub-words, padding) gets -100, as run_ner.py does with
`label_all_tokens` off. A `TokenTask` (problem "token") carries the files' examples and the label names, so that the
sample draw, the evaluation and summary.json take the same paths as a sequence-classification file task."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kprune_lib.config import DEFAULT_MAX_LENGTH, TAGS_COLUMN, TOKENS_COLUMN
from kprune_lib.data.files import FileTask, HubSplit, class_id, read_table
from kprune_lib.data.glue import DataError

IGNORE = -100  # the label of positions that are not scored (transformers' CrossEntropyLoss ignore_index)
TASK_TYPE = "token-classification"
TOKEN_METRICS = ("f1", "precision", "recall", "accuracy")  # seqeval's entity-level scores, token accuracy


@dataclass
class TokenExamples:
    """Words and their tag ids, one list per example (a sentence)."""

    words: list[list[str]]
    tags: list[list[int]]

    def __len__(self) -> int:
        return len(self.words)

    def take(self, idx: list[int]) -> "TokenExamples":
        """The examples at idx, in that order (repeats kept: the sample is drawn with replacement)."""
        return TokenExamples([self.words[i] for i in idx], [self.tags[i] for i in idx])


@dataclass(frozen=True)
class TokenTask(FileTask):
    """A token-classification task from the user's files; label_names: the tag of each class id."""

    @property
    def problem(self) -> str:
        return "token"

    @property
    def data_info(self) -> dict:
        return {"task_type": TASK_TYPE, "train_file": self.train_file, "validation_file": self.validation_file,
                "tokens_column": self.text_columns[0], "tags_column": self.label_column,
                "label_names": list(self.label_names),
                "labels": "first sub-word of each word (others -100), as run_ner.py",
                "seq_len": "mean real (tokenised, truncated) length of the validation set"}


def _as_list(value, path: Path, column: str, row: int) -> list:
    """One cell of a list column: a list (JSON Lines), an array (Parquet), or text (CSV / TSV): a JSON or Python
    list literal, else the words separated by white space."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    return parsed
            raise DataError(f"{path}: row {row} of column {column!r} starts like a list but is not one: {text[:40]!r}")
        return text.split()
    raise DataError(f"{path}: row {row} of column {column!r} is {type(value).__name__}, not a list of words or tags; "
                    "write one list per row")


def is_iob(name: str) -> bool:
    """An IOB tag name seqeval scores: O, or a B-/I-/E-/S- prefix and a type."""
    return name == "O" or (len(name) > 2 and name[0] in "BIES" and name[1] == "-")


def check_label_names(names: tuple[str, ...], where: str) -> None:
    """seqeval reads entities from the tag names: they must be IOB names."""
    bad = [n for n in names if not is_iob(n)]
    if bad:
        raise DataError(f"{where} has tag names {', '.join(repr(b) for b in bad[:5])} that are not IOB tags (O, B-X, "
                        "I-X); entity scores need them: name the classes in the checkpoint's id2label or write the "
                        "tags as names")


def _tag_ids(rows: list[list], path: Path, column: str, label2id: dict, num_labels: int) -> list[list[int]]:
    """The tags as class ids: names through label2id, or ids in 0 … num_labels − 1."""
    out = []
    for row in rows:
        ids = []
        for v in row:
            as_int = class_id(v, label2id, num_labels)
            if as_int is None:
                known = ", ".join(repr(k) for k in label2id)
                raise DataError(f"{path}: tag {v!r} in column {column!r} is not one the checkpoint knows (label2id: "
                                f"{known}; or class ids 0..{num_labels - 1}); relabel the data or use the checkpoint "
                                "fine-tuned on these tags")
            ids.append(as_int)
        out.append(ids)
    return out


def read_columns(path: str | Path | HubSplit, tokens_column: str,
                 tags_column: str) -> tuple[list[list[str]], list[list]]:
    """One file's (or data-set split's) words and raw tags (names or ids), one list each per row, checked for equal
    lengths. A data set's ClassLabel tags are read as their names (the checkpoint's order may differ)."""
    path = path if isinstance(path, HubSplit) else Path(path)
    df = read_table(path)
    names = df.attrs.get("label_names", {}).get(tags_column)
    if len(df) == 0:
        raise DataError(f"{path} has no examples; it needs a header row (or keys) and at least one example")
    for column, flag in ((tokens_column, "--text-columns"), (tags_column, "--label-column")):
        if column not in df.columns:
            raise DataError(f"{path}: no {'tokens' if column == tokens_column else 'tags'} column {column!r} (columns: "
                            f"{', '.join(map(str, df.columns))}); name it with {flag}")
    words, tags = [], []
    for row, (w, t) in enumerate(zip(df[tokens_column].tolist(), df[tags_column].tolist())):
        w, t = _as_list(w, path, tokens_column, row), _as_list(t, path, tags_column, row)
        if len(w) != len(t):
            raise DataError(f"{path}: row {row} has {len(w)} words in {tokens_column!r} but {len(t)} tags in "
                            f"{tags_column!r}; give one tag per word")
        if not w:
            raise DataError(f"{path}: row {row} has no words; drop it")
        words.append([str(x) for x in w])
        tags.append([names[int(x)] if names and not isinstance(x, str) and 0 <= int(x) < len(names) else x
                     for x in t])
    return words, tags


def parquet_tag_names(path: str | Path, tags_column: str) -> list[str] | None:
    """The tag names a Parquet file written by `datasets` records for a ClassLabel sequence column, if any."""
    if Path(path).suffix.lower() != ".parquet":
        return None
    import pyarrow.parquet as pq

    meta = (pq.read_schema(path).metadata or {}).get(b"huggingface")
    feature = (json.loads(meta).get("info", {}).get("features", {}).get(tags_column) or {}) if meta else {}
    inner = feature.get("feature", feature.get("dtype", {})) if isinstance(feature, dict) else {}
    names = inner.get("names") if isinstance(inner, dict) else None
    return [str(n) for n in names] if names else None


def data_label_names(train_file: str | Path, tags_column: str, raw_tags: list[list]) -> tuple[str, ...]:
    """Label names for a new head (fine-tuning): the sorted tag names of the data (run_ner.py's order), or, for
    class ids, the names a `datasets` Parquet file (train_file) records."""
    flat = [t for row in raw_tags for t in row]
    if all(isinstance(t, str) for t in flat):
        return tuple(sorted(set(flat)))
    names = parquet_tag_names(train_file, tags_column)
    if names is None:
        raise DataError(f"{train_file}: the tags in {tags_column!r} are class ids without names; write them as IOB "
                        "names (O, B-PER, I-PER …) or use a Parquet file written by datasets (its ClassLabel names)")
    return tuple(names)


def token_task(train_file: str | Path | None, validation_file: str | Path | None, *, label_names: tuple[str, ...] | None = None,
               label2id: dict | None = None, text_columns: str | tuple[str, ...] | None = None,
               label_column: str | None = None) -> TokenTask:
    """The token-classification task of these files. The tag names come from the checkpoint (`label_names` in
    class-id order, with its `label2id`) or, for a new head (label_names None), from the training file
    (`data_label_names`). Both files are read and checked here, before any work."""
    if validation_file is None:
        raise DataError("token classification needs --validation-file (the set it is evaluated on, and whose mean "
                        "length is L_seq of the FLOPs formula)")
    if isinstance(text_columns, str):
        text_columns = tuple(c.strip() for c in text_columns.split(",") if c.strip())
    if text_columns and len(text_columns) != 1:
        raise DataError(f"token classification takes one --text-columns (the words column), got {len(text_columns)}: "
                        f"{', '.join(text_columns)}")
    tokens_column = text_columns[0] if text_columns else TOKENS_COLUMN
    tags_column = label_column or TAGS_COLUMN
    raw = {split: read_columns(path, tokens_column, tags_column)
           for split, path in (("validation", validation_file), ("train", train_file)) if path is not None}
    if label_names is None:  # a new head: the tags of both files (a tag only the validation file has is scored too)
        source = train_file if train_file is not None else validation_file
        label_names = data_label_names(source, tags_column, [row for _, tags in raw.values() for row in tags])
        label2id = None
        check_label_names(label_names, str(source))
    else:
        check_label_names(label_names, "the checkpoint's id2label")
    label2id = dict(label2id or {n: i for i, n in enumerate(label_names)})
    data = {}
    for split, (words, tags) in raw.items():
        path = validation_file if split == "validation" else train_file
        data[split] = TokenExamples(words, _tag_ids(tags, path, tags_column, label2id, len(label_names)))
    return TokenTask("custom", "", (tokens_column,), len(label_names), TOKEN_METRICS, "f1",
                     max_length=DEFAULT_MAX_LENGTH, label_names=tuple(label_names),
                     train_file=None if train_file is None else str(train_file), validation_file=str(validation_file),
                     text_columns=(tokens_column,), label_column=tags_column,
                     label_map={n: i for i, n in enumerate(label_names)}, data=data)


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """Per sub-word position: the word's tag at its first sub-word, IGNORE at later sub-words and special tokens."""
    out, previous = [], None
    for w in word_ids:
        out.append(IGNORE if w is None or w == previous else tags[w])
        previous = w
    return out


def tokenize_words(tokenizer, examples: TokenExamples, max_length: int) -> list[dict]:
    """TokenExamples -> one dict per example: input_ids (, token_type_ids), and "label": the aligned tags
    (`align_labels`; words cut by truncation have none). Needs a fast tokenizer (its word_ids)."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("token classification needs a fast tokenizer (it maps sub-words to words); save the "
                        "checkpoint with its tokenizer.json or pass one with --tokenizer")
    enc = tokenizer(examples.words, is_split_into_words=True, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{**{k: enc[k][i] for k in keys}, "label": align_labels(enc.word_ids(i), examples.tags[i])}
            for i in range(len(examples))]
