"""Task specifications: what each task predicts, how it is scored, and which way is better.

Everything downstream (selection, Delta_m, significance tests, tables) reads metric directions from a
`TaskSpec`, never from a hard-coded list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

TaskKind = Literal["classification", "binary", "regression"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool


_KIND_METRICS: dict[str, tuple[MetricSpec, ...]] = {
    "classification": (MetricSpec("accuracy", True),),
    "binary": (
        MetricSpec("accuracy", True),
        MetricSpec("auc", True),
        MetricSpec("precision", True),
        MetricSpec("recall", True),
    ),
    "regression": (MetricSpec("mse", False), MetricSpec("mae", False)),
}


@dataclass(frozen=True)
class TaskSpec:
    """One task. Labels that are missing are -1 (classification/binary) or NaN (regression)."""

    name: str
    kind: TaskKind
    num_classes: int = 1
    metrics: tuple[MetricSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in _KIND_METRICS:
            raise ValueError(f"unknown task kind {self.kind!r}; valid: {sorted(_KIND_METRICS)}")
        if not self.metrics:
            object.__setattr__(self, "metrics", _KIND_METRICS[self.kind])

    @property
    def num_outputs(self) -> int:
        """Width of the head's last layer."""
        return self.num_classes if self.kind == "classification" else 1

    @property
    def primary_metric(self) -> MetricSpec:
        return self.metrics[0]

    def directions(self) -> dict[str, bool]:
        return {m.name: m.higher_is_better for m in self.metrics}

    def squeeze(self, output: torch.Tensor) -> torch.Tensor:
        """Heads of single-output tasks return (B, 1); losses and saliencies want (B,)."""
        return output if self.kind == "classification" else output.squeeze(-1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labelled samples of the batch (0 when none is labelled)."""
        output = self.squeeze(output)
        if self.kind == "classification":
            if bool((target >= 0).any()):
                return F.cross_entropy(output, target, ignore_index=-1)
            return output.sum() * 0.0
        if self.kind == "binary":
            mask = target >= 0
            return F.binary_cross_entropy_with_logits(output[mask], target[mask].float()) if mask.any() \
                else output.sum() * 0.0
        mask = ~torch.isnan(target)
        return F.mse_loss(output[mask], target[mask]) if mask.any() else output.sum() * 0.0

    def evaluator(self) -> Evaluator:
        return Evaluator(self)


class Evaluator:
    """Accumulates one task's predictions over a split and computes its metrics exactly (no batch means)."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self._outputs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._outputs.append(self.task.squeeze(output).detach().float().cpu())
        self._targets.append(target.detach().cpu())

    def compute(self) -> dict[str, float]:
        out, tgt = torch.cat(self._outputs), torch.cat(self._targets)
        kind = self.task.kind
        if kind == "regression":
            mask = ~torch.isnan(tgt)
            err = out[mask] - tgt[mask].float()
            return {"mse": float((err**2).mean()), "mae": float(err.abs().mean())}
        mask = tgt >= 0
        out, tgt = out[mask], tgt[mask]
        if kind == "classification":
            return {"accuracy": float((out.argmax(-1) == tgt).float().mean())}
        return binary_metrics(out, tgt)


def binary_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Accuracy, ROC AUC, precision and recall of the positive class at logit 0 (probability 0.5)."""
    from sklearn.metrics import roc_auc_score

    pred = logits > 0
    pos = target == 1
    tp = float((pred & pos).sum())
    precision = tp / float(pred.sum()) if pred.any() else 0.0
    recall = tp / float(pos.sum()) if pos.any() else 0.0
    both_classes = bool(pos.any()) and bool((~pos).any())
    auc = float(roc_auc_score(pos.numpy(), logits.numpy())) if both_classes else float("nan")
    return {
        "accuracy": float((pred == pos).float().mean()),
        "auc": auc,
        "precision": precision,
        "recall": recall,
    }
