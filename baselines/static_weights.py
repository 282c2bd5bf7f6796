"""Tuned static loss weights: the baseline that re-runs of many MTL methods over many seeds found hard to beat
(Kurin et al., "In Defense of the Unitary Scalarization for Deep Multi-Task Learning", NeurIPS 2022; Xin et
al., "Do Current Multi-Task Optimization Methods in Deep Learning Even Help?", NeurIPS 2022).

The tuning is part of the method and of its cost, stated as a budget: `candidates` weight vectors (equal
weights first, then draws from a symmetric Dirichlet scaled to sum T, from a fixed generator so every seed
tunes over the same candidates; or an explicit `grid`) are each trained from the same initialisation for
`tuning_fraction` of the budget, on the training split minus a held-out part; each is scored on the held-out
part by its mean relative loss (task loss / equal weights' task loss, averaged over tasks, so no task's scale
dominates); the best is then trained for the full budget `train.epochs` that every method gets. The tuning
epochs come on top of the budget (counted in the record's training time, as DSMTL-AL's search) and are never
selected. `method_state`: the chosen weights, every candidate and its score.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from mtlbench.data import iterate_batches
from mtlbench.errors import MtlbenchError
from mtlbench.holdout import split_holdout
from mtlbench.method import rule_method
from mtlbench.schedule import Stage, Stages
from mtlbench.update_rules import LossWeighting, task_losses

CANDIDATE_SEED = 20221128  # one fixed set of candidates for every training seed


def candidate_weights(
    t: int, candidates: int, concentration: float, grid: list[list[float]] | None = None
) -> torch.Tensor:
    """(K, T) weight vectors summing to T: `grid` as given (rescaled), else equal weights then draws from a
    symmetric Dirichlet with a fixed generator (the same candidates for every training seed)."""
    if grid is not None:
        rows = torch.tensor(grid, dtype=torch.float32)
        if rows.dim() != 2 or rows.shape[1] != t or bool((rows < 0).any()) or bool((rows.sum(1) <= 0).any()):
            raise MtlbenchError(f"rule.grid must be a list of non-negative weight vectors of {t} entries each")
        return t * rows / rows.sum(1, keepdim=True)
    if candidates < 1:
        raise MtlbenchError(f"rule.candidates must be >= 1, got {candidates}")
    draws = np.random.default_rng(CANDIDATE_SEED + t).dirichlet([concentration] * t, size=candidates - 1)
    return torch.cat([torch.ones(1, t), t * torch.tensor(draws, dtype=torch.float32)])


@rule_method("static_weights", "Tuned static weights: per-task loss weights chosen on held-out data")
class TunedStaticWeights(LossWeighting):
    combines_losses = False  # its stages restart the network: nothing to add a regulariser to

    def __init__(
        self,
        candidates: int = 6,
        tuning_fraction: float = 0.2,
        holdout_fraction: float = 0.2,
        concentration: float = 1.0,
        grid: list[list[float]] | None = None,
    ):
        self.candidates, self.tuning_fraction = candidates, tuning_fraction
        self.holdout_fraction, self.concentration, self.grid = holdout_fraction, concentration, grid

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self._candidates = candidate_weights(len(tasks), self.candidates, self.concentration, self.grid)
        self._initial = copy.deepcopy(model.state_dict())
        self._scores: list[list[float]] = []  # each candidate's held-out task losses
        self._current = 0
        self._chosen: int | None = None

    def prepare(self, train: Any) -> Any:
        train, self._holdout = split_holdout(train, self.holdout_fraction)
        return train

    def stages(self) -> Stages:
        # each candidate trains from the network's initialisation for a share of the budget (an extra cost on
        # top of it), then the chosen weights train for the whole budget, again from the initialisation
        rounds = len(self.grid) if self.grid else self.candidates
        return Stages(
            Stage(
                f"tuning ({rounds} candidates, one round each; extra cost)",
                "rule.tuning_fraction",
                self.tuning_fraction,
                minimum=1,
                extra=True,
                rounds=rounds,
                fresh_optimizer=True,
                holdout=True,
            ),
            Stage("train the chosen weights", selectable=True, fresh_optimizer=True),  # on the whole split
        )

    def _held_out_losses(self) -> list[float]:
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        total, n = torch.zeros(len(self.tasks)), 0
        with torch.no_grad():
            for x, targets in iterate_batches(self._holdout, 256, False, None, device):
                total += task_losses(self.model(x), targets, self.tasks).cpu() * len(x)
                n += len(x)
        self.model.train(was_training)
        return (total / max(n, 1)).tolist()

    def scores(self) -> list[float]:
        """Each tuned candidate's mean relative held-out loss (equal weights = 1)."""
        reference = torch.tensor(self._scores[0]).clamp_min(1e-12)
        return [float((torch.tensor(s) / reference).mean()) for s in self._scores]

    def on_epoch_start(self, epoch: int) -> bool:
        super().on_epoch_start(epoch)
        at = self.staging.stage_at(epoch)
        if not at.begins or self._chosen is not None:
            return False
        if epoch > 0:  # the candidate just trained is scored, then the network starts again from its init
            self._scores.append(self._held_out_losses())
        if at.stage.selectable:
            self._chosen = int(torch.tensor(self.scores()).argmin())
        else:
            self._current = at.round
        self.model.load_state_dict(self._initial)
        return False  # the schedule starts a fresh optimiser for every candidate and for the final training

    def weights(self) -> torch.Tensor:
        return self._candidates[self._chosen if self._chosen is not None else self._current]

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        weights = self.weights()
        self.weight_log.add(weights)
        return (weights.to(losses.device, losses.dtype) * losses).sum()

    def method_state(self) -> dict[str, Any]:
        names = [t.name for t in self.tasks]
        out: dict[str, Any] = {
            "tuning": {
                "candidates": [
                    dict(zip(names, c.tolist(), strict=True)) for c in self._candidates[: len(self._scores)]
                ],
                "scores": self.scores() if self._scores else [],
            }
        }
        if self._chosen is not None:
            out["task_weights"] = dict(zip(names, self._candidates[self._chosen].tolist(), strict=True))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self._scores, "current": self._current, "chosen": self._chosen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._scores = [list(map(float, s)) for s in state["scores"]]
        self._current, self._chosen = int(state["current"]), state["chosen"]
