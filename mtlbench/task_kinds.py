"""Task kinds as registered specs: what a task of each kind predicts (its head's width), its training loss, its
metrics and their directions, its evaluator, and the per-sample scalar whose input gradient is its saliency.

A kind is one `TaskKind` registered by name (`register_task_kind`); a `TaskSpec` names its kind and reads
everything from it, so nothing downstream switches on a kind's name and a new kind is one registration.

Missing labels are -1 (classification, binary, segmentation pixels), NaN (regression), depth <= 0 and the zero
normal (dense pixels). The losses are means over the labelled entries of a batch, 0 when none is labelled,
computed without reading anything on the host (no `if` on a tensor, no boolean-mask indexing): on a GPU a
training step never waits for the device. A task whose labels are known complete (`TaskSpec.labels_complete`,
decided once per dataset) takes the plain mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from mtlbench.tasks import TaskSpec


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool


def _raw_output(output: torch.Tensor, target: torch.Tensor, which: str) -> torch.Tensor:
    """A single-output or dense regression task's saliency scalar: its output itself."""
    return output


def _one(num_classes: int) -> int:
    return 1


@dataclass(frozen=True)
class TaskKind:
    """One kind of task. `loss(task, output, target)` gets the head's output squeezed (`single_output` heads
    return (B, 1)); `saliency(output, target, which)` returns per-element scalars (summed per sample by the
    caller) whose gradients w.r.t. the shared representation are the task's saliencies."""

    name: str
    metrics: tuple[MetricSpec, ...]
    loss: Callable[[TaskSpec, torch.Tensor, torch.Tensor], torch.Tensor]
    evaluator: Callable[[TaskSpec], Any]
    saliency: Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor] = _raw_output
    outputs: Callable[[int], int] = _one  # the head's width from the task's number of classes
    labelled: Callable[[torch.Tensor], torch.Tensor] = lambda target: target >= 0  # which labels are present
    single_output: bool = False
    dense: bool = False
    label_problem: Callable[[TaskSpec, np.ndarray], str | None] = lambda task, labels: None


TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(kind: TaskKind) -> TaskKind:
    if kind.name in TASK_KINDS:
        raise ValueError(f"task kind {kind.name!r} is registered twice")
    TASK_KINDS[kind.name] = kind
    return kind


def task_kind(name: str) -> TaskKind:
    if name not in TASK_KINDS:
        raise ValueError(f"unknown task kind {name!r}; valid: {sorted(TASK_KINDS)}")
    return TASK_KINDS[name]


# --- losses: means over the labelled entries, without a host read ------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds (0, with a zero gradient, where it holds nowhere)."""
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() / mask.sum().clamp_min(1)


def _class_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.long()
    if task.labels_complete:
        return F.cross_entropy(output, target, ignore_index=-1)
    return F.cross_entropy(output, target, ignore_index=-1, reduction="sum") / (target >= 0).sum().clamp_min(1)


def _binary_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task.labels_complete:
        return F.binary_cross_entropy_with_logits(output, target.float())
    per = F.binary_cross_entropy_with_logits(output, target.clamp_min(0).float(), reduction="none")
    return masked_mean(per, target >= 0)


def _present(target: torch.Tensor) -> torch.Tensor:
    """A regression target is present unless NaN."""
    return ~torch.isnan(target)


def squared_error(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`per_sample`: the mean squared error. `broadcast`: the squared error of SRDML's official synthetic script,
    whose (m, 1) prediction minus (m,) target broadcasts to all m x m pairs, summed and divided by m as the
    per-sample error is: (1/m) sum_i sum_j (y_hat_i - y_j)^2 = sum_i (y_hat_i - mean y)^2 + m var(y). Every
    prediction is pulled towards the task's mean target, and the value grows with the batch size (the script is
    full batch)."""
    if kind == "broadcast":
        return (output[:, None] - target[None, :]).pow(2).sum() / len(target)
    return F.mse_loss(output, target)


def masked_squared_error(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`squared_error` over the labelled samples (target not NaN), without selecting them by a mask."""
    labelled = ~torch.isnan(target)
    if kind == "broadcast":
        pairs = labelled[:, None] & labelled[None, :]
        diff = torch.where(pairs, output[:, None] - torch.nan_to_num(target)[None, :], 0.0)
        return diff.pow(2).sum() / labelled.sum().clamp_min(1)
    return masked_mean((output - torch.nan_to_num(target)).pow(2), labelled)


def _regression_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task.labels_complete:
        return squared_error(task.regression_loss, output, target)
    return masked_squared_error(task.regression_loss, output, target)


def _depth_mask(target: torch.Tensor) -> torch.Tensor:
    return target > 0


def _normal_mask(target: torch.Tensor) -> torch.Tensor:
    return target.abs().sum(1) > 0


def _depth_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on the valid pixels."""
    target = target.reshape(output.shape)
    return masked_mean((output - target).abs(), _depth_mask(target))


def _normals_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine on the valid pixels."""
    cos = F.cosine_similarity(F.normalize(output, dim=1), target, dim=1)
    return masked_mean(1 - cos, _normal_mask(target))


# --- saliency scalars -----------------------------------------------------------------------------------------
def _class_saliency(output: torch.Tensor, target: torch.Tensor, which: str) -> torch.Tensor:
    """The true class's logit (`label`, as Grad-CAM; an unlabelled sample, -1, uses class 0's), the top logit
    (`max`) or their sum (`sum`)."""
    if which == "label":
        return output.gather(1, target.clamp_min(0).long().unsqueeze(1)).squeeze(1)
    return output.max(1).values if which == "max" else output.sum(1)


