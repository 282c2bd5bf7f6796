"""Properties every registered Jacobian rule keeps (issue 17.7): permuting the tasks permutes nothing in the
update (the aggregate of the rows does not depend on their order), identical task gradients give the common
gradient (times T for the rules that sum), and weights stay on the simplex where the rule promises it."""

from __future__ import annotations

import pytest
import torch

from mtlbench.registry import UPDATE_RULES
from mtlbench.tasks import TaskSpec
from mtlbench.update_rules import JacobianRule

JACOBIAN_RULES = sorted(n for n in UPDATE_RULES.names() if issubclass(UPDATE_RULES.get(n), JacobianRule))
RANDOMISED = {"pcgrad", "jd_pcgrad", "graddrop", "rgw", "gradvac"}  # an order or a draw per step
STATEFUL = {"gradvac", "nash_mtl", "excess_mtl"}  # the update depends on past steps: fresh rule per call
# what identical task gradients g give: the common gradient, T times it, a positive multiple of it
# (CAGrad: (1 + c) g), or no promise (None)
ON_IDENTICAL = {
    "pcgrad": "sum",
    "jd_pcgrad": "sum",
    "gradvac": "sum",
    "graddrop": None,
    "rgw": "common",
    "cagrad": "direction",
    "nash_mtl": None,
    "excess_mtl": None,
    "fairgrad": None,
    "aligned_mtl": None,
    "config": None,
}
SIMPLEX = {"jd_mgda", "rgw"}  # weights on the simplex (sum 1, non-negative)


class Stub(torch.nn.Module):
    """Just enough of an architecture to bind a rule (its aggregation is tested on a given Jacobian)."""

    has_shared_representation = True

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Linear(2, 2)

    def shared_parameters(self):
        return list(self.trunk.parameters())


def bound(name: str, t: int):
    rule = UPDATE_RULES.get(name)()
    rule.bind(Stub(), [TaskSpec(f"t{i}", "regression", 1) for i in range(t)])
    return rule


def jacobian(t: int, seed: int, d: int = 30) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, d, generator=g) + 0.5 * torch.randn(1, d, generator=g)


def test_every_jacobian_rule_is_covered():
    assert {"pcgrad", "upgrad", "jd_mgda", "cagrad"} <= set(JACOBIAN_RULES)


@pytest.mark.parametrize("name", [n for n in JACOBIAN_RULES if n not in RANDOMISED])
@pytest.mark.parametrize("seed", range(3))
def test_permuting_the_tasks_leaves_the_update_unchanged(name, seed):
    j = jacobian(4, seed)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(100 + seed))
    update = bound(name, 4).aggregate(j)
    permuted = bound(name, 4).aggregate(j[perm])
    torch.testing.assert_close(permuted, update, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name", [n for n in JACOBIAN_RULES if ON_IDENTICAL.get(n, "common")])
def test_identical_task_gradients_give_the_common_gradient(name):
    g = torch.randn(30, generator=torch.Generator().manual_seed(7))
    update = bound(name, 3).aggregate(g.expand(3, -1).clone())
    promise = ON_IDENTICAL.get(name, "common")
    if promise == "direction":
        cosine = float(update @ g / (update.norm() * g.norm()))
        assert cosine > 1 - 1e-5 and float(update.norm()) >= float(g.norm()) * (1 - 1e-4)
        return
    factor = 3.0 if promise == "sum" else 1.0
    torch.testing.assert_close(update, factor * g, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name", sorted(SIMPLEX))
def test_weights_stay_on_the_simplex(name):
    rule = bound(name, 3)
    for seed in range(5):
        rule.aggregate(jacobian(3, seed))
    weights = torch.tensor(list(rule.method_state()["task_weights"].values()))
    assert float(weights.min()) >= -1e-6 and abs(float(weights.sum()) - 1) < 1e-4
