"""How per-task losses become one parameter update: the update-rule half of a method.

The training loop calls `backward` once per mini-batch: it computes the per-task losses, leaves gradients
in `.grad` of the model's parameters and returns the losses (detached). Rules that learn parameters of their
own (SRDML's relation weights) update them in `after_step`. A rule checks in `bind` that the architecture
offers what it needs and refuses a combination that makes no sense with one clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from mtlbench.architectures import MTLArchitecture
from mtlbench.errors import MtlbenchError
from mtlbench.registry import UPDATE_RULES
from mtlbench.schedule import Stages
from mtlbench.tasks import TaskSpec


def task_losses(outputs: list[torch.Tensor], targets: list[torch.Tensor], tasks: list[TaskSpec]) -> torch.Tensor:
    """(T,) tensor of the tasks' mean losses on the batch."""
    return torch.stack([t.loss(o, y) for t, o, y in zip(tasks, outputs, targets, strict=True)])


def flat_task_gradients(losses: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """(T, D): each task's loss gradient w.r.t. `params`, flattened (one backward pass per task)."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)]
            )
        )
    return torch.stack(rows)


def assign_flat_gradient(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flattened gradient into `.grad` (adding to what is there)."""
    offset = 0
    for p in params:
        piece = flat[offset : offset + p.numel()].view(p.shape)
        if p.grad is None:  # in the parameter's own layout (channels_last conv weights stay channels_last)
            p.grad = torch.empty_like(p).copy_(piece)
        else:
            p.grad = p.grad + piece
        offset += p.numel()


AGGREGATOR_FAILURES = (ValueError, RuntimeError, ArithmeticError)  # solver failures, singular systems


def guarded_direction(aggregate: Callable[[torch.Tensor], torch.Tensor], jacobian: torch.Tensor) -> torch.Tensor:
    """`aggregate` of a (T, D) Jacobian, with its degenerate cases decided once for every rule: a non-finite
    Jacobian gives a NaN direction (the training loop then ends the run `diverged`, as for any non-finite loss);
    rows whose squared norm underflows the dtype count as the zero gradient they numerically are; an all-zero
    Jacobian gives the zero direction; one task gives its own gradient; an aggregator whose solver fails on a
    finite Jacobian gives a NaN direction (diverged), never a traceback that would stop a pipeline."""
    nan = torch.full_like(jacobian[0], float("nan"))
    negligible = jacobian.norm(dim=1) < torch.finfo(jacobian.dtype).tiny ** 0.5
    screened = torch.where(negligible[:, None], torch.zeros_like(jacobian), jacobian)
    # the one read of the step: which case the Jacobian is in decides whether the aggregator is called
    finite, nonzero = torch.stack([torch.isfinite(jacobian).all(), screened.any()]).tolist()
    if not finite:
        return nan
    jacobian = screened
    if not nonzero:
        return torch.zeros_like(jacobian[0])
    if len(jacobian) == 1:
        return jacobian[0]
    try:
        return aggregate(jacobian)
    except AGGREGATOR_FAILURES:
        return nan


def aggregated_backward(
    model: MTLArchitecture, losses: torch.Tensor, aggregate: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """The shared parameters descend along `aggregate` of the task losses' (T, D) Jacobian w.r.t. them; every
    other parameter (each task's own head) gets its plain loss gradient. Gradients add to what `.grad` holds."""
    shared = model.shared_parameters()
    shared_ids = {id(p) for p in shared}
    private = [p for p in model.parameters() if p.requires_grad and id(p) not in shared_ids]
    update = guarded_direction(aggregate, flat_task_gradients(losses, shared))
    private_grads = torch.autograd.grad(losses.sum(), private, retain_graph=True, allow_unused=True)
    for p, g in zip(private, private_grads, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    assign_flat_gradient(shared, update)


class MethodPart:
    """What the training loop asks of a part of a method (an update rule, a regulariser) beyond its step: its
    own learnable parameters, a hook after the optimiser's step, per-epoch logs, its state for the record and
    for the checkpoint. Nothing, by default."""

    def parameters(self) -> list[nn.Parameter]:
        """The part's own learnable parameters (counted in the run record's parameter total)."""
        return []

    def after_step(self) -> None:
        """Called after the optimiser's step of the network's parameters."""

    def epoch_log(self) -> dict[str, float]:
        """Scalars logged to MLflow after each epoch."""
        return {}

    def method_state(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class UpdateRule(MethodPart):
    requires_shared_parameters: ClassVar[bool] = False
    requires_shared_representation: ClassVar[bool] = False
    #: the rule descends one scalar built from the task losses and the shared representation (`objective`),
    #: so a regulariser (SRDML's) composes with it by adding its own term
    combines_losses: ClassVar[bool] = False
    name: ClassVar[str] = "update rule"
    #: the network optimiser's learning rate (`train.lr`), set by the training loop's `build` for rules whose
    #: inner steps follow it (DSMTL-JL's unrolled step)
    network_lr: float = 0.0
    #: the planned stages (`plan`); read by the training loop, the selection of the reported epoch and the record
    staging: Stages

    def bind(self, model: MTLArchitecture, tasks: list[TaskSpec]) -> None:
        arch = type(model).__name__
        if self.requires_shared_representation and not model.has_shared_representation:
            raise MtlbenchError(
                f"update rule {self.name!r} needs one shared representation feeding every head, "
                f"which architecture {arch} does not have; use it with hard sharing (arch.name=hps)"
            )
        if self.requires_shared_parameters and not model.shared_parameters():
            raise MtlbenchError(
                f"update rule {self.name!r} combines task gradients of shared parameters, "
                f"and architecture {arch} shares none; use it with an architecture that has a shared trunk"
            )
        self.model, self.tasks = model, tasks

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def objective(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        """Rules that `combines_losses`: the scalar they descend for the batch's (T,) task losses, given the
        shared representation `rep` the losses were computed from (still in the autograd graph)."""
        raise NotImplementedError(f"update rule {self.name!r} does not combine the task losses into one objective")

    def prepare(self, train: Any) -> Any:
        """Called once before training with the training split; returns what is left of it after a hold-out
        is carved. Rules that learn something on held-out data (gates searched on validation, tuned weights)
        carve it here; only their stages declared `holdout` train on that remainder, every other stage (the one
        producing the reported model) on the whole training split."""
        return train

    def on_epoch_start(self, epoch: int) -> bool:
        """Called before each training epoch (0-based): a staged rule acts on the stage it is in here
        (`self.staging.stage_at(epoch)`). Returns True when the network was re-initialised outside the
        schedule's stage starts, so the loop starts a fresh optimiser."""
        return False

    def stages(self) -> Stages:
        """The method's stages as data (`mtlbench.schedule`): warm-up, search, tuning rounds, each a share of
        the budget, with what the loop needs to know of it (selectable, extra cost, fresh optimiser). An
        unstaged method is one stage: the whole budget."""
        return Stages.single()

    def plan(self, epochs: int) -> int:
        """Called once before training with the budget `train.epochs`: plans the stages (`self.staging`) and
        returns how many epochs the loop runs in all (more than the budget for an extra-cost stage)."""
        self.staging = self.stages()
        return self.staging.plan(epochs)

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k not in ("model", "tasks")
        )
        return f"{type(self).__name__}({args})"


class TaskWeightLog:
    """The task weights a rule used, averaged over the current epoch: `method_state.task_weights`."""

    def __init__(self, tasks: list[TaskSpec]):
        self.names = [t.name for t in tasks]
        self.total: torch.Tensor | None = None  # on the weights' device: no copy to the host per step
        self.steps = 0

    def add(self, weights: torch.Tensor) -> None:
        w = weights.detach().float()
        self.total = w.clone() if self.total is None else self.total + w
        self.steps += 1

    def reset(self) -> None:
        self.total, self.steps = None, 0

    def state(self) -> dict[str, Any]:
        if self.total is None:
            return {}
        return {"task_weights": dict(zip(self.names, (self.total / self.steps).cpu().tolist(), strict=True))}


def learned_state(param: nn.Parameter, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A rule's own learned tensor and its optimiser, for the checkpoint (`load_learned_state` restores them)."""
    return {"param": param.detach().cpu(), "optimizer": optimizer.state_dict()}


def load_learned_state(param: nn.Parameter, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    with torch.no_grad():
        param.copy_(state["param"].to(param.device))
    optimizer.load_state_dict(state["optimizer"])


class LossWeighting(UpdateRule):
    """A rule that descends along a weighted combination of the task losses (`weighted_loss`): uncertainty
    weighting, DWA, RLW, GradNorm, FAMO. The weights it used go to `self.weight_log` (the run record's
    `method_state.task_weights`); rules with weights of their own step them in `after_step`."""

    combines_losses = True

    def bind(self, model: MTLArchitecture, tasks: list[TaskSpec]) -> None:
        super().bind(model, tasks)
        self.weight_log = TaskWeightLog(tasks)

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar to differentiate, from the (T,) task losses of the batch."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        return self.weighted_loss(losses)

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = task_losses(self.model(x), targets, self.tasks)
        self.weighted_loss(losses).backward()
        return losses.detach()

    def on_epoch_start(self, epoch: int) -> bool:
        self.weight_log.reset()
        return False

    def method_state(self) -> dict[str, Any]:
        return self.weight_log.state()


class JacobianRule(UpdateRule):
    """A rule that turns the (T, D) Jacobian of the task losses w.r.t. the shared parameters into one update
    direction (`aggregate`): PCGrad, TorchJD's aggregators. Task-specific parameters get their own gradients.
    SRDML's regulariser composes with any of them (`rule.aggregator`)."""

    requires_shared_parameters = True

    def aggregate(self, jacobian: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = task_losses(self.model(x), targets, self.tasks)
        aggregated_backward(self.model, losses, self.aggregate)
        return losses.detach()


UPDATE_RULES.accepts(lambda obj: isinstance(obj, type) and issubclass(obj, UpdateRule), "an UpdateRule subclass")


@UPDATE_RULES.register("equal_weights", "Sum of the task losses with fixed weights (unitary scalarisation)")
class EqualWeights(UpdateRule):
    name = "equal_weights"
    combines_losses = True

    def __init__(self, weights: list[float] | None = None):
        self.weights = weights

    def bind(self, model: MTLArchitecture, tasks: list[TaskSpec]) -> None:
        super().bind(model, tasks)
        if self.weights is not None and len(self.weights) != len(tasks):
            raise MtlbenchError(f"rule.weights has {len(self.weights)} entries but the dataset has {len(tasks)} tasks")

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return losses.sum()
        return (losses * torch.tensor(self.weights, dtype=losses.dtype, device=losses.device)).sum()

    def objective(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        return self.combine(losses)

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = task_losses(self.model(x), targets, self.tasks)
        self.combine(losses).backward()
        return losses.detach()
