"""SQuAD 1.1 / 2.0 data: official JSON files or the hub, article-level splits, disjointness checks.

Sources, for the training side (pruning sample / fine-tuning) and the evaluation side separately:
an explicit JSON file, the official file name under a data folder (`train-v1.1.json`, `dev-v1.1.json`,
`…-v2.0.json`), or the hub (`rajpurkar/squad`, `rajpurkar/squad_v2`, splits train / validation).
Where only one file exists (e.g. the dev set), `split_articles` cuts it by article title, seeded, into a
training part and a disjoint evaluation part; `split_by_article` writes the same two parts as files.
Pre/post-processing: `squad_features.py`; metrics: `squad_metrics.py`.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from kprune_lib.data.glue import DataError
from kprune_lib.data.tasks import QaTask


@dataclass(frozen=True)
class QaExample:
    id: str
    title: str  # article title: the unit of the disjointness check and of article splits
    context: str
    question: str
    answers: tuple[str, ...]  # gold answer texts; () = unanswerable (SQuAD 2.0)
    answer_starts: tuple[int, ...]  # character offsets of the answers in `context`


@dataclass
class QaData:
    """The examples a command needs, with where they came from (for summary.json)."""

    eval: list[QaExample]
    train: list[QaExample] | None = None
    info: dict = field(default_factory=dict)


def golds(examples: list[QaExample]) -> dict[str, list[str]]:
    """Question id -> gold answer texts, the input of `squad_metrics.squad_scores`."""
    return {e.id: list(e.answers) for e in examples}


def titles(examples: list[QaExample]) -> list[str]:
    """Article titles in order of first appearance."""
    return list(dict.fromkeys(e.title for e in examples))


# ---- reading ------------------------------------------------------------------------------------
def _need(obj, key: str, kind, where: str, path):
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        raise DataError(f"{path} is not a SQuAD JSON file: {where} has no {key!r} "
                        f"({kind.__name__ if isinstance(kind, type) else 'value'}); expected the official layout "
                        "{\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\": [{\"id\", \"question\", \"answers\"}]}]}]}")
    return obj[key]


def parse_squad(raw, path: str = "<json>") -> list[QaExample]:
    """Examples of an official SQuAD JSON object (1.1 or 2.0), validated."""
    examples, seen = [], set()
    for i, article in enumerate(_need(raw, "data", list, "the top level", path)):
        title = _need(article, "title", str, f"data[{i}]", path)
        for j, para in enumerate(_need(article, "paragraphs", list, f"data[{i}]", path)):
            where = f"data[{i}].paragraphs[{j}]"
            context = _need(para, "context", str, where, path)
            for k, qa in enumerate(_need(para, "qas", list, where, path)):
                w = f"{where}.qas[{k}]"
                qid, question = str(_need(qa, "id", (str, int), w, path)), _need(qa, "question", str, w, path)
                answers = _need(qa, "answers", list, w, path)
                for n, a in enumerate(answers):
                    _need(a, "text", str, f"{w}.answers[{n}]", path)
                    _need(a, "answer_start", int, f"{w}.answers[{n}]", path)
                if qa.get("is_impossible"):
                    answers = []  # 2.0 keeps "plausible_answers" apart; guard against stray answers
                if qid in seen:
                    raise DataError(f"{path}: question id {qid!r} occurs twice ({w})")
                seen.add(qid)
                examples.append(QaExample(qid, title, context, question, tuple(a["text"] for a in answers),
                                          tuple(a["answer_start"] for a in answers)))
    if not examples:
        raise DataError(f"{path} holds no questions")
    return examples


def read_squad_json(path: str | Path) -> list[QaExample]:
    return parse_squad(_load_json(path), str(path))


def _load_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SQuAD file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a SQuAD JSON file: {str(e).splitlines()[0]}") from None


def load_hub(task: QaTask, split: str) -> list[QaExample]:
    """One split ("train" / "validation") of the task's hub dataset (needs the hub or a populated HF cache)."""
    try:
        import datasets

        ds = datasets.load_dataset(task.hub_id, split=split)
    except Exception as e:  # network, cache, unknown split
        raise DataError(f"could not load {task.hub_id} [{split}] from the hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); offline, pass local official JSON files "
                        "(--data-dir, --train-file, --eval-file)") from None
    return [QaExample(str(r["id"]), r["title"], r["context"], r["question"], tuple(r["answers"]["text"]),
                      tuple(int(s) for s in r["answers"]["answer_start"])) for r in ds]


