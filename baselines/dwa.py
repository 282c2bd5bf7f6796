"""Dynamic weight average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
Eq. 7): w_t(k) = T exp(r_t(k-1) / tau) / sum_i exp(r_i(k-1) / tau), with r_t(k-1) = L_t(k-1) / L_t(k-2)
the ratio of task t's mean training loss over the last two epochs; w = 1 in the first two epochs; tau = 2.
"""

from __future__ import annotations

from typing import Any

import torch

from mtlbench.method import rule_method
from mtlbench.update_rules import LossWeighting


def dwa_weights(history: list[torch.Tensor], temperature: float, t: int) -> torch.Tensor:
    """The weights of the next epoch from the mean training losses of the epochs so far."""
    if len(history) < 2:
        return torch.ones(t)
    ratio = history[-1] / history[-2].clamp_min(1e-12)
    return t * torch.softmax(ratio / temperature, dim=0)


@rule_method("dwa", "Dynamic weight average (Liu et al. 2019): weights from the tasks' loss descent rates")
class DynamicWeightAverage(LossWeighting):
    def __init__(self, temperature: float = 2.0):
        self.temperature = temperature

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self._history: list[torch.Tensor] = []
        self._epoch_sum, self._batches = torch.zeros(len(tasks)), 0
        self._weights = torch.ones(len(tasks))

    def on_epoch_start(self, epoch: int) -> bool:
        if self._batches:
            self._history.append(self._epoch_sum / self._batches)
        self._epoch_sum, self._batches = torch.zeros(len(self.tasks)), 0
        self._weights = dwa_weights(self._history, self.temperature, len(self.tasks))
        return super().on_epoch_start(epoch)

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        self._epoch_sum += losses.detach().float().cpu()
        self._batches += 1
        self.weight_log.add(self._weights)
        return (self._weights.to(losses.device, losses.dtype) * losses).sum()

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [h.clone() for h in self._history],
            "epoch_sum": self._epoch_sum.clone(),
            "batches": self._batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._history = [h.clone() for h in state["history"]]
        self._epoch_sum, self._batches = state["epoch_sum"].clone(), int(state["batches"])
