"""Degenerate and non-finite steps end a run `diverged` (or are handled), never in a traceback that stops a
pipeline (issue 26.7: five zoo rules crashed on a diverging run; Nash-MTL raised on an all-zero Jacobian and on
one task; TorchJD's PCGrad returned NaN for a task gradient of 1e-30)."""

from __future__ import annotations

import warnings

import pytest
import torch

from mtlbench.config import resolve_config
from mtlbench.training import train
from mtlbench.update_rules import guarded_direction
from tests.test_rule_properties import JACOBIAN_RULES, bound, jacobian


def _with_nan(t: int) -> torch.Tensor:
    j = jacobian(t, 5)
    j[0, 0] = float("nan")
    return j


FINITE_CASES = {
    "zero": lambda t: torch.zeros(t, 30),
    "identical": lambda t: jacobian(1, 0).repeat(t, 1),
    "tiny": lambda t: jacobian(t, 1) * 1e-30,
    "one tiny task": lambda t: torch.cat([jacobian(t - 1, 2), 1e-30 * jacobian(1, 3)]),
}


@pytest.mark.parametrize("t", [1, 2, 40])
@pytest.mark.parametrize("name", JACOBIAN_RULES)
def test_every_jacobian_rule_handles_degenerate_jacobians(name, t):
    warnings.simplefilter("ignore")
    for case, make in FINITE_CASES.items():
        if case == "one tiny task" and t == 1:
            continue
        direction = guarded_direction(bound(name, t).aggregate, make(t))
        assert direction.shape == (30,) and torch.isfinite(direction).all(), case
    assert not guarded_direction(bound(name, t).aggregate, torch.zeros(t, 30)).any()
    assert torch.isnan(guarded_direction(bound(name, t).aggregate, _with_nan(t))).all()
    huge = guarded_direction(bound(name, t).aggregate, jacobian(t, 4) * 1e30)  # finite, or NaN: never a raise
    assert torch.isfinite(huge).all() or torch.isnan(huge).all()


@pytest.mark.parametrize("t", [1, 2, 40])
@pytest.mark.parametrize("name", ["mgda", "mgda_ub"])
def test_min_norm_weights_never_raise_on_degenerate_gradients(name, t):
    for make in (*FINITE_CASES.values(), lambda t: jacobian(t, 4) * 1e30, _with_nan):
        if t == 1 and make is FINITE_CASES["one tiny task"]:
            continue
        for normalization in ("none", "l2", "loss", "loss+"):
            rule = bound(name, t)
            rule.normalization = normalization
            weights = rule.weights(make(t), torch.rand(t) + 0.1)
            assert weights.shape == (t,)


@pytest.mark.parametrize("method", ["cagrad", "nash_mtl", "fairgrad", "imtl_g", "aligned_mtl", "jd_pcgrad"])
def test_a_diverging_run_of_a_zoo_rule_ends_diverged(tmp_path, method):
    warnings.simplefilter("ignore")
    cfg = resolve_config(
        "synthetic_relations",
        method,
        0,
        {"train.epochs": 30, "train.lr": 1e6, "tracking.enabled": False, "train.progress": "off"},
    )
    record = train(cfg, tmp_path / method)
    assert record.status == "diverged" and record.metrics.test == {}