# ---- article splits and checks ------------------------------------------------------------------
def train_titles(all_titles: list[str], fraction: float, seed: int) -> set[str]:
    """The articles (titles) that go to the training part: round(fraction · #articles), a seeded random choice."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {fraction}")
    n = round(fraction * len(all_titles))
    if not 0 < n < len(all_titles):
        raise DataError(f"cannot split {len(all_titles)} article(s) with fraction {fraction}: "
                        "both parts need at least one article")
    return set(random.Random(seed).sample(sorted(all_titles), n))


def split_articles(examples: list[QaExample], fraction: float, seed: int = 0) -> tuple[list[QaExample], list[QaExample]]:
    """(training part, evaluation part) of one set, split by article title; order within each part kept."""
    chosen = train_titles(titles(examples), fraction, seed)
    return [e for e in examples if e.title in chosen], [e for e in examples if e.title not in chosen]


def split_by_article(path: str | Path, fraction: float, seed: int, out_dir: str | Path) -> tuple[Path, Path]:
    """Write OUT/train.json and OUT/eval.json: the articles of an official SQuAD file, split as `split_articles`.

    The article entries are copied unchanged (official format), so the files hold exactly the examples
    `split_articles(read_squad_json(path), fraction, seed)` returns.
    """
    raw = _load_json(path)
    examples = parse_squad(raw, str(path))
    chosen = train_titles(titles(examples), fraction, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = {"train.json": [a for a in raw["data"] if a["title"] in chosen],
             "eval.json": [a for a in raw["data"] if a["title"] not in chosen]}
    meta = {"source": str(path), "fraction": fraction, "seed": seed}
    for name, articles in parts.items():
        doc = {"version": raw.get("version", ""), "data": articles, "kprune_split": {**meta, "part": name[:-5]}}
        (out_dir / name).write_text(json.dumps(doc, ensure_ascii=False))
    return out_dir / "train.json", out_dir / "eval.json"


def check_disjoint(train: list[QaExample], evaluation: list[QaExample]) -> None:
    """The training side must share no question id and no article title with the evaluation set."""
    for what, key in (("question id", lambda e: e.id), ("article title", lambda e: e.title)):
        shared = sorted({key(e) for e in train} & {key(e) for e in evaluation})
        if shared:
            raise DataError(f"the training/sample data and the evaluation data share {len(shared)} {what}(s) "
                            f"(e.g. {shared[0]!r}); use disjoint files, or --split-articles to cut one file by article")


def check_version(examples: list[QaExample], task: QaTask, source: str) -> None:
    n = sum(not e.answers for e in examples)
    if n and not task.version_2:
        raise DataError(f"{source} has {n} unanswerable question(s) (SQuAD 2.0); use --task squad_v2")


# ---- what a command loads -----------------------------------------------------------------------
def squad_only(task, **options) -> None:
    """Reject SQuAD-only options (train_file, eval_file, split_articles, …) given for a GLUE task; None/0 = unset."""
    given = [k for k, v in options.items() if v not in (None, 0)]
    if task.problem != "qa" and given:
        raise DataError(f"{', '.join(given)} apply to SQuAD tasks only, not {task.name}")


def _source(task: QaTask, side: int, data_dir, file) -> tuple[list[QaExample], str]:
    """side 0 = training, 1 = evaluation: an explicit file, the official file under data_dir, or the hub."""
    if file is not None:
        return read_squad_json(file), str(file)
    if data_dir is not None:
        path = Path(data_dir) / task.files[side]
        if not path.is_file():
            hint = ("; pass --train-file, or --split-articles F to take the training side from part of the "
                    "evaluation file's articles" if side == 0 else "; pass --eval-file")
            raise DataError(f"no {task.files[side]} in {data_dir}{hint}")
        return read_squad_json(path), str(path)
    split = ("train", "validation")[side]
    return load_hub(task, split), f"{task.hub_id}[{split}]"


def load_squad(task: QaTask, data_dir=None, train_file=None, eval_file=None, split_fraction: float | None = None,
               split_seed: int = 0, need_train: bool = True) -> QaData:
    """Training side (unless need_train=False) and evaluation side of a SQuAD task, checked disjoint.

    split_fraction: take that fraction of the evaluation source's articles as the training side (seeded by
    split_seed) and evaluate on the rest; exclusive with train_file. Evaluation-only commands given a split
    fraction evaluate on the same held-out part that pruning / fine-tuning with that split evaluates on.
    """
    if split_fraction is not None and train_file is not None:
        raise DataError("--split-articles and --train-file exclude each other: the split takes the training side "
                        "from the evaluation file")
    evaluation, eval_source = _source(task, 1, data_dir, eval_file)
    check_version(evaluation, task, eval_source)
    info = {"eval_source": eval_source}
    train = None
    if split_fraction is not None:
        train, evaluation = split_articles(evaluation, split_fraction, split_seed)
        info.update(train_source=eval_source, split_articles=split_fraction, split_seed=split_seed)
    elif need_train:
        train, info["train_source"] = _source(task, 0, data_dir, train_file)
        check_version(train, task, info["train_source"])
    if train is not None:
        check_disjoint(train, evaluation)
        info.update(train_questions=len(train), train_articles=len(titles(train)))
        if not need_train:
            train = None
    info.update(eval_questions=len(evaluation), eval_articles=len(titles(evaluation)))
    return QaData(evaluation, train, info)
