"""FAMO: fast adaptive multitask optimisation (Liu et al., NeurIPS 2023).

Logits xi give task weights z = softmax(xi). The network descends along sum_t (z_t / c) log(L_t - b_t + eps),
c = sum_t z_t / (L_t - b_t + eps) (so task t's gradient is scaled by z_t / (c (L_t - b_t + eps))); after the
step, the losses L' on the same batch under the updated network give each task's log-loss decrease
delta_t = log(L_t - b_t + eps) - log(L'_t - b_t + eps), and xi descends along J_softmax(xi)^T delta with Adam
(lr `w_lr` 0.025, weight decay `gamma` 0.001: the official defaults), which raises the weight of tasks that
improved least. b: the tasks' minimal losses (0 for the losses here).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtlbench.method import rule_method
from mtlbench.update_rules import LossWeighting, learned_state, load_learned_state, task_losses

EPS = 1e-8


def famo_loss(logits: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's objective and the effective weights z_t / (c (L_t + eps)) on each task's gradient."""
    z = torch.softmax(logits.detach(), dim=0)
    shifted = losses + EPS
    c = (z / shifted.detach()).sum()
    return (torch.log(shifted) * z / c).sum(), (z / (c * shifted.detach()))


def famo_logit_gradient(logits: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """J_softmax(xi)^T delta, delta the tasks' log-loss decrease over the step."""
    delta = torch.log(before + EPS) - torch.log(after + EPS)
    xi = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(torch.softmax(xi, dim=0), xi, grad_outputs=delta)[0]


@rule_method("famo", "FAMO (Liu et al. 2023): weights from the tasks' log-loss decrease, one extra forward")
class FAMO(LossWeighting):
    combines_losses = False  # its weights need a second forward pass on the batch (after_step)

    def __init__(self, w_lr: float = 0.025, gamma: float = 0.001):
        self.w_lr, self.gamma = w_lr, gamma

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self.logits = nn.Parameter(torch.zeros(len(tasks), device=next(model.parameters()).device))
        self._optimizer = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self._batch: tuple[torch.Tensor, list[torch.Tensor], torch.Tensor] | None = None

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = super().backward(x, targets)
        self._batch = (x, targets, losses)
        return losses

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        objective, weights = famo_loss(self.logits, losses)
        self.weight_log.add(weights)
        return objective

    def after_step(self) -> None:
        assert self._batch is not None, "after_step follows a backward"
        x, targets, before = self._batch
        with torch.no_grad():
            after = task_losses(self.model(x), targets, self.tasks)
        self.logits.grad = famo_logit_gradient(self.logits, before, after)
        self._optimizer.step()
        self._batch = None

    def parameters(self) -> list[nn.Parameter]:
        return [self.logits]

    def state_dict(self) -> dict[str, Any]:
        return learned_state(self.logits, self._optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_learned_state(self.logits, self._optimizer, state)
