"""TorchJD's aggregators as update rules (issue 17.3): the suite's own MGDA and PCGrad against TorchJD's, the
Jacobian rules' gradients against a Jacobian computed by hand, and SRDML's regulariser composed with them."""

from __future__ import annotations

import pytest
import torch
import torchjd.aggregation as jd

from baselines.mgda import min_norm_weights
from baselines.pcgrad import project_conflicts
from mtlbench.config import resolve_config
from mtlbench.training import build
from mtlbench.update_rules import JacobianRule, task_losses
from tests.test_mgda import gradient_family, objective


@pytest.mark.parametrize(
    ("t", "shared", "seed"), [(t, s, seed) for t in (2, 3, 5, 8) for s in (0.0, 3.0) for seed in range(3)]
)
def test_torchjd_mgda_and_the_suites_mgda_give_the_same_update(t, shared, seed):
    """The suite's active-set solver is exact; TorchJD's Frank-Wolfe, run to a tight tolerance, reaches the same
    min-norm point: the same update direction and the same objective."""
    grads = gradient_family(t, shared, seed).float()
    ours = min_norm_weights(grads.double()) @ grads.double()
    theirs = jd.MGDA(epsilon=1e-9, max_iters=20_000)(grads).double()
    assert objective(torch.ones(1), theirs[None]) >= objective(torch.ones(1), ours[None]) * (1 - 1e-4)
    assert torch.linalg.vector_norm(theirs - ours) <= 2e-3 * torch.linalg.vector_norm(ours) + 1e-6


@pytest.mark.parametrize("t", [2, 3, 6])
@pytest.mark.parametrize("seed", range(4))
def test_torchjd_pcgrad_and_the_suites_pcgrad_agree(t, seed):
    """Both draw one random order per task from torch's global generator: seeded alike, they are the same
    algorithm (with two tasks the order does not matter at all)."""
    grads = gradient_family(t, 1.0, seed).float()
    torch.manual_seed(seed)
    ours = project_conflicts(grads)
    torch.manual_seed(seed)
    theirs = jd.PCGrad()(grads)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def _built(method: str, **overrides):
    cfg = resolve_config(
        "multimnist",
        method,
        0,
        {"tracking.enabled": False, "dataset.n_train": 64, "dataset.n_val": 16, "dataset.n_test": 16, **overrides},
    )
    bundle, model, rule = build(cfg)
    x = torch.stack([bundle.train[i][0] for i in range(16)])
    y = [torch.stack([bundle.train[i][1][k] for i in range(16)]) for k in range(len(bundle.tasks))]
    return model, rule, x, y, bundle.tasks


@pytest.mark.parametrize("method", ["upgrad", "dualproj", "imtl_g", "aligned_mtl", "jd_mgda", "cagrad"])
def test_a_torchjd_rule_puts_the_aggregated_jacobian_on_the_trunk_and_own_gradients_on_heads(method):
    torch.manual_seed(0)
    model, rule, x, y, tasks = _built(method)
    assert isinstance(rule, JacobianRule)
    model.eval()  # no dropout: both passes see the same network
    model.zero_grad()
    rule.backward(x, y)
    shared = model.shared_parameters()
    got_shared = torch.cat([p.grad.reshape(-1) for p in shared])
    got_heads = [p.grad.clone() for p in model.heads.parameters()]

    model.zero_grad()
    losses = task_losses(model(x), y, tasks)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)]) for loss in losses]
    expected = getattr(jd, rule.aggregator_class)(**rule.aggregator_args())(torch.stack(rows))
    torch.testing.assert_close(got_shared, expected, rtol=1e-4, atol=1e-6)
    losses.sum().backward()
    for got, p in zip(got_heads, model.heads.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad)
    weights = rule.method_state()["task_weights"]
    assert set(weights) == {t.name for t in tasks}


def test_srdml_composes_with_any_jacobian_rule():
    """The regulariser as a part: SRDML + UPGrad before its warm-up ends is UPGrad, bit for bit."""
    torch.manual_seed(0)
    model, rule, x, y, _ = _built("srdml_upgrad")
    model.eval()
    rule.plan(4)
    rule.on_epoch_start(0)  # the warm-up: no regulariser
    model.zero_grad()
    rule.backward(x, y)
    composed = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(0)
    plain_model, plain, *_ = _built("upgrad")
    plain_model.load_state_dict(model.state_dict())
    plain_model.eval()
    plain_model.zero_grad()
    plain.backward(x, y)
    for a, p in zip(composed, plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    rule.on_epoch_start(rule.staging.first_selectable())  # regularised: the saliency term adds its gradient
    model.zero_grad()
    rule.backward(x, y)
    assert any(not torch.equal(a, p.grad) for a, p in zip(composed, model.parameters(), strict=True))


def test_an_unknown_or_unfit_aggregator_is_refused_with_one_message():
    from mtlbench.errors import MtlbenchError

    for unfit in ("srdml", "famo", "static_weights"):  # a second regulariser; rules that need their own passes
        with pytest.raises(MtlbenchError, match="is not a rule the regulariser composes with"):
            _built("srdml", **{"rule.aggregator": unfit})
    with pytest.raises(MtlbenchError, match="rule.pref_vector has 3 entries but the dataset has 2 tasks"):
        _built("upgrad", **{"rule.pref_vector": [1.0, 2.0, 3.0]})


@pytest.mark.parametrize("aggregator", ["upgrad", "pcgrad", "mgda_ub", "mgda", "uw", "dwa", "rlw", "gradnorm"])
def test_srdml_composes_with_a_rule_that_aggregates_gradients_or_weights_losses(aggregator):
    """The regulariser as a part: SRDML + rule X before its warm-up ends is X (to float tolerance: the
    same gradients, summed in another order), and once the regulariser acts the update differs."""
    torch.manual_seed(0)
    lr = {"train.lr": 0.05}  # the other rule's own weights step at train.lr, alone and composed
    model, rule, x, y, _ = _built("srdml", **{"rule.aggregator": aggregator}, **lr)
    model.eval()
    rule.plan(4)
    rule.on_epoch_start(0)  # the warm-up: no regulariser
    model.zero_grad()
    torch.manual_seed(1)  # RLW draws its weights
    rule.backward(x, y)
    composed = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(0)
    plain_model, plain, *_ = _built(aggregator, **lr)
    plain_model.load_state_dict(model.state_dict())
    plain_model.eval()
    plain.plan(4)
    plain.on_epoch_start(0)
    plain_model.zero_grad()
    torch.manual_seed(1)
    plain.backward(x, y)
    for a, p in zip(composed, plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    rule.after_step()
    plain.after_step()
    for a, p in zip(rule.parameters()[1:], plain.parameters(), strict=True):  # after omega: the other rule's
        torch.testing.assert_close(a, p)
    assert set(rule.method_state()) >= {"relation", "relation_tasks", *plain.method_state()}
    assert set(rule.epoch_log()) >= set(plain.epoch_log())
    rule.on_epoch_start(rule.staging.first_selectable())  # regularised: the saliency term adds its gradient
    model.zero_grad()
    torch.manual_seed(1)
    rule.backward(x, y)
    assert any(not torch.equal(a, p.grad) for a, p in zip(composed, model.parameters(), strict=True))
    rule.after_step()  # a loss weighting steps its own weights here, omega its relation weights