def _segmentation_saliency(output: torch.Tensor, target: torch.Tensor, which: str) -> torch.Tensor:
    """Each pixel's class logit as a multi-class task's; unlabelled pixels contribute 0 with `label`."""
    per = _class_saliency(output, target, which)
    return per * (target >= 0) if which == "label" else per


# --- evaluators: exact split metrics, accumulated on the host after each batch -------------------------------
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
        return self.metrics(torch.cat(self._outputs), torch.cat(self._targets))

    def metrics(self, out: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError


class RegressionEvaluator(Evaluator):
    def metrics(self, out: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
        if not self.task.labels_complete:
            mask = ~torch.isnan(tgt)
            out, tgt = out[mask], tgt[mask]
        err = out - tgt.float()
        mse, mae = torch.stack([(err**2).mean(), err.abs().mean()]).tolist()
        return {"mse": mse, "mae": mae}


class ClassificationEvaluator(Evaluator):
    def metrics(self, out: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
        if not self.task.labels_complete:
            mask = tgt >= 0
            out, tgt = out[mask], tgt[mask]
        return {"accuracy": float((out.argmax(-1) == tgt).float().mean())}


class BinaryEvaluator(Evaluator):
    def metrics(self, out: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
        mask = tgt >= 0
        return binary_metrics(out[mask], tgt[mask])


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


class SegmentationEvaluator:
    """A streaming confusion matrix: mIoU over the classes that occur in the split, and pixel accuracy."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self.confusion = torch.zeros(task.num_classes, task.num_classes, dtype=torch.long)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output, target = output.detach().float().cpu(), target.detach().cpu()
        pred = output.argmax(1)
        valid = target >= 0
        c = self.task.num_classes
        idx = target[valid].long() * c + pred[valid]
        self.confusion += torch.bincount(idx, minlength=c * c).view(c, c)

    def compute(self) -> dict[str, float]:
        conf = self.confusion.double()
        inter = conf.diag()
        union = conf.sum(0) + conf.sum(1) - inter
        present = union > 0  # classes that occur in the split (as truth or prediction)
        return {"miou": float((inter[present] / union[present]).mean()), "pixel_acc": float(inter.sum() / conf.sum())}


class DepthEvaluator:
    """Absolute and relative error sums over the valid pixels."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self.abs_sum = self.rel_sum = 0.0
        self.count = 0

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output, target = output.detach().float().cpu(), target.detach().cpu()
        target = target.float().reshape(output.shape)
        mask = _depth_mask(target)
        err = (output[mask] - target[mask]).abs()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / target[mask]).sum())
        self.count += int(mask.sum())

    def compute(self) -> dict[str, float]:
        return {"abs_err": self.abs_sum / self.count, "rel_err": self.rel_sum / self.count}


class NormalsEvaluator:
    """Every valid pixel's angle (the median needs them all)."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self.angles: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output, target = output.detach().float().cpu(), target.detach().cpu()
        mask = _normal_mask(target)
        cos = F.cosine_similarity(F.normalize(output, dim=1), target.float(), dim=1).clamp(-1, 1)
        self.angles.append(torch.rad2deg(torch.acos(cos[mask])))

    def compute(self) -> dict[str, float]:
        angles = torch.cat(self.angles).double()
        return {
            "mean_angle": float(angles.mean()),
            "median_angle": float(np.median(angles.numpy())),
            **{f"within_{t}": float((angles < float(t)).double().mean()) for t in ("11.25", "22.5", "30")},
        }


def _class_label_problem(task: TaskSpec, labels: np.ndarray) -> str | None:
    """What is wrong with a file of a dense task's labels, or None."""
    if not ((labels >= -1) & (labels < task.num_classes)).all():
        return f"has labels outside -1..{task.num_classes - 1}"
    return None


def _normals_label_problem(task: TaskSpec, labels: np.ndarray) -> str | None:
    return None if labels.shape[0] == 3 else f"has shape {labels.shape}, expected (3, H, W)"


def _metrics(higher_is_better: bool, *names: str) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(name, higher_is_better) for name in names)


def _classes(num_classes: int) -> int:
    return num_classes


def _three(num_classes: int) -> int:
    return 3


for _kind in (
    TaskKind(
        "classification", _metrics(True, "accuracy"), _class_loss, ClassificationEvaluator, _class_saliency, _classes
    ),
    TaskKind(
        "binary",
        _metrics(True, "accuracy", "auc", "precision", "recall"),
        _binary_loss,
        BinaryEvaluator,
        single_output=True,
    ),
    TaskKind(
        "regression",
        _metrics(False, "mse", "mae"),
        _regression_loss,
        RegressionEvaluator,
        labelled=_present,
        single_output=True,
    ),
    TaskKind(
        "segmentation",
        _metrics(True, "miou", "pixel_acc"),
        _class_loss,
        SegmentationEvaluator,
        _segmentation_saliency,
        _classes,
        dense=True,
        label_problem=_class_label_problem,
    ),
    TaskKind("depth", _metrics(False, "abs_err", "rel_err"), _depth_loss, DepthEvaluator, dense=True),
    TaskKind(
        "normals",
        _metrics(False, "mean_angle", "median_angle") + _metrics(True, "within_11.25", "within_22.5", "within_30"),
        _normals_loss,
        NormalsEvaluator,
        outputs=_three,
        dense=True,
        label_problem=_normals_label_problem,
    ),
):
    register_task_kind(_kind)
