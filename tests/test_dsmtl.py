"""DSMTL: the STL fall-back, IL's frozen public encoder, lite gates, AL's compact model, JL's unrolled gates."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from methods.dsmtl import DSMTL, STAGE1, DSMTLArchitectureLearning, Gates, IndividualLearning, JointLearning
from mtlbench.architectures import IndependentNetworks
from mtlbench.nets import MULTILENET, vector_network
from mtlbench.tasks import TaskSpec
from mtlbench.update_rules import task_losses

TASKS = [TaskSpec("left", "classification", 10), TaskSpec("right", "classification", 10)]


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), [torch.randint(0, 10, (n,), generator=g) for _ in TASKS]


def test_private_gates_give_exactly_the_stl_networks():
    torch.manual_seed(0)
    model = DSMTL(TASKS, MULTILENET, force_gate="private", private_init="independent").eval()
    stl = IndependentNetworks(TASKS, MULTILENET).eval()
    stl.load_state_dict(
        {"encoders." + k[len("private.") :]: v for k, v in model.state_dict().items() if k.startswith("private.")}
        | {k: v for k, v in model.state_dict().items() if k.startswith("heads.")}
    )
    x, _ = _batch()
    for a, b in zip(model(x), stl(x), strict=True):
        assert torch.equal(a, b)


def test_gate_kinds_start_at_an_even_mix():
    for kind in ("softmax", "sigmoid"):
        pub, priv = Gates((3,), kind, 0.1)()
        assert torch.allclose(pub, torch.full((3,), 0.5)) and torch.allclose(priv, torch.full((3,), 0.5))


def test_lite_gates_are_exactly_zero_or_one_at_test_and_hard_in_training():
    gates = Gates((5,), "lite", 0.1)
    with torch.no_grad():
        gates.logits.copy_(torch.randn(5, 2))
    pub, priv = gates.eval()()
    assert set(pub.tolist()) <= {0.0, 1.0} and torch.equal(pub + priv, torch.ones(5))
    expected = (gates.logits.softmax(-1)[:, 0] > 0.5).float()
    assert torch.equal(pub, expected)
    pub, priv = gates.train()()
    assert set(pub.detach().tolist()) <= {0.0, 1.0}
    (pub * torch.arange(5.0)).sum().backward()  # straight-through: gradients reach the logits
    assert gates.logits.grad is not None and gates.logits.grad.abs().sum() > 0


def test_lite_model_stores_only_the_chosen_encoders():
    model = DSMTL(TASKS, MULTILENET, gate="lite")
    with torch.no_grad():
        model.gates.logits.copy_(torch.tensor([[5.0, -5.0], [5.0, -5.0]]))  # both tasks choose public
    encoder = sum(p.numel() for p in model.public.parameters())
    full = sum(p.numel() for p in model.parameters())
    assert model.inference_parameter_count() == full - 2 * encoder - model.gates.logits.numel()


def test_individual_learning_stage_two_leaves_the_public_encoder_bit_identical():
    torch.manual_seed(0)
    model = DSMTL(TASKS, MULTILENET)
    rule = IndividualLearning(stage1_fraction=0.5)
    rule.bind(model, TASKS)
    assert rule.plan(2) == 2 and rule.staging.summary()[STAGE1] == 1
    optimizer = torch.optim.Adam(model.param_groups(1e-3)[0]["params"], lr=1e-2, weight_decay=1e-5)
    rule.on_epoch_start(0)  # stage 1: hard sharing through the public encoder, private parts untouched
    private_before = [p.detach().clone() for p in model.private.parameters()]
    for seed in range(2):
        optimizer.zero_grad()
        rule.backward(*_batch(seed=seed))
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(private_before, model.private.parameters(), strict=True))
    rule.on_epoch_start(1)  # stage 2
    public_before = {k: v.clone() for k, v in model.public.state_dict().items()}
    gates_before = model.gates.logits.detach().clone()
    for seed in range(3):
        optimizer.zero_grad()
        rule.backward(*_batch(seed=10 + seed))
        optimizer.step()
    assert all(torch.equal(public_before[k], v) for k, v in model.public.state_dict().items())
    assert not torch.equal(gates_before, model.gates.logits.detach())
    assert rule.staging.first_selectable() == 1  # stage 1 cannot be selected


def _resnet_dsmtl(cls=DSMTL):
    """DSMTL on CelebA's ResNet-18 backbone (BatchNorm everywhere), on small inputs."""
    from torch import nn

    from mtlbench.data.celeba import resnet18_stages
    from mtlbench.nets import Network

    tasks = [TaskSpec("smiling", "binary"), TaskSpec("young", "binary")]
    network = Network(resnet18_stages, lambda task: nn.Sequential(nn.Flatten(), nn.Linear(512, 1)), (3, 32, 32))
    torch.manual_seed(0)
    return cls(tasks, network), tasks


