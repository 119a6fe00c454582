"""The task tables: one row per GLUE task and per SQuAD version (SQuAD data and scoring live in `squad*.py`)."""
from __future__ import annotations

from dataclasses import dataclass

from kprune_lib.config import DEFAULT_MAX_LENGTH


@dataclass(frozen=True)
class GlueTask:
    name: str  # our name (= `nyu-mll/glue` config name)
    folder: str  # folder in the official GLUE layout
    hub_columns: tuple[str, ...]  # text columns in `nyu-mll/glue`
    num_labels: int  # 1 = regression
    metrics: tuple[str, ...]
    main_metric: str
    eval_splits: tuple[str, ...] = ("validation",)
    max_length: int = DEFAULT_MAX_LENGTH
    ref_seq_len: float | None = None  # the reference's L_seq, for comparison only
    label_names: tuple[str, ...] = ()  # class names in `nyu-mll/glue` order (config id2label); () for regression

    @property
    def problem(self) -> str:
        return "regression" if self.num_labels == 1 else "classification"


GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("sentence",), 2, ("matthews", "accuracy"), "matthews",
             label_names=("unacceptable", "acceptable")),
    GlueTask("sst2", "SST-2", ("sentence",), 2, ("accuracy",), "accuracy", max_length=64, ref_seq_len=25.16,
             label_names=("negative", "positive")),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("accuracy", "f1"), "accuracy", ref_seq_len=53.24,
             label_names=("not_equivalent", "equivalent")),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), 1, ("spearman", "pearson"), "spearman", ref_seq_len=31.47),
    GlueTask("qqp", "QQP", ("question1", "question2"), 2, ("accuracy", "f1"), "accuracy", ref_seq_len=30.55,
             label_names=("not_duplicate", "duplicate")),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), 3, ("accuracy",), "accuracy",
             eval_splits=("validation_matched", "validation_mismatched"), ref_seq_len=39.05,
             label_names=("entailment", "neutral", "contradiction")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), 2, ("accuracy",), "accuracy", ref_seq_len=50.97,
             label_names=("entailment", "not_entailment")),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), 2, ("accuracy",), "accuracy",
             label_names=("entailment", "not_entailment")),
]}


@dataclass(frozen=True)
class QaTask:
    """Extractive question answering (SQuAD); data, pre/post-processing and metrics live in `squad*.py`."""

    name: str  # our name
    hub_id: str  # `datasets` id (splits train / validation)
    files: tuple[str, str]  # official (train, dev) JSON file names, looked up under --data-dir
    version_2: bool  # unanswerable questions: null answers allowed (SQuAD 2.0)
    metrics: tuple[str, ...] = ("exact_match", "f1")  # percentages, as the official scripts
    main_metric: str = "f1"
    max_length: int = 384  # tokens per feature (question first, then a window of the context)
    doc_stride: int = 128  # tokens of overlap between consecutive context windows (HF `stride`)
    n_best: int = 20  # start and end candidates per feature in post-processing
    max_answer_length: int = 30  # tokens
    ref_seq_len: float = 170.0  # the paper's L_seq for SQuAD (default FLOPs sequence length)
    problem: str = "qa"


QA_TASK_TABLE: dict[str, QaTask] = {t.name: t for t in [
    QaTask("squad", "rajpurkar/squad", ("train-v1.1.json", "dev-v1.1.json"), version_2=False),
    QaTask("squad_v2", "rajpurkar/squad_v2", ("train-v2.0.json", "dev-v2.0.json"), version_2=True),
]}
QA_TASKS = tuple(QA_TASK_TABLE)


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def is_qa_task(name: str) -> bool:
    return _key(name) in QA_TASK_TABLE


def get_task(name: str) -> GlueTask | QaTask:
    """A GLUE or a SQuAD task by name (case and -/_ insensitive: SST-2, sst2, squad-v2 …)."""
    return QA_TASK_TABLE[_key(name)] if is_qa_task(name) else get_glue_task(name)


def get_glue_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(list(GLUE_TASKS) + list(QA_TASKS))}")
    return GLUE_TASKS[key]
