"""SRDML: saliencies, the relation weights' gradient, projection, double backprop, relation recovery."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from methods.srdml import SaliencyRegularized, pair_distances, saliencies
from mtlbench.architectures import SharedTrunk
from mtlbench.config import resolve_config
from mtlbench.data.synthetic import ground_truth_relation
from mtlbench.nets import vector_network
from mtlbench.tasks import TaskSpec
from mtlbench.training import build, train

REG_TASKS = [TaskSpec(f"t{i}", "regression") for i in range(4)]


def test_saliency_of_linear_heads_is_their_weight_vector():
    torch.manual_seed(0)
    model = SharedTrunk(REG_TASKS, vector_network(6, "mlp", 5))
    x = torch.randn(7, 6)
    rep = model.encode(x)
    sal = saliencies(rep, model.decode(rep), [torch.zeros(7)] * 4, REG_TASKS)
    assert sal.shape == (4, 7, 5)
    for t, head in enumerate(model.heads):
        assert torch.allclose(sal[t], head.weight[0].expand(7, 5))


def test_saliency_of_a_class_is_the_gradient_of_its_logit_per_sample():
    torch.manual_seed(0)
    task = TaskSpec("c", "classification", 3)
    head = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    rep = torch.randn(5, 4, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1, 0])
    sal = saliencies(rep, [head(rep)], [labels], [task])[0]
    for e in range(5):
        r = rep[e : e + 1].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(head(r)[0, labels[e]], r)
        assert torch.allclose(sal[e], g[0], atol=1e-6)


def test_conv_maps_are_reduced_over_space():
    grad_map = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = (grad_map * torch.arange(48.0).view(1, 3, 4, 4)).flatten(1).sum(1, keepdim=True)
    task = [TaskSpec("r", "regression")]
    s_sum = saliencies(grad_map, [out], [torch.zeros(2)], task, reduce="sum")[0]
    s_mean = saliencies(grad_map, [out], [torch.zeros(2)], task, reduce="mean")[0]
    s_none = saliencies(grad_map, [out], [torch.zeros(2)], task, reduce="none")[0]
    expected = torch.arange(48.0).view(3, 16).sum(1)
    assert torch.allclose(s_sum[0], expected) and torch.allclose(s_mean[0], expected / 16)
    assert s_none.shape == (2, 48)


def _rule_on(model, tasks, **kw):
    rule = SaliencyRegularized(**kw)
    rule.bind(model, tasks)
    rule.on_epoch_start(0)
    return rule


def test_relation_weight_gradient_is_lambda_times_distance_minus_weighted_mean_over_sum():
    torch.manual_seed(1)
    model = SharedTrunk(REG_TASKS, vector_network(6, "mlp", 5))
    rule = _rule_on(model, REG_TASKS, lam=0.7)
    with torch.no_grad():
        rule.omega.copy_(torch.rand(6) + 0.2)
    x, y = torch.randn(9, 6), [torch.randn(9) for _ in range(4)]
    rule.backward(x, y)
    d, w = rule._last_distances, rule.omega.detach()
    s = w.sum()
    e = (w * d).sum() / s  # the omega-weighted mean distance
    expected = 0.7 * (d - e) / s
    assert torch.allclose(rule.omega.grad, expected, atol=1e-6)
    # and, independently, against a finite difference of the regulariser in omega
    rep = model.encode(x)
    dist = pair_distances(saliencies(rep, model.decode(rep), y, REG_TASKS)).detach().double()
    reg = lambda om: 0.7 * (om / om.sum() * dist).sum()  # noqa: E731
    w64, eps = w.double(), 1e-6
    for k in range(6):
        bump = torch.zeros(6, dtype=torch.float64)
        bump[k] = eps
        fd = (reg(w64 + bump) - reg(w64 - bump)) / (2 * eps)
        assert float(fd) == pytest.approx(float(rule.omega.grad[k]), rel=1e-4, abs=1e-6)


def test_relation_weights_stay_non_negative_and_dissimilar_pairs_reach_zero():
    torch.manual_seed(2)
    model = SharedTrunk(REG_TASKS, vector_network(6, "linear", 5))
    rule = _rule_on(model, REG_TASKS, lam=1.0, omega_optimizer="sgd", omega_lr=5.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        rule.backward(torch.randn(8, 6), [torch.randn(8) for _ in range(4)])
        opt.step()
        rule.after_step()
        assert float(rule.omega.detach().min()) >= 0.0
    omega = rule.omega.detach()
    assert float(omega.min()) == 0.0 and float(omega.max()) > 0
    rel = torch.tensor(rule.method_state()["relation"])
    assert torch.equal(rel, rel.T) and rel.diag().abs().sum() == 0


def test_double_backprop_gradient_passes_gradcheck():
    torch.manual_seed(3)
    tasks = REG_TASKS[:3]
    trunk = nn.Linear(3, 4).double()
    heads = [nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).double() for _ in tasks]
    x = torch.randn(5, 3, dtype=torch.float64)
    omega = torch.rand(3, dtype=torch.float64) + 0.5

    def regulariser(trunk_w, head_w, om):
        rep = torch.tanh(x @ trunk_w.T)
        outputs = []
        for head, w in zip(heads, head_w.unbind(0), strict=True):
            h = torch.tanh(torch.nn.functional.linear(rep, w) + head[0].bias)
            outputs.append(head[2](h))
        sal = saliencies(rep, outputs, [torch.zeros(5)] * 3, tasks)
        return ((om / om.sum()) * pair_distances(sal, "sq_l2")).sum()

    head_w = torch.stack([h[0].weight.detach() for h in heads]).requires_grad_(True)
    trunk_w = trunk.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(regulariser, (trunk_w, head_w, omega.requires_grad_(True)))


def test_srdml_recovers_the_synthetic_relations(tmp_path):
    """Over 5 seeds, omega is on average highest for twins, then the same group, then across groups."""
    gt = ground_truth_relation()
    i, j = torch.triu_indices(12, 12, offset=1)
    truth = gt[i, j]
    means, rhos = [], []
    for seed in range(5):
        cfg = resolve_config("synthetic_relations", "srdml", seed, {"tracking.enabled": False,
                                                                    "train.checkpoint": False})
        record = train(cfg, tmp_path / f"seed{seed}")
        omega = torch.tensor(record["method_state"]["relation"])[i, j]
        means.append([float(omega[truth == k].mean()) for k in (2, 1, 0)])
        rhos.append(spearmanr(omega, truth).statistic)
    twins, same, cross = torch.tensor(means).mean(0).tolist()
    assert twins > same > cross
    assert sum(rhos) / len(rhos) > 0.5


def test_srdml_with_pcgrad_needs_shared_parameters():
    from mtlbench.errors import MtlbenchError

    cfg = resolve_config("synthetic_relations", "srdml_pcgrad", 0, {"dataset.trunk": "identity",
                                                                    "tracking.enabled": False})
    with pytest.raises(MtlbenchError, match="shared parameters"):
        build(cfg)
