"""A deterministic tagging corpus from the shared GLUE sentences, for the token-classification tests and benchmark
(benchmarks/NER.md; docs/own-data.md says why: no English NER corpus installs from the registries reachable here).

The sentences are MRPC's (cased news text): train.tsv's for the training file, dev.tsv's for the validation file,
both sentences of every pair, each sentence once, in file order. Words: numbers (digits with inner . or ,), words
(letters and digits, with inner ' or -), single punctuation marks. Tags, by a fixed rule, in IOB2:
- NUM: a number;
- CAP: a capitalised word that is not the sentence's first;
- a run of consecutive words of one type is one entity (B- on its first word, I- on the rest); everything else O.
The model tokenizer of the benchmark (all-MiniLM-L6-v2's) is uncased, so the model sees no capital letters: it has
to tell names from other words by what they are, as in NER.

    python benchmarks/ner_corpus.py --glue-dir ../shared/data/glue --output /work/data/mrpc-tags [--format jsonl]
writes OUTPUT/train.<format> and OUTPUT/validation.<format> with columns `tokens` and `ner_tags` (tag names).
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

LABELS = ("O", "B-CAP", "I-CAP", "B-NUM", "I-NUM")
_WORD = re.compile(r"\d+(?:[.,]\d+)*|\w+(?:['\-]\w+)*|[^\w\s]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


def words(sentence: str) -> list[str]:
    return _WORD.findall(sentence)


def word_type(word: str, first: bool) -> str | None:
    """NUM, CAP or None (outside) for one word; `first`: the sentence's first word (never CAP)."""
    if _NUMBER.fullmatch(word):
        return "NUM"
    if not first and word[0].isupper():
        return "CAP"
    return None


def tags(ws: list[str]) -> list[str]:
    """IOB2 tags of a sentence's words: a run of one type is one entity."""
    out, previous = [], None
    for i, w in enumerate(ws):
        kind = word_type(w, i == 0)
        out.append("O" if kind is None else ("I-" if kind == previous else "B-") + kind)
        previous = kind
    return out


def sentences(glue_dir: str | Path, split: str) -> list[str]:
    """MRPC's sentences of a split (#1 and #2 of every pair), each once, in file order."""
    path = Path(glue_dir) / "MRPC" / _FILES[split]
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    seen, out = set(), []
    for r in rows:
        for s in (r["#1 String"], r["#2 String"]):
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def corpus(glue_dir: str | Path, split: str, limit: int | None = None) -> dict[str, list]:
    """Columns `tokens` and `ner_tags` of the split's first `limit` sentences (all: None)."""
    ws = [words(s) for s in sentences(glue_dir, split)[:limit]]
    return {"tokens": ws, "ner_tags": [tags(w) for w in ws]}


def write(columns: dict[str, list], path: str | Path) -> Path:
    """The columns as a .jsonl, .json, .parquet or .csv file (lists as pandas writes them)."""
    import pandas as pd

    path = Path(path)
    df = pd.DataFrame(columns)
    if path.suffix in (".jsonl", ".json"):
        df.to_json(path, orient="records", lines=path.suffix == ".jsonl", force_ascii=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue-dir", required=True, help="the GLUE root (e.g. ../shared/data/glue)")
    p.add_argument("--output", required=True, help="folder for train.<format> and validation.<format>")
    p.add_argument("--format", default="jsonl", choices=("jsonl", "parquet", "csv"))
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for split in _FILES:
        cols = corpus(args.glue_dir, split)
        write(cols, out / f"{split}.{args.format}")
        print(f"{split}: {len(cols['tokens'])} sentences -> {out / f'{split}.{args.format}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