def _binary_batch(tasks, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 32, 32, generator=g), [torch.randint(0, 2, (8,), generator=g) for _ in tasks]


def test_frozen_batchnorm_encoder_stays_bit_identical_through_the_training_loop():
    """Frozen means bit-identical: DSMTL-IL's public ResNet-18 keeps its BatchNorm running statistics in
    stage 2 (audit: running_mean / running_var changed), also after the loop's `model.train()`."""
    model, tasks = _resnet_dsmtl()
    rule = IndividualLearning(stage1_fraction=1 / 3)
    rule.bind(model, tasks)
    rule.plan(3)
    optimizer = torch.optim.Adam(model.param_groups(1e-3)[0]["params"], lr=1e-2, weight_decay=1e-5)
    for epoch in range(3):
        rule.on_epoch_start(epoch)
        model.train()  # what the training loop does at the start of every epoch
        if epoch == 1:
            public_before = {k: v.clone() for k, v in model.public.state_dict().items()}
            private_before = {k: v.clone() for k, v in model.private.state_dict().items()}
        optimizer.zero_grad()
        rule.backward(*_binary_batch(tasks, epoch))
        optimizer.step()
    assert any("running_mean" in k for k in public_before)
    assert all(torch.equal(public_before[k], v) for k, v in model.public.state_dict().items())
    changed = [k for k, v in model.private.state_dict().items() if not torch.equal(private_before[k], v)]
    assert any("running_mean" in k for k in changed)  # the private encoders still train, statistics included


def test_layers_that_architecture_learning_leaves_unused_are_frozen_with_their_statistics():
    model, tasks = _resnet_dsmtl(DSMTLArchitectureLearning)
    with torch.no_grad():
        model.gates.logits[0, :, 0] = 5.0  # task 0: public everywhere; task 1: private everywhere
        model.gates.logits[1, :, 1] = 5.0
    model.derive()
    model.train()
    frozen = [model.private[0], *model.public.children()]
    frozen = [m for m in frozen if not any(p.requires_grad for p in m.parameters())]
    assert len(frozen) == 1 and all(
        not bn.training for bn in frozen[0].modules() if isinstance(bn, torch.nn.BatchNorm2d)
    )


def test_individual_learning_stage_two_is_separable_by_task():
    """Task 0's private parts get the gradient of task 0's loss alone."""
    torch.manual_seed(0)
    model = DSMTL(TASKS, MULTILENET).eval()
    rule = IndividualLearning(stage1_fraction=0)
    rule.bind(model, TASKS)
    rule.plan(1)
    rule.on_epoch_start(0)
    x, y = _batch()
    rule.backward(x, y)
    summed = [p.grad.clone() for p in model.private[0].parameters()]
    model.zero_grad()
    task_losses(model(x), y, TASKS)[0].backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(summed, model.private[0].parameters(), strict=True))


