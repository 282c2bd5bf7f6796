"""The declared 'still improving' rule: a real trend at the end of the budget, not epoch-to-epoch noise."""

from __future__ import annotations

import numpy as np
import pytest

from mtlbench.convergence import MIN_FALL, assess, assess_history, convergence_table, still_improving_counts
from mtlbench.record import RunRecord


def test_a_falling_tail_is_still_improving_and_a_flat_noisy_one_is_not():
    rng = np.random.default_rng(0)
    epochs = np.arange(100)
    falling = 1.0 + np.exp(-epochs / 200) + rng.normal(0, 0.002, 100)  # still 2-5% lower every 10 epochs
    assert assess(falling).still_improving
    flat = 1.0 + rng.normal(0, 0.05, 100)  # the same level, scattered: noise, not a trend
    assert not assess(flat).still_improving


def test_a_significant_but_negligible_fall_is_not_still_improving():
    """A smooth (noise-free) tail that moves by less than MIN_FALL of its level: significant, not worth having."""
    tail = 1.0 - 1e-5 * np.arange(50)
    result = assess(tail)
    assert result.p < 0.05 and result.relative_fall < MIN_FALL and not result.still_improving


def test_window_is_a_tenth_of_the_selectable_epochs_and_at_least_five():
    assert assess(np.linspace(2, 1, 15)).window == 5
    assert assess(np.linspace(2, 1, 300)).window == 30
    assert assess(np.linspace(2, 1, 4)) is None  # too short to judge
    assert assess([1.0, np.nan, 1.0, 1.0, 1.0]) is None


def test_a_hand_worked_fit():
    """Tail 5, 4.8, 4.7, 4.4, 4.3: slope -0.18 per epoch, fall 0.72 over the window, mean 4.64."""
    result = assess([5.0, 4.8, 4.7, 4.4, 4.3])
    assert result.relative_fall == pytest.approx(0.18 * 4 / 4.64)
    assert result.still_improving


def test_only_selectable_epochs_are_judged_and_records_are_counted():
    history = [{"epoch": e, "val_loss": [1.0 + (e < 10) * 5.0, 0.5]} for e in range(20)]
    assert not assess_history(history, first_selectable=10).still_improving  # the warm-up's fall is not counted
    improving = [{"epoch": e, "val_loss": [3.0 - 0.1 * e]} for e in range(20)]
    records = [
        RunRecord.from_json({"dataset": "d", "method": "m", "seed": s, "status": "ok", "history": h})
        for s, h in enumerate([history, improving, improving])
    ]
    assert still_improving_counts(records, "d", "m") == (2, 3)
    table = convergence_table(records)
    assert table.still_improving.tolist() == [False, True, True]


def test_a_record_judged_by_another_version_of_the_rule_is_judged_again():
    from mtlbench.convergence import of_record
    from mtlbench.record import Convergence

    falling = [{"epoch": e, "val_loss": [3.0 - 0.1 * e]} for e in range(20)]
    record = RunRecord.from_json({"dataset": "d", "method": "m", "seed": 0, "status": "ok", "history": falling})
    record.convergence = Convergence(False, 5, 0.0, 1.0, rule="an older rule")
    assert of_record(record).still_improving
