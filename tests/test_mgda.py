"""The min-norm solver against an independent QP solver, its optimality conditions, and the MGDA rules."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from baselines.mgda import min_norm_weights
from mtlbench.config import resolve_config
from mtlbench.errors import MtlbenchError
from mtlbench.training import build


def gradient_family(t: int, shared: float, seed: int, dim: int = 64) -> torch.Tensor:
    """Random task gradients; `shared` scales a component common to all tasks (the hard case for FW)."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(1, dim, generator=g, dtype=torch.float64)
    return torch.randn(t, dim, generator=g, dtype=torch.float64) + shared * common


def scipy_min_norm(grads: torch.Tensor) -> float:
    gram = (grads @ grads.T).numpy()
    t = len(gram)
    result = scipy.optimize.minimize(
        lambda a: a @ gram @ a,
        np.full(t, 1.0 / t),
        jac=lambda a: 2 * gram @ a,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * t,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0}],
        options={"ftol": 1e-16, "maxiter": 5000},
    )
    return float(result.fun)


def objective(alpha: torch.Tensor, grads: torch.Tensor) -> float:
    d = alpha.to(grads.dtype) @ grads
    return float(d @ d)


def test_two_tasks_closed_form_matches_a_fine_grid():
    for seed in range(20):
        grads = gradient_family(2, shared=seed % 3, seed=seed, dim=8)
        alpha = min_norm_weights(grads)
        grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
        values = ((grid[:, None] * grads[0] + (1 - grid[:, None]) * grads[1]) ** 2).sum(1)
        assert objective(alpha, grads) <= float(values.min()) + 1e-12
        assert abs(float(alpha[0]) - float(grid[values.argmin()])) < 1e-4 or values.min() == values.max()


CASES = [(t, shared, seed) for t in (3, 5, 10, 40) for shared in (0.0, 3.0, 10.0) for seed in range(3)]


@pytest.mark.parametrize(("t", "shared", "seed"), CASES)
def test_default_solver_matches_an_independent_qp_and_is_optimal(t, shared, seed):
    grads = gradient_family(t, shared, seed)
    alpha = min_norm_weights(grads)
    assert alpha.shape == (t,)
    assert float(alpha.min()) >= 0.0 and abs(float(alpha.sum()) - 1.0) < 1e-12
    ours, reference = objective(alpha, grads), scipy_min_norm(grads)
    assert ours <= reference * (1 + 1e-6)
    assert abs(ours - reference) <= 1e-6 * reference or ours < reference  # scipy is never below the optimum
    # optimality of the min-norm point d: <d, g_t> >= |d|^2 for every task
    d = alpha @ grads
    assert float((grads @ d).min() - d @ d) >= -1e-9 * float(d @ d + 1)


SCALED = [(t, scale) for t in (3, 5, 10, 40) for scale in (1e-6, 1e-3, 1.0, 1e3, 1e6)]


@pytest.mark.parametrize(("t", "scale"), SCALED)
def test_default_solver_is_scale_invariant(t, scale):
    """Gradients scaled by 1e-6 ... 1e6 (Gram entries up to ~1e14: `normalization=loss` with small losses)
    give the same optimum as the independent QP on the unscaled problem (audit: IndexError at 1e3)."""
    grads = gradient_family(t, 1.0, seed=t)
    alpha = min_norm_weights(grads * scale)
    assert float(alpha.min()) >= 0.0 and abs(float(alpha.sum()) - 1.0) < 1e-12
    reference = scipy_min_norm(grads)
    assert objective(alpha, grads) <= reference * (1 + 1e-6)
    assert torch.allclose(alpha, min_norm_weights(grads), atol=1e-8)


@pytest.mark.parametrize("t", [3, 5, 10, 40])
def test_official_projected_gradient_solver_reaches_the_qp_optimum(t):
    grads = gradient_family(t, 3.0, seed=t)
    alpha = min_norm_weights(grads, "projected_gradient", max_iter=5000)
    assert float(alpha.min()) >= 0.0 and abs(float(alpha.sum()) - 1.0) < 1e-9
    assert objective(alpha, grads) <= scipy_min_norm(grads) * (1 + 1e-3)  # it stops at an L1 step of 1e-5
    capped = min_norm_weights(grads, "projected_gradient", tol=1e-15, max_iter=1)  # the cap is enforced
    assert objective(capped, grads) >= objective(alpha, grads)


def test_official_two_vector_rule_keeps_endpoints_off_the_corners():
    grads = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)  # the first vector is the min-norm point
    assert min_norm_weights(grads).tolist() == [1.0, 0.0]
    assert min_norm_weights(grads, "projected_gradient").tolist() == pytest.approx([0.999, 0.001])


def test_weights_follow_a_permutation_of_the_tasks():
    grads = gradient_family(7, 1.0, 0)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(min_norm_weights(grads)[perm], min_norm_weights(grads[perm]), atol=1e-9)


