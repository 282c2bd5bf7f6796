"""Task specifications: what each task predicts, how it is scored, and which way is better.

Everything downstream (selection, Delta_m, significance tests, tables) reads metric directions from a
`TaskSpec`, never from a hard-coded list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

TaskKind = Literal["classification", "binary", "regression", "segmentation", "depth", "normals"]
RegressionLoss = Literal["per_sample", "broadcast"]
REGRESSION_LOSSES: tuple[str, ...] = get_args(RegressionLoss)


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
    "segmentation": (MetricSpec("miou", True), MetricSpec("pixel_acc", True)),
    "depth": (MetricSpec("abs_err", False), MetricSpec("rel_err", False)),
    "normals": (
        MetricSpec("mean_angle", False),
        MetricSpec("median_angle", False),
        MetricSpec("within_11.25", True),
        MetricSpec("within_22.5", True),
        MetricSpec("within_30", True),
    ),
}
DENSE_KINDS = ("segmentation", "depth", "normals")


def metric_names() -> set[str]:
    """The names of every built-in task kind's metrics."""
    return {m.name for specs in _KIND_METRICS.values() for m in specs}


@dataclass(frozen=True)
class TaskSpec:
    """One task. Labels that are missing are -1 (classification/binary) or NaN (regression).
    `regression_loss` chooses a regression task's training loss (`squared_error`)."""

    name: str
    kind: TaskKind
    num_classes: int = 1
    metrics: tuple[MetricSpec, ...] = field(default=())
    regression_loss: RegressionLoss = "per_sample"

    def __post_init__(self) -> None:
        if self.kind not in _KIND_METRICS:
            raise ValueError(f"unknown task kind {self.kind!r}; valid: {sorted(_KIND_METRICS)}")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"unknown regression loss {self.regression_loss!r}; valid: {list(REGRESSION_LOSSES)}")
        if not self.metrics:
            object.__setattr__(self, "metrics", _KIND_METRICS[self.kind])

    @property
    def num_outputs(self) -> int:
        """Width (channels) of the head's last layer."""
        if self.kind in ("classification", "segmentation"):
            return self.num_classes
        return 3 if self.kind == "normals" else 1

    @property
    def primary_metric(self) -> MetricSpec:
        return self.metrics[0]

    def directions(self) -> dict[str, bool]:
        return {m.name: m.higher_is_better for m in self.metrics}

    def squeeze(self, output: torch.Tensor) -> torch.Tensor:
        """Heads of single-output tasks return (B, 1); losses and saliencies want (B,)."""
        return output if self.kind in ("classification", *DENSE_KINDS) else output.squeeze(-1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labelled samples of the batch (0 when none is labelled)."""
        output = self.squeeze(output)
        if self.kind in DENSE_KINDS:
            return dense_loss(self.kind, output, target)
        if self.kind == "classification":
            if bool((target >= 0).any()):
                return F.cross_entropy(output, target, ignore_index=-1)
            return output.sum() * 0.0
        if self.kind == "binary":
            mask = target >= 0
            return (
                F.binary_cross_entropy_with_logits(output[mask], target[mask].float())
                if mask.any()
                else output.sum() * 0.0
            )
        mask = ~torch.isnan(target)
        return squared_error(self.regression_loss, output[mask], target[mask]) if mask.any() else output.sum() * 0.0

    def evaluator(self) -> Evaluator | DenseEvaluator:
        return DenseEvaluator(self) if self.kind in DENSE_KINDS else Evaluator(self)


def squared_error(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`per_sample`: the mean squared error. `broadcast`: the squared error of SRDML's official synthetic script,
    whose (m, 1) prediction minus (m,) target broadcasts to all m x m pairs, summed and divided by m as the
    per-sample error is: (1/m) sum_i sum_j (y_hat_i - y_j)^2 = sum_i (y_hat_i - mean y)^2 + m var(y). Every
    prediction is pulled towards the task's mean target, and the value grows with the batch size (the script is
    full batch)."""
    if kind == "broadcast":
        return (output[:, None] - target[None, :]).pow(2).sum() / len(target)
    return F.mse_loss(output, target)


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


# --- dense prediction (NYUv2, Cityscapes): labels -1 / depth 0 / normal (0, 0, 0) mark invalid pixels --------
def _depth_mask(target: torch.Tensor) -> torch.Tensor:
    return target > 0


def _normal_mask(target: torch.Tensor) -> torch.Tensor:
    return target.abs().sum(1) > 0


def dense_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Segmentation: pixel cross-entropy; depth: L1 on valid pixels; normals: 1 - cosine on valid pixels."""
    if kind == "segmentation":
        if bool((target >= 0).any()):
            return F.cross_entropy(output, target.long(), ignore_index=-1)
        return output.sum() * 0.0
    if kind == "depth":
        target = target.reshape(output.shape)
        mask = _depth_mask(target)
        return (output[mask] - target[mask]).abs().mean() if mask.any() else output.sum() * 0.0
    mask = _normal_mask(target)
    cos = F.cosine_similarity(F.normalize(output, dim=1), target, dim=1)
    return (1 - cos[mask]).mean() if mask.any() else output.sum() * 0.0


class DenseEvaluator:
    """Streaming, exact split metrics for dense tasks: a confusion matrix for segmentation, error sums for
    depth, and every valid pixel's angle for normals (the median needs them all)."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self.confusion = torch.zeros(task.num_classes, task.num_classes, dtype=torch.long)
        self.abs_sum = self.rel_sum = 0.0
        self.count = 0
        self.angles: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output, target = output.detach().float().cpu(), target.detach().cpu()
        if self.task.kind == "segmentation":
            pred = output.argmax(1)
            valid = target >= 0
            c = self.task.num_classes
            idx = target[valid].long() * c + pred[valid]
            self.confusion += torch.bincount(idx, minlength=c * c).view(c, c)
        elif self.task.kind == "depth":
            target = target.float().reshape(output.shape)
            mask = _depth_mask(target)
            err = (output[mask] - target[mask]).abs()
            self.abs_sum += float(err.sum())
            self.rel_sum += float((err / target[mask]).sum())
            self.count += int(mask.sum())
        else:
            mask = _normal_mask(target)
            cos = F.cosine_similarity(F.normalize(output, dim=1), target.float(), dim=1).clamp(-1, 1)
            self.angles.append(torch.rad2deg(torch.acos(cos[mask])))

    def compute(self) -> dict[str, float]:
        if self.task.kind == "segmentation":
            conf = self.confusion.double()
            inter = conf.diag()
            union = conf.sum(0) + conf.sum(1) - inter
            present = union > 0  # classes that occur in the split (as truth or prediction)
            return {
                "miou": float((inter[present] / union[present]).mean()),
                "pixel_acc": float(inter.sum() / conf.sum()),
            }
        if self.task.kind == "depth":
            return {"abs_err": self.abs_sum / self.count, "rel_err": self.rel_sum / self.count}
        angles = torch.cat(self.angles).double()
        return {
            "mean_angle": float(angles.mean()),
            "median_angle": float(np.median(angles.numpy())),
            **{f"within_{t}": float((angles < float(t)).double().mean()) for t in ("11.25", "22.5", "30")},
        }
