"""Tuned static weights (issue 17.5): the declared candidates, the tuning budget on top of the training budget,
and the choice on held-out data, reported with the chosen weights."""

from __future__ import annotations

import pytest
import torch

from baselines.static_weights import candidate_weights
from mtlbench.cli import main
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord


def test_candidates_are_equal_weights_then_fixed_dirichlet_draws_summing_to_t():
    c = candidate_weights(3, 5, 1.0)
    assert c.shape == (5, 3) and torch.equal(c[0], torch.ones(3))
    torch.testing.assert_close(c.sum(1), torch.full((5,), 3.0))
    assert torch.equal(c, candidate_weights(3, 5, 1.0))  # the same for every training seed
    torch.testing.assert_close(
        candidate_weights(2, 0, 1.0, grid=[[1, 3], [2, 2]]), torch.tensor([[0.5, 1.5], [1.0, 1.0]])
    )
    with pytest.raises(MtlbenchError, match="rule.grid"):
        candidate_weights(2, 0, 1.0, grid=[[1, 2, 3]])


def test_the_best_candidate_on_held_out_data_is_trained_for_the_full_budget(tmp_path):
    args = [
        "train",
        "--dataset",
        "synthetic_relations",
        "--method",
        "static_weights",
        "--seed",
        "0",
        "--epochs",
        "10",
        "--set",
        "rule.candidates=3",
        "--set",
        "rule.tuning_fraction=0.2",
        "--out",
        str(tmp_path),
        "--no-tracking",
    ]
    assert main(args) == 0
    record = RunRecord.read(tmp_path / "record.json")
    schedule = record.schedule
    assert schedule.epochs_total == 3 * 2 + 10 and schedule.first_selectable_epoch == 6
    assert record.selected_epoch >= 6  # never a tuning epoch
    tuning = record.method_state["tuning"]
    assert len(tuning["candidates"]) == len(tuning["scores"]) == 3 and tuning["scores"][0] == pytest.approx(1.0)
    best = min(range(3), key=lambda k: tuning["scores"][k])
    assert record.method_state["task_weights"] == pytest.approx(tuning["candidates"][best])
