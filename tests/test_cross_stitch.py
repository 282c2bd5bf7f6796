"""Cross-stitch: identity units reduce it to independent networks; the paper's initialisation."""

from __future__ import annotations

import pytest
import torch

from baselines.cross_stitch import CrossStitch
from mtlbench.architectures import IndependentNetworks
from mtlbench.data.multimnist import MultiMNIST
from mtlbench.nets import MULTILENET
from mtlbench.tasks import TaskSpec

TASKS = [TaskSpec("a", "classification", 10), TaskSpec("b", "classification", 10), TaskSpec("c", "classification", 10)]


@pytest.mark.parametrize("unit", ["scalar", "channel"])
def test_identity_units_behave_as_independent_networks(unit):
    torch.manual_seed(0)
    stitched = CrossStitch(TASKS, MULTILENET, alpha_self=1.0, unit=unit).eval()
    independent = IndependentNetworks(TASKS, MULTILENET).eval()
    independent.load_state_dict({k: v for k, v in stitched.state_dict().items() if not k.startswith("units")})
    x = torch.randn(5, 1, 28, 28)
    for a, b in zip(stitched(x), independent(x), strict=True):
        # equal up to BLAS rounding: a GEMM's summation order depends on its input's memory alignment
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    # and the gradients reach only each task's own network
    stitched(x)[0].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in stitched.encoders[1].parameters())


def test_paper_initialisation_rows_sum_to_one_and_mixing_happens():
    model = CrossStitch(TASKS, MULTILENET, unit="channel")
    alpha = model.units[0].alpha
    assert alpha.shape == (3, 3, 10)
    assert torch.allclose(alpha[0, 0], torch.full((10,), 0.9)) and torch.allclose(alpha[0, 1], torch.full((10,), 0.05))
    assert torch.allclose(alpha.sum(1), torch.ones(3, 10))
    scalar = CrossStitch(TASKS, MULTILENET)
    assert [tuple(u.alpha.shape) for u in scalar.units] == [(3, 3)] * 3
    state = scalar.method_state()["cross_stitch"]
    assert len(state) == 3 and state[0][1][1] == pytest.approx(0.9)


def test_alpha_learning_rate_multiplier():
    model = CrossStitch(TASKS, MULTILENET, alpha_lr_mult=10.0)
    groups = model.param_groups(1e-3)
    assert groups[1]["lr"] == pytest.approx(1e-2)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_cross_stitch_trains_on_multimnist(tmp_path):
    from mtlbench.config import resolve_config
    from mtlbench.training import train

    bundle = MultiMNIST(n_train=64).load(0)
    assert bundle.network is MULTILENET
    cfg = resolve_config(
        "multimnist",
        "cross_stitch",
        0,
        {
            "dataset.n_train": 256,
            "dataset.n_val": 64,
            "dataset.n_test": 64,
            "train.epochs": 1,
            "tracking.enabled": False,
        },
    )
    record = train(cfg, tmp_path / "cs")
    assert record.status == "ok" and len(record.method_state["cross_stitch"]) == 3
