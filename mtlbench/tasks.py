"""Task specifications: what each task predicts, how it is scored, and which way is better.

Everything downstream (selection, Delta_m, significance tests, tables) reads metric directions from a
`TaskSpec`, never from a hard-coded list; what differs between kinds of task (loss, metrics, evaluator,
saliency) is the kind's registered spec (`mtlbench.task_kinds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch

from mtlbench.task_kinds import (
    TASK_KINDS,
    MetricSpec,
    TaskKind,
    binary_metrics,
    squared_error,
    task_kind,
)

RegressionLoss = Literal["per_sample", "broadcast"]
REGRESSION_LOSSES: tuple[str, ...] = get_args(RegressionLoss)

__all__ = ["MetricSpec", "TaskKind", "TaskSpec", "binary_metrics", "metric_names", "squared_error"]


def metric_names() -> set[str]:
    """The names of every registered task kind's metrics."""
    return {m.name for kind in TASK_KINDS.values() for m in kind.metrics}


@dataclass(frozen=True)
class TaskSpec:
    """One task. Labels that are missing are -1 (classification/binary) or NaN (regression).
    `regression_loss` chooses a regression task's training loss (`squared_error`). `labels_complete`: no label
    of the dataset is missing (decided once per dataset when it is loaded), so the loss is the plain mean."""

    name: str
    kind: str
    num_classes: int = 1
    metrics: tuple[MetricSpec, ...] = field(default=())
    regression_loss: RegressionLoss = "per_sample"
    labels_complete: bool = False

    def __post_init__(self) -> None:
        spec = task_kind(self.kind)
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss {self.regression_loss!r}; valid: {list(REGRESSION_LOSSES)}")
        if not self.metrics:
            object.__setattr__(self, "metrics", spec.metrics)

    @property
    def spec(self) -> TaskKind:
        return TASK_KINDS[self.kind]

    @property
    def num_outputs(self) -> int:
        """Width (channels) of the head's last layer."""
        return self.spec.outputs(self.num_classes)

    @property
    def primary_metric(self) -> MetricSpec:
        return self.metrics[0]

    def directions(self) -> dict[str, bool]:
        return {m.name: m.higher_is_better for m in self.metrics}

    def squeeze(self, output: torch.Tensor) -> torch.Tensor:
        """Heads of single-output tasks return (B, 1); losses and saliencies want (B,)."""
        return output.squeeze(-1) if self.spec.single_output else output

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labelled samples of the batch (0 when none is labelled), read by no host."""
        return self.spec.loss(self, self.squeeze(output), target)

    def saliency_logit(self, output: torch.Tensor, target: torch.Tensor, which: str) -> torch.Tensor:
        """(B,) per-sample scalars whose gradients w.r.t. a shared representation are the task's saliencies."""
        per = self.spec.saliency(self.squeeze(output), target, which)
        return per.reshape(per.shape[0], -1).sum(1) if per.dim() > 1 else per

    def evaluator(self) -> Any:
        return self.spec.evaluator(self)


def labels_complete(task: TaskSpec, *targets: torch.Tensor) -> bool:
    """No label of these target tensors is missing, as the task's kind defines a present label (-1 for a class,
    NaN for a regression target); a dense task's pixels are always masked."""
    if task.spec.dense:
        return False
    return all(bool(task.spec.labelled(t).all()) for t in targets)
