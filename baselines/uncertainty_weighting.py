"""Uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for
Scene Geometry and Semantics", CVPR 2018).

Each task t has a learned log-variance s_t; the network descends along sum_t exp(-s_t) L_t + s_t (the form of
LibMTL and most re-implementations, which drops the paper's factor 1/2 for regression), and s is learned
jointly: d/ds_t = 1 - exp(-s_t) L_t, so exp(-s_t) tends to 1 / L_t. s starts at 0 (equal weights) and is
stepped by Adam at the network's learning rate unless `rule.lr` is set. task_weights: exp(-s_t).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtlbench.method import rule_method
from mtlbench.update_rules import LossWeighting, learned_state, load_learned_state


@rule_method("uw", "Uncertainty weighting (Kendall et al. 2018): learned per-task log-variances")
class UncertaintyWeighting(LossWeighting):
    def __init__(self, lr: float | None = None):
        self.lr = lr

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks), device=next(model.parameters()).device))
        self._optimizer = torch.optim.Adam([self.log_vars], lr=self.lr or self.network_lr or 1e-3)

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        self.log_vars.grad = None
        precision = torch.exp(-self.log_vars)
        self.weight_log.add(precision)
        return (precision * losses + self.log_vars).sum()

    def after_step(self) -> None:
        self._optimizer.step()

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def state_dict(self) -> dict[str, Any]:
        return learned_state(self.log_vars, self._optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_learned_state(self.log_vars, self._optimizer, state)