def test_frank_wolfe_option_respects_its_iteration_cap_and_stays_feasible():
    grads = gradient_family(40, 0.0, 0)
    exact = objective(min_norm_weights(grads), grads)
    one_step = min_norm_weights(grads, "frank_wolfe", tol=1e-12, max_iter=1)
    many = min_norm_weights(grads, "frank_wolfe", tol=1e-12, max_iter=2000)
    for alpha in (one_step, many):
        assert float(alpha.min()) >= 0 and abs(float(alpha.sum()) - 1) < 1e-9
    assert exact <= objective(many, grads) <= objective(one_step, grads)
    assert objective(one_step, grads) > objective(many, grads)  # the cap really stopped it early


def _tiny(method: str, **extra):
    cfg = resolve_config(
        "multimnist",
        method,
        0,
        {"dataset.n_train": 64, "dataset.n_val": 16, "dataset.n_test": 16, "tracking.enabled": False, **extra},
    )
    bundle, model, rule = build(cfg)
    model.eval()  # no dropout: the reference computation below must see the same network
    x = bundle.train.x[:32]
    targets = [t[:32] for t in bundle.train.targets]
    return model, rule, x, targets


@pytest.mark.parametrize("method", ["mgda", "mgda_ub"])
def test_rule_gradients_are_those_of_the_weighted_loss(method):
    from mtlbench.update_rules import task_losses

    model, rule, x, targets = _tiny(method)
    rule.on_epoch_start(0)
    rule.backward(x, targets)
    got = [p.grad.clone() for p in model.parameters()]
    weights = rule.last_alpha
    model.zero_grad()
    (weights * task_losses(model(x), targets, model.tasks)).sum().backward()
    for g, p in zip(got, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)
    assert abs(float(weights.sum()) - 1) < 1e-6 and float(weights.min()) >= 0


def test_mgda_ub_weights_solve_the_representation_problem():
    model, rule, x, targets = _tiny("mgda_ub")
    from mtlbench.update_rules import task_losses

    rule.on_epoch_start(0)
    rule.backward(x, targets)
    rep = model.encode(x).detach().requires_grad_(True)
    losses = task_losses(model.decode(rep), targets, model.tasks)
    grads = torch.stack([torch.autograd.grad(l, rep, retain_graph=True)[0].reshape(-1) for l in losses])
    assert torch.allclose(rule.last_alpha, min_norm_weights(grads), atol=1e-6)


def test_mgda_on_cross_stitch_is_refused_with_a_clear_message():
    with pytest.raises(MtlbenchError, match="shares none"):
        cfg = resolve_config(
            "multimnist", "mgda", 0, {"arch.name": "cross_stitch", "tracking.enabled": False, "dataset.n_train": 16}
        )
        build(cfg)


def _head_grad_reference(model, x, targets):
    """Autograd references: each task loss's gradient w.r.t. every parameter (zeros where it does not reach)."""
    from mtlbench.update_rules import task_losses

    params = list(model.parameters())
    losses = task_losses(model(x), targets, model.tasks)
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)])
    return rows


@pytest.mark.parametrize("method", ["mgda", "mgda_ub"])
@pytest.mark.parametrize("head_update", ["scaled", "own"])
def test_head_update_own_gives_each_head_its_task_gradient_and_scaled_alpha_times_it(method, head_update):
    """`own` (the paper's Algorithm 2): each head's gradient is its own task loss's gradient, unscaled; `scaled`
    (official code): alpha_t times it. The shared parameters get the min-norm combination sum_t alpha_t g_t
    either way."""
    model, rule, x, targets = _tiny(method, **{"rule.head_update": head_update, "rule.normalization": "loss+"})
    rule.on_epoch_start(0)
    rule.backward(x, targets)
    got = {id(p): p.grad.clone() for p in model.parameters()}
    alpha = rule.last_alpha
    assert float(alpha.max()) < 1 - 1e-3  # a case where scaled and own differ on every head
    model.zero_grad()
    per_task = _head_grad_reference(model, x, targets)
    shared = {id(p) for p in model.shared_parameters()}
    for i, p in enumerate(model.parameters()):
        if id(p) in shared:
            expected = sum(float(alpha[t]) * per_task[t][i] for t in range(len(per_task)))
        else:
            (task,) = [t for t in range(len(per_task)) if per_task[t][i].abs().sum() > 0]  # one head, one task
            expected = per_task[task][i] * (1.0 if head_update == "own" else float(alpha[task]))
        assert torch.allclose(got[id(p)], expected, atol=1e-6, rtol=1e-4), (i, head_update)


def test_the_two_task_weight_of_a_nan_gram_matrix_stays_nan():
    """Decided on the device (no host branch), a non-finite Gram matrix still gives a non-finite weight (the
    loop then ends the run diverged), and identical vectors still give 0.5."""
    from baselines.mgda import _pair_weight

    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    assert torch.isnan(_pair_weight(nan, one, one))
    assert float(_pair_weight(one, one, one)) == 0.5
    assert float(_pair_weight(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(3.0))) == 0.75
