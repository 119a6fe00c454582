"""The task table: one row per GLUE task (SQuAD lives in `squad.py`)."""
from __future__ import annotations

from dataclasses import dataclass

from .config import DEFAULT_MAX_LENGTH


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

    @property
    def problem(self) -> str:
        return "regression" if self.num_labels == 1 else "classification"


GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("sentence",), 2, ("matthews", "accuracy"), "matthews"),
    GlueTask("sst2", "SST-2", ("sentence",), 2, ("accuracy",), "accuracy", max_length=64, ref_seq_len=25.16),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("accuracy", "f1"), "accuracy", ref_seq_len=53.24),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), 1, ("spearman", "pearson"), "spearman", ref_seq_len=31.47),
    GlueTask("qqp", "QQP", ("question1", "question2"), 2, ("accuracy", "f1"), "accuracy", ref_seq_len=30.55),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), 3, ("accuracy",), "accuracy",
             eval_splits=("validation_matched", "validation_mismatched"), ref_seq_len=39.05),
    GlueTask("qnli", "QNLI", ("question", "sentence"), 2, ("accuracy",), "accuracy", ref_seq_len=50.97),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), 2, ("accuracy",), "accuracy"),
]}
QA_TASKS = ("squad", "squad_v2")


def get_glue_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(list(GLUE_TASKS) + list(QA_TASKS))}")
    return GLUE_TASKS[key]
