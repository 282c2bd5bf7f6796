"""A regulariser is a term added to what another update rule descends: one type, composed with any rule.

`Regulariser` is the term (SRDML's saliency term in `methods/srdml.py`): computed from the shared representation,
the heads' outputs and the targets, with learnable parameters, stages (a warm-up before it acts), logs, state
and checkpoint state of its own. `RegularisedRule` composes it, once for every regulariser, with the rule named
by `rule.aggregator` and built with its own hyperparameters (`rule.aggregator_params`, checked against that
rule's signature): a rule that aggregates the task gradients of the shared parameters (a `JacobianRule`: PCGrad,
TorchJD's aggregators) gets the term's gradient added after its surgery; a rule that descends one objective
built from the task losses (`combines_losses`: MGDA, the loss weightings) gets the term added to that objective;
`sum` is the plain sum of the task losses. A second regulariser is one file: a `Regulariser` subclass and a
`RegularisedRule` subclass registered as an update rule whose constructor takes the term's hyperparameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtlbench.architectures import MTLArchitecture
from mtlbench.errors import MtlbenchError
from mtlbench.params import coerce, signature_params
from mtlbench.registry import UPDATE_RULES
from mtlbench.schedule import Stage, Stages
from mtlbench.tasks import TaskSpec
from mtlbench.update_rules import JacobianRule, MethodPart, UpdateRule, aggregated_backward, task_losses


class Regulariser(MethodPart):
    """A term added to the objective: `term` returns it for a batch (in the autograd graph), or None while it
    does not act (a warm-up stage). Its own parameters are stepped in `after_step` (after the inner rule's)."""

    def bind(self, model: MTLArchitecture, tasks: list[TaskSpec]) -> None:
        self.model, self.tasks = model, tasks

    def stages(self) -> Stages:
        """The stages of a run with this term (its warm-up before it acts); one stage by default."""
        return Stages.single()

    def on_stage(self, stage: Stage) -> None:
        """Called before each epoch with the stage it is in."""

    def term(self, rep: torch.Tensor, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor | None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None


def composable(name: str) -> type[UpdateRule]:
    """The rule class `rule.aggregator` names, when a regulariser composes with it."""
    cls = UPDATE_RULES.get(name)
    if issubclass(cls, RegularisedRule) or not (issubclass(cls, JacobianRule) or cls.combines_losses):
        raise MtlbenchError(
            f"rule.aggregator={name!r} is not a rule the regulariser composes with (one that aggregates the task "
            f"gradients or weights the task losses); use sum, pcgrad, a TorchJD aggregator (upgrad, cagrad, ...), "
            f"mgda, mgda_ub or a loss weighting (uw, dwa, rlw, gradnorm)"
        )
    return cls


def inner_rule_kwargs(name: str, cls: type[UpdateRule], params: dict[str, Any]) -> dict[str, Any]:
    """`rule.aggregator_params`, checked against the inner rule's own typed hyperparameters."""
    valid = signature_params(cls, ("tasks", "network"))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        names = ", ".join(sorted(valid)) or "(none)"
        raise MtlbenchError(
            f"rule.aggregator_params has {unknown}, which rule {name!r} does not take; its parameters: {names}"
        )
    return {k: coerce(f"rule.aggregator_params.{k}", v, valid[k].annotation) for k, v in params.items()}


class RegularisedRule(UpdateRule):
    """`regulariser`'s term added to what the rule named `aggregator` descends (see the module's docstring)."""

    requires_shared_representation = True

    def __init__(self, regulariser: Regulariser, aggregator: str = "sum", aggregator_params: dict | None = None):
        self.regulariser = regulariser
        self.aggregator, self.aggregator_params = aggregator, aggregator_params
        self.inner: UpdateRule | None = None  # built in `bind`; None: the plain sum of the task losses

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self.inner = self._build_inner(model, tasks)
        self.regulariser.bind(model, tasks)

    def _build_inner(self, model: MTLArchitecture, tasks: list[TaskSpec]) -> UpdateRule | None:
        params = dict(self.aggregator_params or {})
        if self.aggregator == "sum":
            if params:
                raise MtlbenchError("rule.aggregator_params is set but rule.aggregator=sum takes no parameters")
            return None
        cls = composable(self.aggregator)
        if issubclass(cls, JacobianRule) and not model.shared_parameters():
            raise MtlbenchError(
                f"rule.aggregator={self.aggregator} needs shared parameters (a trunk with weights, e.g. "
                f"dataset.trunk=linear on synthetic_relations)"
            )
        inner = cls(**inner_rule_kwargs(self.aggregator, cls, params))
        inner.network_lr = self.network_lr  # rules with weights of their own step them at train.lr
        inner.bind(model, tasks)
        return inner

    def _parts(self) -> list[Any]:
        """The inner rule (when there is one) and the regulariser, in the order their hooks run."""
        return [p for p in (self.inner, self.regulariser) if p is not None]

    def parameters(self) -> list[nn.Parameter]:
        return [*self.regulariser.parameters(), *(self.inner.parameters() if self.inner is not None else [])]

    def plan(self, epochs: int) -> int:
        if self.inner is not None:
            self.inner.plan(epochs)
        return super().plan(epochs)

    def stages(self) -> Stages:
        return self.regulariser.stages()

    def on_epoch_start(self, epoch: int) -> bool:
        self.regulariser.on_stage(self.staging.stage_at(epoch).stage)
        return self.inner.on_epoch_start(epoch) if self.inner is not None else False

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        self.regulariser.zero_grad()
        rep = self.model.encode(x)
        if not rep.requires_grad:  # a frozen or parameter-free trunk: still differentiate w.r.t. A
            rep = rep.detach().requires_grad_(True)
        outputs = self.model.decode(rep)
        losses = task_losses(outputs, targets, self.tasks)
        term = self.regulariser.term(rep, outputs, targets)
        if isinstance(self.inner, JacobianRule):
            aggregated_backward(self.model, losses, self.inner.aggregate)
            if term is not None:
                term.backward()  # the term's gradient is added after the surgery
        else:
            objective = losses.sum() if self.inner is None else self.inner.objective(losses, rep)
            (objective + (term if term is not None else 0.0)).backward()
        return losses.detach()

    def after_step(self) -> None:
        for part in self._parts():
            part.after_step()

    def epoch_log(self) -> dict[str, float]:
        return {k: v for part in self._parts() for k, v in part.epoch_log().items()}

    def method_state(self) -> dict[str, Any]:
        return {k: v for part in self._parts() for k, v in part.method_state().items()}

    def state_dict(self) -> dict[str, Any]:
        inner = self.inner.state_dict() if self.inner is not None else {}
        return {"regulariser": self.regulariser.state_dict(), "aggregator": inner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.regulariser.load_state_dict(state["regulariser"])
        if self.inner is not None:
            self.inner.load_state_dict(state.get("aggregator") or {})
