"""The GLUE tasks: their columns, label counts, metrics and chance levels. No I/O.

Columns and splits are those of the Hugging Face data set `nyu-mll/glue`. Metrics follow
GLUE (and Hugging Face's run_glue): Matthews correlation for CoLA, F1 and accuracy for MRPC
and QQP, Pearson and Spearman correlation for STS-B, accuracy otherwise; computed by
scikit-learn and scipy. Metric names follow lm-eval's (`acc`, `f1`, `mcc`), so the summary
and the figures treat them like any benchmark's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GlueTask:
    name: str
    text_columns: tuple[str, ...]  # one sentence, or a pair
    num_labels: int  # 1: a regression (STS-B)
    metrics: tuple[str, ...]
    validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask("cola", ("sentence",), 2, ("mcc",)),
        GlueTask("sst2", ("sentence",), 2, ("acc",)),
        GlueTask("mrpc", ("sentence1", "sentence2"), 2, ("f1", "acc")),
        GlueTask("qqp", ("question1", "question2"), 2, ("f1", "acc")),
        GlueTask("stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr")),
        GlueTask("mnli", ("premise", "hypothesis"), 3, ("acc",), "validation_matched"),
        GlueTask("qnli", ("question", "sentence"), 2, ("acc",)),
        GlueTask("rte", ("sentence1", "sentence2"), 2, ("acc",)),
        GlueTask("wnli", ("sentence1", "sentence2"), 2, ("acc",)),
    )
}
# what the study runs by default; MNLI and QQP are available but cost the most
DEFAULT_TASKS = ("cola", "mrpc", "qnli", "rte", "sst2", "stsb", "wnli")


def task_table(custom: Mapping[str, str] | None = None) -> dict[str, GlueTask]:
    """The GLUE tasks, plus `custom` tasks ({name: the GLUE task whose columns and metrics it has},
    read from local files), e.g. the demo's generated tasks."""
    table = dict(GLUE_TASKS)
    for name, like in (custom or {}).items():
        if like not in GLUE_TASKS:
            raise ValueError(f"custom task {name!r} follows {like!r}, which is not a GLUE task (valid: {', '.join(GLUE_TASKS)})")
        if name in GLUE_TASKS:
            raise ValueError(f"custom task {name!r} has the name of a GLUE task; give it another name")
        base = GLUE_TASKS[like]
        table[name] = GlueTask(name, base.text_columns, base.num_labels, base.metrics, "validation")
    return table


def get_task(name: str, custom: Mapping[str, str] | None = None) -> GlueTask:
    table = task_table(custom)
    if name not in table:
        raise ValueError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(table)}")
    return table[name]


def metric_values(task: GlueTask, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """Each of the task's metrics for `predictions` (class ids, or scores for STS-B) against `labels`."""
    from scipy import stats
    from sklearn import metrics

    compute = {
        "acc": lambda: metrics.accuracy_score(labels, predictions),
        "f1": lambda: metrics.f1_score(labels, predictions, zero_division=0),
        "mcc": lambda: metrics.matthews_corrcoef(labels, predictions),
        "pearson": lambda: stats.pearsonr(predictions, labels)[0],
        "spearmanr": lambda: stats.spearmanr(predictions, labels)[0],
    }
    return {name: float(compute[name]()) for name in task.metrics}


def accuracy_stderr(predictions: Sequence, labels: Sequence) -> float:
    """Standard error of the mean of per-example correctness (lm-eval's stderr for acc)."""
    from scipy import stats

    return float(stats.sem([float(p == label) for p, label in zip(predictions, labels)]))


def chance_levels(task: GlueTask, labels: Sequence) -> dict[str, float]:
    """What each metric scores without the model: always the validation split's majority class
    (accuracy, F1; on a tie the smaller label), and 0 for the correlations (MCC, Pearson, Spearman), which a constant or
    random prediction scores in expectation. 0 of the normalized scores."""
    if task.is_regression:
        return {name: 0.0 for name in task.metrics}
    counts = Counter(labels)
    majority = min(counts, key=lambda label: (-counts[label], label))  # a tie: the smaller label, whatever the row order
    constant = [majority] * len(labels)
    levels = metric_values(task, constant, labels) if "f1" in task.metrics or "acc" in task.metrics else {}
    return {name: (0.0 if name == "mcc" else levels[name]) for name in task.metrics}
