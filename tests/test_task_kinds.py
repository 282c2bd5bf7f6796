"""Task kinds as registered specs (issue 25.3), and their losses over labelled entries without host reads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtlbench.host_reads import HostReads
from mtlbench.task_kinds import TASK_KINDS, MetricSpec, TaskKind, register_task_kind
from mtlbench.tasks import TaskSpec, labels_complete


def _selected_mean_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss as the suite computed it before: select the labelled samples on the host, then the plain mean."""
    output = task.squeeze(output)
    if task.kind == "classification":
        keep = target >= 0
        return F.cross_entropy(output[keep], target[keep])
    if task.kind == "binary":
        keep = target >= 0
        return F.binary_cross_entropy_with_logits(output[keep], target[keep].float())
    keep = ~torch.isnan(target)
    out, tgt = output[keep], target[keep]
    if task.regression_loss == "broadcast":
        return (out[:, None] - tgt[None, :]).pow(2).sum() / len(tgt)
    return F.mse_loss(out, tgt)


CASES = {
    "classification": (
        TaskSpec("c", "classification", num_classes=4),
        torch.randn(8, 4),
        torch.tensor([0, 3, -1, 2, 1, -1, 0, 3]),
    ),
    "binary": (TaskSpec("b", "binary"), torch.randn(8, 1), torch.tensor([1, 0, -1, 1, -1, 0, 0, 1])),
    "regression": (
        TaskSpec("r", "regression"),
        torch.randn(8, 1),
        torch.tensor([0.5, float("nan"), 1.0, -2.0, 0.1, float("nan"), 3.0, 0.0]),
    ),
    "broadcast": (
        TaskSpec("s", "regression", regression_loss="broadcast"),
        torch.randn(8, 1),
        torch.tensor([0.5, float("nan"), 1.0, -2.0, 0.1, float("nan"), 3.0, 0.0]),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_loss_over_labelled_samples_equals_selecting_them_and_reads_nothing(case):
    task, output, target = CASES[case]
    output = output.detach().clone().requires_grad_(True)
    with HostReads() as reads:
        loss = task.loss(output, target)
        loss.backward()
    assert not reads.counts, reads.report()
    expected_out = output.detach().clone().requires_grad_(True)
    expected = _selected_mean_loss(task, expected_out, target)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(output.grad, expected_out.grad)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batch_without_labels_has_loss_zero_and_a_zero_gradient(case):
    task, output, target = CASES[case]
    missing = torch.full_like(target, float("nan")) if target.is_floating_point() else torch.full_like(target, -1)
    output = output.detach().clone().requires_grad_(True)
    loss = task.loss(output, missing)
    loss.backward()
    assert float(loss) == 0.0 and torch.equal(output.grad, torch.zeros_like(output))


@pytest.mark.parametrize("case", sorted(CASES))
def test_complete_labels_take_the_plain_mean_with_the_same_value(case):
    from dataclasses import replace

    task, output, target = CASES[case]
    full = torch.where(torch.isnan(target), 0.25, target) if target.is_floating_point() else target.clamp_min(0)
    assert labels_complete(task, full) and not labels_complete(task, target)
    complete = replace(task, labels_complete=True)
    torch.testing.assert_close(complete.loss(output, full), task.loss(output, full))


def test_a_new_task_kind_is_one_registration(monkeypatch):
    """An ordinal kind (absolute error of a scalar score): the loss, metrics, directions, head width, saliency and
    evaluator of its tasks come from its spec alone."""
    from mtlbench.task_kinds import RegressionEvaluator, masked_mean

    def absolute_error(task, output, target):
        return masked_mean((output - torch.nan_to_num(target)).abs(), ~torch.isnan(target))

    monkeypatch.setitem(TASK_KINDS, "ordinal", None)
    del TASK_KINDS["ordinal"]
    kind = TaskKind(
        "ordinal",
        (MetricSpec("mse", False), MetricSpec("mae", False)),
        absolute_error,
        RegressionEvaluator,
        lambda output, target, which: output,
        lambda num_classes: 1,
        single_output=True,
    )
    register_task_kind(kind)
    try:
        task = TaskSpec("grade", "ordinal")
        assert task.num_outputs == 1 and task.directions() == {"mse": False, "mae": False}
        out, target = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, float("nan"), 3.0])
        assert float(task.loss(out, target)) == pytest.approx(0.75)
        ev = task.evaluator()
        ev.update(out, target)
        assert ev.compute()["mae"] == pytest.approx(0.75)
        assert task.saliency_logit(out, target, "label").shape == (3,)
        with pytest.raises(ValueError, match="registered twice"):
            register_task_kind(kind)
    finally:
        TASK_KINDS.pop("ordinal", None)
    with pytest.raises(ValueError, match="unknown task kind 'ordinal'"):
        TaskSpec("grade", "ordinal")


def test_a_present_label_is_what_the_kind_says_whatever_the_dtype():
    """A binary task's -1 is a missing label also when its targets are floats (the kind decides, not the dtype)."""
    binary, regression = TaskSpec("b", "binary"), TaskSpec("r", "regression")
    assert not labels_complete(binary, torch.tensor([1.0, 0.0, -1.0])) and labels_complete(
        binary, torch.tensor([1.0, 0.0])
    )
    assert labels_complete(regression, torch.tensor([-1.0, 2.0])) and not labels_complete(
        regression, torch.tensor([float("nan")])
    )
