"""Stages as data: the epochs, rounds, selectable epochs and optimiser restarts a schedule plans, by hand."""

from __future__ import annotations

import pytest

from mtlbench.errors import MtlbenchError
from mtlbench.schedule import Stage, Stages

TUNE = Stage("tune", "rule.tune", 0.2, minimum=1, extra=True, rounds=3, fresh_optimizer=True)
WARM = Stage("warm", "rule.warm", 0.3)


def test_an_extra_stage_with_rounds_comes_on_top_of_the_budget():
    stages = Stages(TUNE, Stage("main", selectable=True, fresh_optimizer=True))
    assert stages.plan(10) == 3 * 2 + 10  # three rounds of 0.2 x 10 epochs, then the whole budget
    assert stages.summary() == {"tune": 6, "main": 10}
    rounds = [(stages.stage_at(e).stage.name, stages.stage_at(e).round, stages.stage_at(e).begins) for e in range(8)]
    assert rounds == [
        ("tune", 0, True),
        ("tune", 0, False),
        ("tune", 1, True),
        ("tune", 1, False),
        ("tune", 2, True),
        ("tune", 2, False),
        ("main", 0, True),
        ("main", 0, False),
    ]
    assert [e for e in range(16) if stages.restarts_at(e)] == [2, 4, 6]  # never before the first epoch
    assert stages.first_selectable() == 6 and stages.before_mechanism() == {"rule.tune": 6}


def test_a_stage_inside_the_budget_shares_it_with_the_rest():
    stages = Stages(WARM, Stage("main", selectable=True))
    assert stages.plan(10) == 10 and stages.summary() == {"warm": 3, "main": 7}
    assert stages.first_selectable() == 3 and stages.before_mechanism() == {"rule.warm": 3}
    assert not any(stages.restarts_at(e) for e in range(10))  # no stage asked for a fresh optimiser
    assert stages.plan(2) == 2 and stages.summary() == {"warm": 1, "main": 1}  # 0.6 rounds to 1


def test_a_stage_of_no_epochs_is_skipped_and_an_unstaged_method_selects_from_the_start():
    stages = Stages(Stage("warm", "rule.warm", 0.0), Stage("main", selectable=True, fresh_optimizer=True))
    assert stages.plan(5) == 5 and stages.first_selectable() == 0 and stages.before_mechanism() == {}
    assert not stages.restarts_at(0) and stages.stage_at(0).stage.name == "main"
    single = Stages.single()
    assert single.plan(4) == 4 and single.first_selectable() == 0 and single.summary() == {"train": 4}


def test_budgets_that_cannot_hold_the_stages_are_one_error_naming_the_key():
    with pytest.raises(MtlbenchError, match="rule.tune must be > 0"):
        Stages(Stage("tune", "rule.tune", 0.0, minimum=1, extra=True), Stage("main", selectable=True)).plan(5)
    with pytest.raises(MtlbenchError, match=r"rule.warm=0.5 needs 2 epoch\(s\).*train.epochs >= 3"):
        Stages(Stage("warm", "rule.warm", 0.5, minimum=2), Stage("main", selectable=True)).plan(2)
    with pytest.raises(MtlbenchError, match="no epoch is left"):
        Stages(WARM, Stage("warm2", "rule.warm2", 0.9), Stage("main", selectable=True)).plan(4)


def test_a_schedule_ends_with_the_rest_of_the_budget_and_only_extra_stages_have_rounds():
    with pytest.raises(ValueError, match="rest of the budget"):
        Stages(WARM)
    with pytest.raises(ValueError, match="only an extra stage"):
        Stages(Stage("tune", "rule.tune", 0.2, rounds=3), Stage("main", selectable=True))
    with pytest.raises(ValueError, match="only an extra stage"):
        Stages(Stage("main", selectable=True, rounds=2))
    with pytest.raises(RuntimeError, match="not been planned"):
        Stages.single().summary()