def test_derived_compact_model_has_fewer_inference_parameters_than_full_dsmtl():
    torch.manual_seed(0)
    al = DSMTLArchitectureLearning(TASKS, MULTILENET)
    full = DSMTL(TASKS, MULTILENET)
    with torch.no_grad():  # shared bottom, private top: the typical outcome
        al.gates.logits.copy_(torch.tensor([[[3.0, 0.0], [3.0, 0.0], [0.0, 3.0]]] * 2))
    al.derive()
    assert al.method_state()["architecture"] == {t.name: ["public", "public", "private"] for t in TASKS}
    assert al.inference_parameter_count() < full.inference_parameter_count()
    stl = sum(p.numel() for p in IndependentNetworks(TASKS, MULTILENET).parameters())
    assert al.inference_parameter_count() < stl
    x, _ = _batch()
    assert [tuple(o.shape) for o in al.eval()(x)] == [(6, 10), (6, 10)]


def test_unrolled_gate_gradient_matches_finite_differences():
    torch.manual_seed(0)
    tasks = [TaskSpec(f"t{i}", "regression") for i in range(3)]
    model = DSMTL(tasks, vector_network(4, "mlp", 5)).double().eval()  # eval: no dropout, softmax gates
    rule = JointLearning(gate_on_val=True, unroll_lr=0.1)
    rule.bind(model, tasks)
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(8, 4, generator=g, dtype=torch.float64),
        [torch.randn(8, generator=g, dtype=torch.float64) for _ in tasks],
    )
    xv, yv = (
        torch.randn(8, 4, generator=g, dtype=torch.float64),
        [torch.randn(8, generator=g, dtype=torch.float64) for _ in tasks],
    )
    (analytic,) = rule.unrolled_gate_gradient(x, y, (xv, yv))

    named = dict(model.named_parameters())
    weights = {k: p.detach() for k, p in named.items() if k != "gates.logits"}

    def outer(logits):
        w = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
        loss = task_losses(functional_call(model, {**w, "gates.logits": logits}, (x,)), y, tasks).sum()
        grads = torch.autograd.grad(loss, list(w.values()), allow_unused=True)
        unrolled = {k: v - 0.1 * (gr if gr is not None else 0) for (k, v), gr in zip(w.items(), grads, strict=True)}
        out = functional_call(model, {**unrolled, "gates.logits": logits}, (xv,))
        return float(task_losses(out, yv, tasks).sum().detach())

    base = named["gates.logits"].detach().clone()
    eps = 1e-6
    for idx in [(0, 0), (1, 1), (2, 0)]:
        bump = torch.zeros_like(base)
        bump[idx] = eps
        fd = (outer(base + bump) - outer(base - bump)) / (2 * eps)
        assert fd == pytest.approx(float(analytic[idx]), rel=1e-5, abs=1e-8)


def test_gates_on_validation_step_first_with_their_own_adam_as_the_official_bilevel_script():
    """Official train_bilevel.py: gates stepped first by Adam(lr 1e-4, no weight decay) on the held-out loss of
    the weights unrolled at the network's lr; then the weights' gradient with the updated gates; the network's
    optimiser never sees a gate gradient."""
    from mtlbench.config import resolve_config
    from mtlbench.training import build

    cfg = resolve_config(
        "synthetic_relations", "dsmtl_jl", 0, {"rule.gate_on_val": True, "tracking.enabled": False, "train.lr": 0.003}
    )
    bundle, model, rule = build(cfg)
    train_data = rule.prepare(bundle.train)
    x, y = train_data.x, train_data.targets
    held_out = rule._holdout(0)
    gates = model.gates.logits
    before = gates.detach().clone()
    (expected_grad,) = rule.unrolled_gate_gradient(x, y, held_out)
    assert rule.network_lr == 0.003  # the unrolled step uses the network's lr
    rule.backward(x, y)
    assert gates.grad is None
    # Adam's first step moves each gate logit by lr * g / (|g| + eps)
    step = 1e-4 * expected_grad / (expected_grad.abs() + 1e-8)
    assert torch.allclose(gates.detach(), before - step, atol=1e-10)
    got = [p.grad.clone() for n, p in model.named_parameters() if n != "gates.logits"]
    model.zero_grad()
    task_losses(model(x), y, bundle.tasks).sum().backward()  # the training loss with the updated gates
    want = [p.grad for n, p in model.named_parameters() if n != "gates.logits"]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want, strict=True))


