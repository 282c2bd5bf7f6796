"""GradNorm (Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks", ICML 2018).

The network descends along sum_t w_t L_t; the weights w descend along the gradient-norm loss
L_grad = sum_t | G_t - mean(G) r_t^alpha |, with G_t = || grad_W (w_t L_t) || and r_t = (L_t / L_t(0)) divided
by its mean over tasks (the relative inverse training rate), the target treated as a constant (Eq. 1-2); after
each step w is renormalised to sum to T. W: every shared parameter (LibMTL's choice; the paper names the last
shared layer, which no architecture here marks); alpha = 1.5 (the paper's NYUv2 value); w's optimiser: Adam at
the network's learning rate unless `rule.lr` is set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtlbench.method import rule_method
from mtlbench.update_rules import LossWeighting, flat_task_gradients, learned_state, load_learned_state


def gradnorm_loss(
    weights: torch.Tensor, grad_norms: torch.Tensor, losses: torch.Tensor, initial: torch.Tensor, alpha: float
) -> torch.Tensor:
    """L_grad for weights w, the unweighted task gradients' norms ||grad_W L_t||, losses and initial losses."""
    g = weights * grad_norms
    ratio = losses / initial.clamp_min(1e-12)
    target = (g.mean() * (ratio / ratio.mean()) ** alpha).detach()
    return (g - target).abs().sum()


@rule_method("gradnorm", "GradNorm (Chen et al. 2018): weights that balance the tasks' gradient norms")
class GradNorm(LossWeighting):
    requires_shared_parameters = True

    def __init__(self, alpha: float = 1.5, lr: float | None = None):
        self.alpha, self.lr = alpha, lr

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self.weights = nn.Parameter(torch.ones(len(tasks), device=next(model.parameters()).device))
        self._optimizer = torch.optim.Adam([self.weights], lr=self.lr or self.network_lr or 1e-3)
        self._initial: torch.Tensor | None = None

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        if self._initial is None:
            self._initial = losses.detach().clone()
        norms = flat_task_gradients(losses, self.model.shared_parameters()).norm(dim=1).detach()
        objective = gradnorm_loss(self.weights, norms, losses.detach(), self._initial, self.alpha)
        self.weights.grad = torch.autograd.grad(objective, self.weights)[0]
        self.weight_log.add(self.weights)
        return (self.weights.detach() * losses).sum()

    def after_step(self) -> None:
        self._optimizer.step()
        with torch.no_grad():  # positive, summing to T
            self.weights.clamp_(min=1e-6)
            self.weights.mul_(len(self.tasks) / self.weights.sum())

    def parameters(self) -> list[nn.Parameter]:
        return [self.weights]

    def state_dict(self) -> dict[str, Any]:
        initial = None if self._initial is None else self._initial.cpu()
        return {**learned_state(self.weights, self._optimizer), "initial": initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_learned_state(self.weights, self._optimizer, state)
        self._initial = None if state["initial"] is None else state["initial"].to(self.weights.device)
