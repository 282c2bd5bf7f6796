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
    rule.plan(1)  # one epoch: no room for a warm-up, the regulariser acts from the start
    rule.on_epoch_start(0)
    return rule


def test_relation_weight_gradient_is_lambda_times_distance_minus_weighted_mean_over_sum():
    torch.manual_seed(1)
    model = SharedTrunk(REG_TASKS, vector_network(6, "mlp", 5))
    rule = _rule_on(model, REG_TASKS, lam=0.7)
    with torch.no_grad():
        rule.regulariser.omega.copy_(torch.rand(6) + 0.2)
    x, y = torch.randn(9, 6), [torch.randn(9) for _ in range(4)]
    rule.backward(x, y)
    d, w = rule.regulariser.last_distances, rule.regulariser.omega.detach()
    s = w.sum()
    e = (w * d).sum() / s  # the omega-weighted mean distance
    expected = 0.7 * (d - e) / s
    assert torch.allclose(rule.regulariser.omega.grad, expected, atol=1e-6)
    # and, independently, against a finite difference of the regulariser in omega
    rep = model.encode(x)
    dist = pair_distances(saliencies(rep, model.decode(rep), y, REG_TASKS)).detach().double()
    reg = lambda om: 0.7 * (om / om.sum() * dist).sum()  # noqa: E731
    w64, eps = w.double(), 1e-6
    for k in range(6):
        bump = torch.zeros(6, dtype=torch.float64)
        bump[k] = eps
        fd = (reg(w64 + bump) - reg(w64 - bump)) / (2 * eps)
        assert float(fd) == pytest.approx(float(rule.regulariser.omega.grad[k]), rel=1e-4, abs=1e-6)


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
        assert float(rule.regulariser.omega.detach().min()) >= 0.0
    omega = rule.regulariser.omega.detach()
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
        cfg = resolve_config(
            "synthetic_relations", "srdml", seed, {"tracking.enabled": False, "train.checkpoint": False}
        )
        record = train(cfg, tmp_path / f"seed{seed}")
        omega = torch.tensor(record.method_state["relation"])[i, j]
        means.append([float(omega[truth == k].mean()) for k in (2, 1, 0)])
        rhos.append(spearmanr(omega, truth).statistic)
    twins, same, cross = torch.tensor(means).mean(0).tolist()
    assert twins > same > cross
    assert sum(rhos) / len(rhos) > 0.5


def test_srdml_with_pcgrad_needs_shared_parameters():
    from mtlbench.errors import MtlbenchError

    cfg = resolve_config(
        "synthetic_relations", "srdml_pcgrad", 0, {"dataset.trunk": "identity", "tracking.enabled": False}
    )
    with pytest.raises(MtlbenchError, match="shared parameters"):
        build(cfg)


# --- the audit's SRDML findings (issue 12, items 3, 7, 16) ----------------------------------------------------
def _cifar_model():
    from mtlbench.data.cifar_mtl import cifar_head, vgg16_stages
    from mtlbench.nets import Network

    tasks = [TaskSpec(n, "binary") for n in ("airplane", "cat", "ship")]
    torch.manual_seed(0)
    return SharedTrunk(tasks, Network(lambda: vgg16_stages(""), cifar_head, (3, 32, 32))), tasks


def test_cifar_saliency_is_taken_on_the_last_conv_map_and_summed_over_space():
    """The official code differentiates w.r.t. VGG's block5_pool map (2 x 2 x 512) and sums over space; a
    flattened encoder output (the audit's finding) made `reduce` a no-op."""
    model, tasks = _cifar_model()
    model.eval()
    x, targets = torch.rand(3, 3, 32, 32), [torch.tensor([0, 1, 0])] * 3
    rep = model.encode(x)
    assert rep.shape == (3, 512, 2, 2)
    s_sum = saliencies(rep, model.decode(rep), targets, tasks, reduce="sum")
    s_none = saliencies(rep, model.decode(rep), targets, tasks, reduce="none")
    assert s_sum.shape == (3, 3, 512) and s_none.shape == (3, 3, 2048)
    assert torch.allclose(s_sum, s_none.view(3, 3, 512, 4).sum(-1), atol=1e-6)
    assert not torch.allclose(pair_distances(s_sum), pair_distances(s_none))


def test_mgda_celeba_encoder_gives_the_official_2048_features():
    from mtlbench.data.celeba import BACKBONES

    encoder, head = BACKBONES["mgda_resnet18"]
    net = encoder().eval()
    stem_conv = net[0][0]
    assert (stem_conv.kernel_size, stem_conv.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    rep = net(torch.rand(2, 3, 64, 64))
    assert rep.shape == (2, 512, 2, 2)
    two_way = head(TaskSpec("smiling", "binary"))
    z = two_way.linear(rep.flatten(1))
    labels = torch.tensor([0, 1])
    # two-way cross-entropy equals binary cross-entropy on the returned logit difference
    ce = nn.functional.cross_entropy(z, labels)
    bce = TaskSpec("smiling", "binary").loss(two_way(rep), labels)
    assert torch.allclose(ce, bce, atol=1e-6)


def test_saliencies_are_per_sample_behind_batchnorm_heads():
    """DeepLab-style heads with BatchNorm in training mode couple the samples of a batch; the saliency of a
    sample must be the gradient of its own logit (the head as it acts on one sample: BatchNorm on running
    statistics), for segmentation and depth alike."""
    from methods.srdml import task_saliencies
    from mtlbench.nets import Network

    tasks = [TaskSpec("seg", "segmentation", 3), TaskSpec("depth", "depth")]

    def head(task):
        return nn.Sequential(
            nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, task.num_outputs, 1)
        )

    torch.manual_seed(0)
    model = SharedTrunk(tasks, Network(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), head, (3, 8, 8)))
    for m in model.modules():  # running statistics away from their initial values, as after some training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.train()
    x = torch.randn(5, 3, 8, 8)
    seg = torch.randint(-1, 3, (5, 8, 8))
    depth = torch.rand(5, 1, 8, 8)
    rep = model.encode(x)
    sal = task_saliencies(model, rep, model.decode(rep), [seg, depth], tasks, reduce="none")
    assert all(m.training for m in model.modules())  # the training mode is restored
    model.eval()
    for e in range(5):
        r = rep[e : e + 1].detach().requires_grad_(True)
        out = model.decode(r)
        seg_logit = (out[0].gather(1, seg[e : e + 1].clamp_min(0)[:, None])[:, 0] * (seg[e : e + 1] >= 0)).sum()
        for t, logit in enumerate((seg_logit, out[1].sum())):
            (g,) = torch.autograd.grad(logit, r, retain_graph=True)
            assert torch.allclose(sal[t, e], g.flatten(), atol=1e-5)