def _train(tmp_path, method, epochs=40, **overrides):
    from mtlbench.config import resolve_config
    from mtlbench.training import train

    cfg = resolve_config(
        "synthetic_relations",
        method,
        0,
        {"train.epochs": epochs, "tracking.enabled": False, "train.progress": "off", **overrides},
    )
    return train(cfg, tmp_path / method)


def test_derived_all_public_network_retrains_on_every_training_sample_as_hard_sharing(tmp_path, monkeypatch):
    """The hold-out that DSMTL-AL's search carves is the search's alone: a derived network that is all public
    *is* hard sharing, and retrained from the same initialisation (its public encoder and heads draw the same
    numbers as hard sharing's; full-batch SGD) it must give hard sharing's test metrics. Retrained on the 80%
    left after the carve (8 of synthetic_relations' 10 training samples) it did not (Delta_m +54% vs -7.8%)."""
    derive = DSMTLArchitectureLearning.derive

    def derive_all_public(self):
        with torch.no_grad():
            self.gates.logits[..., 0] = 5.0  # every task, every stage: the public layer
            self.gates.logits[..., 1] = -5.0
        derive(self)

    monkeypatch.setattr(DSMTLArchitectureLearning, "derive", derive_all_public)
    al = _train(tmp_path, "dsmtl_al")
    hps = _train(tmp_path, "hps")
    assert set(al.method_state["architecture"]["task01"]) == {"public"}
    assert al.selected_epoch - al.schedule.first_selectable_epoch == hps.selected_epoch
    for task, metrics in hps.metrics.test.items():
        for name, value in metrics.items():
            assert al.metrics.test[task][name] == pytest.approx(value, rel=1e-5, abs=1e-7), (task, name)


def test_tuned_static_weights_train_the_chosen_weights_on_every_training_sample(tmp_path, monkeypatch):
    """The tuning rounds score candidates on the hold-out; the final training uses the whole training split."""
    from mtlbench import training

    seen: list[int] = []
    batches = training.iterate_batches

    def counting(data, batch_size, shuffle, *args, **kwargs):
        if shuffle:  # training batches (validation and test are read in order)
            seen.append(len(data))
        return batches(data, batch_size, shuffle, *args, **kwargs)

    monkeypatch.setattr(training, "iterate_batches", counting)
    record = _train(tmp_path, "static_weights", epochs=10, **{"rule.candidates": 2})
    tuning = record.schedule.stages[next(iter(record.schedule.stages))]
    assert seen[:tuning] == [8] * tuning  # 10 training samples, 20% held out
    assert seen[tuning:] == [10] * (len(seen) - tuning)


def test_dsmtl_al_shares_its_first_public_layer_only_where_that_changes_nothing():
    """The search computes the first public layer once for all tasks when the layer draws nothing and keeps no
    running statistics (MultiLeNet's first stage); with dropout or BatchNorm there, once per task as before."""
    from torch import nn

    from mtlbench.nets import Network

    tasks = [TaskSpec("left", "classification", 10), TaskSpec("right", "classification", 10)]
    assert DSMTLArchitectureLearning(tasks, MULTILENET)._share_first_public
    for layer in (nn.BatchNorm2d(10), nn.Dropout2d(0.1)):

        def stages(layer=layer):
            first, *rest = MULTILENET.make_encoder()
            return nn.Sequential(nn.Sequential(first, layer), *rest)

        network = Network(stages, MULTILENET.make_head, MULTILENET.input_shape)
        assert not DSMTLArchitectureLearning(tasks, network)._share_first_public
