"""Each loss weighting against its defining equation (issue 17.4), on a tiny two-task model."""

from __future__ import annotations

import math

import torch
from torch import nn

from baselines.dwa import dwa_weights
from baselines.famo import EPS, famo_logit_gradient
from baselines.gradnorm import gradnorm_loss
from mtlbench.registry import UPDATE_RULES
from mtlbench.tasks import TaskSpec


class TwoTask(nn.Module):
    """A shared linear trunk and two linear regression heads (what hard sharing looks like)."""

    has_shared_representation = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk, self.heads = nn.Linear(4, 3), nn.ModuleList([nn.Linear(3, 1), nn.Linear(3, 1)])

    def forward(self, x):
        rep = self.trunk(x)
        return [h(rep) for h in self.heads]

    def shared_parameters(self):
        return list(self.trunk.parameters())


TASKS = [TaskSpec("a", "regression", 1), TaskSpec("b", "regression", 1)]
X = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
Y = [torch.randn(8, generator=torch.Generator().manual_seed(seed)) for seed in (2, 3)]


def bound(name: str, **kw):
    model = TwoTask()
    rule = UPDATE_RULES.get(name)(**kw)
    rule.network_lr = 0.01
    rule.bind(model, TASKS)
    return model, rule


def per_task_grads(model):
    losses = torch.stack([t.loss(o, y) for t, o, y in zip(TASKS, model(X), Y, strict=True)])
    return losses.detach(), [
        torch.autograd.grad(loss, list(model.parameters()), retain_graph=True, allow_unused=True) for loss in losses
    ]


def combined(grads, weights):
    return [
        sum(float(w) * (g[i] if g[i] is not None else 0) for w, g in zip(weights, grads, strict=True))
        for i in range(len(grads[0]))
    ]


def assert_network_gradient(model, expected):
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, torch.as_tensor(e).expand_as(p.grad), rtol=1e-5, atol=1e-7)


def stepped(name: str, learned: str, values: list[float]):
    """The rule with its learned tensor set to `values`, after one backward; the per-task losses and gradients."""
    model, rule = bound(name)
    with torch.no_grad():
        getattr(rule, learned).copy_(torch.tensor(values))
    losses, grads = per_task_grads(model)
    model.zero_grad()
    rule.backward(X, Y)
    return model, rule, losses, grads


def test_uncertainty_weighting_gradients():
    """sum_t exp(-s_t) L_t + s_t: the network gets sum_t exp(-s_t) grad L_t, s_t gets 1 - exp(-s_t) L_t."""
    model, rule, losses, grads = stepped("uw", "log_vars", [0.3, -0.7])
    precision = torch.exp(-torch.tensor([0.3, -0.7]))
    assert_network_gradient(model, combined(grads, precision))
    torch.testing.assert_close(rule.log_vars.grad, 1 - precision * losses)


def test_dwa_weights_follow_the_loss_ratios_of_the_last_two_epochs():
    assert torch.equal(dwa_weights([torch.tensor([1.0, 2.0])], 2.0, 2), torch.ones(2))
    w = dwa_weights([torch.tensor([2.0, 2.0]), torch.tensor([1.0, 2.0])], 2.0, 2)  # ratios 0.5 and 1
    e = [math.exp(0.25), math.exp(0.5)]
    torch.testing.assert_close(w, torch.tensor([2 * e[0] / sum(e), 2 * e[1] / sum(e)]))
    model, rule = bound("dwa")
    for epoch, losses in enumerate([[2.0, 2.0], [1.0, 2.0]]):  # two epochs of one batch each, losses as given
        rule.on_epoch_start(epoch)
        rule.weighted_loss(torch.tensor(losses))
    rule.on_epoch_start(2)
    torch.testing.assert_close(rule._weights, w)


def test_rlw_weights_are_softmax_of_normal_draws():
    model, rule = bound("rlw")
    losses, grads = per_task_grads(model)
    torch.manual_seed(5)
    drawn = torch.softmax(torch.randn(2), dim=0)
    torch.manual_seed(5)
    model.zero_grad()
    rule.backward(X, Y)
    assert_network_gradient(model, combined(grads, drawn))
    assert abs(sum(rule.method_state()["task_weights"].values()) - 1) < 1e-6


def test_gradnorm_weight_gradient_is_the_sign_of_the_gap_times_the_gradient_norm():
    """d L_grad / d w_t = sign(G_t - target_t) ||grad_W L_t|| (the target is a constant), and w sums to T."""
    w, norms = torch.tensor([0.5, 1.5], requires_grad=True), torch.tensor([2.0, 1.0])
    losses, initial = torch.tensor([0.6, 0.9]), torch.tensor([1.0, 1.0])
    gradnorm_loss(w, norms, losses, initial, 1.5).backward()
    g = w.detach() * norms
    r = (losses / initial) / (losses / initial).mean()
    target = g.mean() * r**1.5
    torch.testing.assert_close(w.grad, torch.sign(g - target) * norms)

    model, rule = bound("gradnorm")
    losses, grads = per_task_grads(model)
    model.zero_grad()
    rule.backward(X, Y)
    assert_network_gradient(model, combined(grads, torch.ones(2)))  # w starts at 1
    rule.after_step()
    weights = rule.weights.detach()
    assert abs(float(weights.sum()) - 2) < 1e-5 and bool((weights > 0).all())


def test_famo_scales_each_task_gradient_and_moves_logits_along_the_softmax_jacobian():
    model, rule, losses, grads = stepped("famo", "logits", [0.4, -0.2])
    z = torch.softmax(torch.tensor([0.4, -0.2]), dim=0)
    c = (z / (losses + EPS)).sum()
    assert_network_gradient(model, combined(grads, z / (c * (losses + EPS))))
    before, after = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.9])
    delta = torch.log(before + EPS) - torch.log(after + EPS)
    jacobian = torch.diag(z) - torch.outer(z, z)
    torch.testing.assert_close(famo_logit_gradient(torch.tensor([0.4, -0.2]), before, after), jacobian.T @ delta)
