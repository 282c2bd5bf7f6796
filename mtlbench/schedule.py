"""A staged method's stages as data: warm-up, two-stage training, search then retrain, tuning then training.

A staged update rule declares its stages (`UpdateRule.stages`) as shares of the budget `train.epochs`; this
module turns them into epochs once per run (`Stages.plan`) and answers, for every method alike, what the
training loop, the selection of the reported epoch and the run record need: how many epochs run in all, the
first epoch that may be selected (the method's own mechanism is active), where the network's optimiser
starts afresh, and which stage (and round of it) an epoch belongs to. What a stage *does* (freeze the public
encoder, derive an architecture, score a candidate) stays with the rule, which asks `stage_at(epoch)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtlbench.errors import MtlbenchError


def stage_epochs(key: str, fraction: float, epochs: int, *, minimum: int = 0, leave: int = 1) -> int:
    """Epochs of a stage given as `fraction` of the budget `epochs` (rounded half up). A stage inside the
    budget (`leave` >= 1) keeps `leave` epochs for the stages after it, shrinking if it must; one that cannot
    keep its `minimum` ends in one message naming the key and the budget it needs."""
    if fraction < 0 or (leave > 0 and fraction >= 1):
        bound = "in [0, 1)" if leave > 0 else ">= 0"
        raise MtlbenchError(f"{key} must be {bound} (a share of train.epochs), got {fraction}")
    n = math.floor(fraction * epochs + 0.5)
    if leave > 0:
        n = min(n, epochs - leave)
    n = max(n, minimum if fraction > 0 else 0)
    if leave > 0 and n > epochs - leave:
        raise MtlbenchError(
            f"train.epochs={epochs} is too short for the stages: {key}={fraction} needs {minimum} epoch(s) "
            f"and the stages after it {leave}; use train.epochs >= {minimum + leave}"
        )
    return n


@dataclass(frozen=True)
class Stage:
    """One stage. With a `key` it lasts `fraction` of the budget (the `rule.*` key that sets it, at least
    `minimum` epochs); without one it is the rest of the budget. An `extra` stage runs on top of the budget
    (a cost the method pays beyond what every method gets) and may run `rounds` times in a row (one round per
    tuning candidate). `selectable`: the method's own mechanism is active, so its epochs may be reported;
    `fresh_optimizer`: the network's optimiser starts afresh where each round of the stage begins;
    `holdout`: the stage uses a hold-out carved from the training split (`UpdateRule.prepare`: a search, a
    tuning round, gates learned on held-out data), so its epochs train on the part left after the carve; every
    other stage, the one producing the reported model included, trains on the whole training split;
    `batch_size`: the stage's own batch size (SRDML's official warm-up script trains at 100, its regularised
    stage at 200); None: the run's `train.batch_size`."""

    name: str
    key: str | None = None
    fraction: float = 0.0
    minimum: int = 0
    extra: bool = False
    rounds: int = 1
    selectable: bool = False
    fresh_optimizer: bool = False
    holdout: bool = False
    batch_size: int | None = None


@dataclass(frozen=True)
class StageAt:
    """Where an epoch lies: its stage, the round of that stage, and whether the round begins there."""

    stage: Stage
    round: int
    begins: bool


class Stages:
    """A method's stages in order, planned against a budget by `plan` (before that, no epochs are known)."""

    def __init__(self, *stages: Stage):
        if not stages or sum(s.key is None for s in stages) != 1 or stages[-1].key is not None or stages[-1].extra:
            raise ValueError("a schedule ends with its one stage that is the rest of the budget (no key, not extra)")
        if any(s.rounds != 1 and not s.extra for s in stages) or any(s.rounds < 1 for s in stages):
            raise ValueError("only an extra stage (on top of the budget) runs in rounds, at least one")
        self.stages = stages
        self.epochs: list[int] = []  # per stage, every round included (after `plan`)

    @classmethod
    def single(cls, name: str = "train", holdout: bool = False) -> Stages:
        """The schedule of an unstaged method: the whole budget, every epoch selectable."""
        return cls(Stage(name, selectable=True, holdout=holdout))

    def plan(self, budget: int) -> int:
        """Epochs per stage for the budget `train.epochs`; returns how many epochs the loop runs in all (the
        budget, plus the extra stages). A budget too short for a stage ends in one message naming its key."""
        inside = {
            s.name: stage_epochs(s.key, s.fraction, budget, minimum=s.minimum)
            for s in self.stages
            if s.key is not None and not s.extra
        }
        rest = budget - sum(inside.values())
        if rest < 1:
            keys = ", ".join(f"{s.key}={s.fraction}" for s in self.stages if s.name in inside)
            raise MtlbenchError(
                f"train.epochs={budget} is too short for the stages ({keys}): no epoch is left after them"
            )
        epochs = []
        for stage in self.stages:
            if stage.key is None:
                n = rest
            elif stage.extra:
                if stage.fraction <= 0 and stage.minimum > 0:
                    raise MtlbenchError(
                        f"{stage.key} must be > 0 (the stage '{stage.name}' is part of the method), "
                        f"got {stage.fraction}"
                    )
                n = stage.rounds * stage_epochs(stage.key, stage.fraction, budget, minimum=stage.minimum, leave=0)
            else:
                n = inside[stage.name]
            epochs.append(n)
        self.epochs = epochs
        return sum(epochs)

    def _planned(self) -> list[int]:
        if not self.epochs:
            raise RuntimeError("the schedule has not been planned (Stages.plan) yet")
        return self.epochs

    def stage_at(self, epoch: int) -> StageAt:
        """The stage, round and round start of `epoch` (0-based; an epoch past the end is in the last stage)."""
        start = 0
        for stage, n in zip(self.stages, self._planned(), strict=True):
            if epoch < start + n:
                per_round = n // stage.rounds
                offset = epoch - start
                return StageAt(stage, offset // per_round, offset % per_round == 0)
            start += n
        return StageAt(self.stages[-1], 0, False)

    def restarts_at(self, epoch: int) -> bool:
        """Whether the network's optimiser starts afresh before `epoch` (never before the first)."""
        at = self.stage_at(epoch)
        return epoch > 0 and at.begins and at.stage.fresh_optimizer

    def first_selectable(self) -> int:
        """The first epoch that may be reported: after every stage before the method's mechanism is active."""
        start = 0
        for stage, n in zip(self.stages, self._planned(), strict=True):
            if stage.selectable and n > 0:
                return start
            start += n
        return start

    def before_mechanism(self) -> dict[str, int]:
        """The `rule.*` keys of the stages before the first selectable epoch, with their planned epochs."""
        first, start, out = self.first_selectable(), 0, {}
        for stage, n in zip(self.stages, self._planned(), strict=True):
            if start < first and stage.key is not None and n > 0:
                out[stage.key] = n
            start += n
        return out

    def summary(self) -> dict[str, int]:
        """The stages in order with their epochs: the run record's `schedule.stages`."""
        return {stage.name: n for stage, n in zip(self.stages, self._planned(), strict=True)}