def test_reset_omega_optimizer_mimics_the_official_keras_adam_exactly():
    """Official: one Keras Adam for the network's two halves and omega (step count +3 per training step),
    omega's moments recreated every step. The step is lr sqrt(1-b2^k)/(1-b1^k) * 0.1 g / (sqrt(0.001)|g| + 1e-7)
    with k = 3s: 0.64 lr at s = 1 and 3.08 lr at s = 1000 (k = 3000), not lr * sign(g)."""
    from methods.srdml import keras_fresh_moment_adam_step

    for s, ratio in ((1, 0.639), (1000, 3.08)):
        param = torch.zeros(1)
        keras_fresh_moment_adam_step(param, torch.tensor([0.5]), 3 * s, lr=1e-3)
        assert float(-param) / 1e-3 == pytest.approx(ratio, rel=2e-3)

    torch.manual_seed(0)
    model = SharedTrunk(REG_TASKS, vector_network(6, "mlp", 5))
    rule = _rule_on(model, REG_TASKS, reset_omega_optimizer=True, omega_lr=1e-3, lam=1.0)
    x, y = torch.randn(8, 6), [torch.randn(8) for _ in REG_TASKS]
    for step in range(1, 4):
        before = rule.regulariser.omega.detach().clone()
        rule.backward(x, y)
        g = rule.regulariser.omega.grad.detach().clone()
        rule.after_step()
        k = 3 * step
        expected = before - 1e-3 * (1 - 0.999**k) ** 0.5 / (1 - 0.9**k) * (0.1 * g) / ((0.001 * g * g).sqrt() + 1e-7)
        assert torch.allclose(rule.regulariser.omega.detach(), expected.clamp_min(0), atol=1e-9)
        model.zero_grad()


def test_synthetic_srdml_optimises_the_official_objective():
    """Official synthetic_train.py: (1 / 2mT) sum_t sum_e err^2 + 1 * sum_e sum_{i<j} (w_ij / sum w) |s_i - s_j|_1,
    theta and omega by SGD at lr 0.01. The suite's data term is sum_t MSE_t = 2T times the official one, so its
    objective must be 2T times the official one (same gradients up to that factor) and omega's step the same."""
    cfg = resolve_config("synthetic_relations", "srdml", 0, {"tracking.enabled": False, "dataset.trunk": "identity"})
    bundle, model, rule = build(cfg)
    rule.plan(cfg["train"]["epochs"])
    rule.on_epoch_start(rule.staging.first_selectable())  # the regulariser is on
    x, y = bundle.train.x, bundle.train.targets
    t, m = len(bundle.tasks), len(x)
    rule.backward(x, y)
    suite_grads = [p.grad.clone() for p in model.parameters()]
    suite_omega_step = cfg["rule"]["omega_lr"] * rule.regulariser.omega.grad.clone()

    model.zero_grad()
    omega = rule.regulariser.omega.detach().clone().requires_grad_(True)
    weights = [head.weight[0] for head in model.heads]  # identity trunk: the saliency is the weight vector
    data = sum(((head(x)[:, 0] - target) ** 2).sum() for head, target in zip(model.heads, y, strict=True))
    data = data / (2 * m * t)
    i, j = torch.triu_indices(t, t, offset=1)
    dist = torch.stack([(weights[a] - weights[b]).abs().sum() * m for a, b in zip(i.tolist(), j.tolist(), strict=True)])
    official = data + 1.0 * (omega / omega.sum() * dist).sum()
    official.backward()
    for got, p in zip(suite_grads, model.parameters(), strict=True):
        assert torch.allclose(got, 2 * t * p.grad, rtol=1e-4, atol=1e-4)  # float32 sums of ~50
    assert torch.allclose(suite_omega_step, 0.01 * omega.grad, rtol=1e-4, atol=1e-9)


def test_the_warm_up_trains_at_its_own_batch_size(tmp_path):
    """The official pretrain.py warms up at batch 100 and train.py regularises at 200 (config/paper.yaml):
    `rule.warmup_batch_size` gives the warm-up stage its own batch size, the regularised stage keeps the run's."""
    from mtlbench.config import resolve_config
    from mtlbench.training import train

    overrides = {"train.epochs": 10, "tracking.enabled": False, "train.progress": "off"}
    cfg = resolve_config("synthetic_relations", "srdml", 0, {**overrides, "rule.warmup_batch_size": 5})
    record = train(cfg, tmp_path / "own")
    warmup = record.schedule.first_selectable_epoch
    assert warmup >= 1 and record.timing.steps == warmup * 2 + (10 - warmup)  # 10 samples: 2 steps vs full batch
    same = train(resolve_config("synthetic_relations", "srdml", 0, overrides), tmp_path / "same")
    assert same.timing.steps == 10
