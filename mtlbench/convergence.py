"""Was a run still improving at the end of its budget? One declared rule, applied to every run alike.

The rule: over the last tenth of the epochs a method's own mechanism was active (at least WINDOW_MIN epochs),
fit a straight line to the summed validation loss (the default selection score, `train.selection=loss`). The
run is *still improving* when
the fitted fall over that window is both

- real: the slope is below zero by a one-sided t-test at ALPHA against the scatter of the epochs around the
  line (the loss's own epoch-to-epoch noise), and
- not negligible: the fitted fall over the window is at least MIN_FALL (0.1%) of the window's mean loss (a
  smooth full-batch curve falls "significantly" by any amount, however small).

A flat tail with noise, or a smooth tail that moves by less than 0.1%, is not still improving. Runs that
did not finish, or with fewer than WINDOW_MIN selectable epochs, cannot be judged (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from mtlbench.record import Convergence, RunRecord

WINDOW_FRACTION = 0.1
WINDOW_MIN = 5
ALPHA = 0.05
MIN_FALL = 0.001  # 0.1% of the loss over a tenth of the budget: under about 1% over the whole budget
RULE = (
    f"summed validation loss over the last {WINDOW_FRACTION:.0%} of the selectable epochs (at least {WINDOW_MIN}): "
    f"fitted slope < 0 at one-sided p < {ALPHA} and fitted fall >= {MIN_FALL:.1%} of its mean"
)


def assess(val_losses: Sequence[float]) -> Convergence | None:
    """The rule on the selectable epochs' summed validation losses, in epoch order."""
    losses = np.asarray(val_losses, float)
    window = max(WINDOW_MIN, math.ceil(WINDOW_FRACTION * len(losses)))
    if len(losses) < window or not np.isfinite(losses).all():
        return None
    tail = losses[-window:]
    fit = st.linregress(np.arange(window, dtype=float), tail, alternative="less")
    fall = float(-fit.slope * (window - 1) / abs(tail.mean())) if tail.mean() else 0.0
    p = float(fit.pvalue) if np.isfinite(fit.pvalue) else (0.0 if fit.slope < 0 else 1.0)
    return Convergence(
        still_improving=bool(p < ALPHA and fall >= MIN_FALL), window=window, relative_fall=fall, p=p, rule=RULE
    )


def assess_history(history: Sequence[Any], first_selectable: int) -> Convergence | None:
    return assess([sum(e["val_loss"]) for e in history if e["epoch"] >= first_selectable])


def of_record(record: RunRecord) -> Convergence | None:
    """The record's own assessment when it was made by this rule; else (a record written before the rule, or
    under another version of it) the rule on its history."""
    if record.convergence is not None and record.convergence.rule == RULE:
        return record.convergence
    if not record.ok:
        return None
    first = record.schedule.first_selectable_epoch if record.schedule is not None else 0
    return assess_history(record.history, first)


def still_improving_counts(records: Sequence[RunRecord], dataset: str, method: str) -> tuple[int, int]:
    """(runs still improving, runs judged) of a method on a dataset."""
    assessed = [of_record(r) for r in records if r.dataset == dataset and r.method == method and r.ok]
    judged = [c for c in assessed if c is not None]
    return sum(c.still_improving for c in judged), len(judged)


def convergence_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Per run: the selected epoch, the epochs planned, and the rule's verdict with its numbers."""
    rows = []
    for r in records:
        c = of_record(r)
        rows.append(
            {
                "dataset": r.dataset,
                "method": r.method,
                "seed": r.seed,
                "status": r.status,
                "selected_epoch": r.selected_epoch,
                "epochs_planned": r.epochs_planned,
                "still_improving": None if c is None else c.still_improving,
                "relative_fall": None if c is None else c.relative_fall,
                "p": None if c is None else c.p,
                "window": None if c is None else c.window,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = [
    "dataset",
    "method",
    "seed",
    "status",
    "selected_epoch",
    "epochs_planned",
    "still_improving",
    "relative_fall",
    "p",
    "window",
]
