"""A regulariser is a type (issue 25.2): SRDML's saliency term composes with any rule, which takes its own
hyperparameters (`rule.aggregator_params`), and a second regulariser is one file."""

from __future__ import annotations

import textwrap

import pytest
import torch

from mtlbench.cli import main
from mtlbench.config import resolve_config
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord
from mtlbench.training import build

MULTIMNIST = {"tracking.enabled": False, "dataset.n_train": 64, "dataset.n_val": 16, "dataset.n_test": 16}


def _built(method: str, **overrides):
    cfg = resolve_config("multimnist", method, 0, {**MULTIMNIST, **overrides})
    bundle, model, rule = build(cfg)
    x = torch.stack([bundle.train[i][0] for i in range(16)])
    y = [torch.stack([bundle.train[i][1][k] for i in range(16)]) for k in range(len(bundle.tasks))]
    return model, rule, x, y


def _trunk_update(model, rule, x, y, state=None) -> list[torch.Tensor]:
    """The gradients of one step during SRDML's warm-up (the regulariser not acting yet)."""
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    rule.plan(4)
    rule.on_epoch_start(0)
    model.zero_grad()
    rule.backward(x, y)
    return [p.grad.clone() for p in model.parameters()]


def test_the_inner_rule_is_built_with_its_own_hyperparameters():
    """SRDML + CAGrad with c = 0.1 steps as CAGrad with c = 0.1 does (and not as the default c = 0.4)."""
    torch.manual_seed(0)
    model, rule, x, y = _built("srdml", **{"rule.aggregator": "cagrad", "rule.aggregator_params": {"c": 0.1}})
    assert rule.inner.c == 0.1
    composed = _trunk_update(model, rule, x, y)
    plain_model, plain, *_ = _built("cagrad", **{"rule.c": 0.1})
    expected = _trunk_update(plain_model, plain, x, y, model.state_dict())
    default_model, default, *_ = _built("cagrad")
    other = _trunk_update(default_model, default, x, y, model.state_dict())
    for got, want in zip(composed, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert any(not torch.allclose(got, o) for got, o in zip(composed, other, strict=True))


def test_srdml_with_cagrad_trains_and_its_record_shows_c(tmp_path):
    args = ["train", "--dataset", "multimnist", "--method", "srdml", "--out", str(tmp_path), "--no-tracking"]
    sets = ["dataset.n_train=128", "dataset.n_val=32", "dataset.n_test=32", "train.batch_size=64"]
    sets += ["rule.aggregator=cagrad", "rule.aggregator_params={c: 0.25}"]
    assert main([*args, "--epochs", "2", *(a for s in sets for a in ("--set", s))]) == 0
    record = RunRecord.read(tmp_path / "record.json")
    assert record.status == "ok" and record.config["rule"]["aggregator_params"] == {"c": 0.25}
    assert "relation" in record.method_state and "task_weights" in record.method_state


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": 1.0}, r"rule.aggregator_params has \['k'\], which rule 'cagrad' does not take; its parameters: c, "),
        ({"c": "large"}, r"rule.aggregator_params.c: expected float, got 'large'"),
    ],
)
def test_a_wrong_inner_hyperparameter_is_one_message(params, message):
    with pytest.raises(MtlbenchError, match=message):
        _built("srdml", **{"rule.aggregator": "cagrad", "rule.aggregator_params": params})
    with pytest.raises(MtlbenchError, match="rule.aggregator=sum takes no parameters"):
        _built("srdml", **{"rule.aggregator_params": {"c": 0.1}})


SECOND_REGULARISER = textwrap.dedent(
    '''
    """A second regulariser in one file: lam * the mean squared norm of the shared representation."""
    from mtlbench.regularisers import Regulariser, RegularisedRule


    class RepresentationNorm(Regulariser):
        def __init__(self, lam):
            self.lam = lam

        def term(self, rep, outputs, targets):
            return self.lam * rep.pow(2).flatten(1).sum(1).mean()

        def method_state(self):
            return {"extra": {"lam": self.lam}}


    class RepresentationNormRule(RegularisedRule):
        name = "representation_norm"

        def __init__(self, lam: float = 0.5, aggregator: str = "sum", aggregator_params: dict | None = None):
            super().__init__(RepresentationNorm(lam), aggregator, aggregator_params)
    '''
)


def test_a_second_regulariser_is_one_file_and_composes_like_srdml(tmp_path, monkeypatch):
    (tmp_path / "repnorm.py").write_text(SECOND_REGULARISER)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    model, rule, x, y = _built("hps", **{"rule.name": "repnorm:RepresentationNormRule", "rule.lam": 0.3})
    model.eval()
    rule.plan(2)
    rule.on_epoch_start(0)
    model.zero_grad()
    rule.backward(x, y)
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()  # independently: autograd of the sum of the task losses plus the term
    rep = model.encode(x)
    losses = [t.loss(o, target) for t, o, target in zip(rule.tasks, model.decode(rep), y, strict=True)]
    (sum(losses) + 0.3 * rep.pow(2).flatten(1).sum(1).mean()).backward()
    for a, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    assert rule.method_state() == {"extra": {"lam": 0.3}}
    composed = _built("hps", **{"rule.name": "repnorm:RepresentationNormRule", "rule.aggregator": "upgrad"})[1]
    assert type(composed.inner).__name__ == "UPGradRule"
