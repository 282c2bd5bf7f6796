"""No host sync in the training step (issue 25.4): one step of every registered method, in each of its stages,
on both tier-0 datasets, reads nothing of the device on the host but the reads declared below with their reason;
and the counter itself sees each kind of read."""

from __future__ import annotations

import pytest
import torch

from mtlbench.config import resolve_config
from mtlbench.data import iterate_batches
from mtlbench.host_reads import HostReads, host_side, to_host
from mtlbench.registry import METHODS
from mtlbench.training import RunState, build, check_budget, epoch_data, plan_epochs, train_config

#: where a step may still wait for the device, at most how often per step, and why
ALLOWED = {
    "mtlbench/update_rules.py:guarded_direction": (
        1,
        "Jacobian rules: which degenerate case the Jacobian is in decides whether the aggregator is called",
    ),
    "baselines/mgda.py:min_norm_weights": (1, "MGDA with more than two tasks: the Gram matrix is copied to the host"),
    "baselines/torchjd.py:aggregate": (None, "TorchJD's aggregators: third-party solvers that compute on the host"),
}
TINY = {
    "multimnist": {"dataset.n_train": 96, "dataset.n_val": 32, "dataset.n_test": 32, "train.batch_size": 32},
    "synthetic_relations": {},
}


def _run_state(dataset: str, method: str) -> RunState:
    cfg = resolve_config(dataset, method, 0, {"tracking.enabled": False, "train.epochs": 6, **TINY[dataset]})
    bundle, model, rule = build(cfg)
    tc = train_config(cfg)
    total = plan_epochs(rule, tc.epochs, method)
    first = check_budget(rule, total, method)
    run = RunState("-", tc, bundle, model, rule, torch.device("cpu"), total, first, bundle.train, None, bundle.val)
    run.train_carved = rule.prepare(bundle.train)
    return run


def _stage_starts(run: RunState) -> list[int]:
    """The first epoch of each stage, and the last epoch."""
    staging = run.rule.staging
    return sorted({0, run.total - 1, *(e for e in range(run.total) if staging.stage_at(e).begins)})


def step_reads(run: RunState, epoch: int) -> HostReads:
    """The host reads of one training step at `epoch` (after a first step, which sets up lazy state)."""
    if run.rule.on_epoch_start(epoch) or run.rule.staging.restarts_at(epoch):
        run.fresh_optimizer()
    data, batch_size = epoch_data(run.rule.staging.stage_at(epoch).stage, run.train_all, run.train_carved, run.tc)
    x, targets = next(iterate_batches(data, batch_size, True, torch.Generator().manual_seed(epoch), run.device))
    run.step(x, targets)
    with HostReads() as reads:
        run.step(x, targets)
    return reads


@pytest.mark.parametrize("dataset", sorted(TINY))
@pytest.mark.parametrize("method", METHODS.names())
def test_a_training_step_waits_for_the_device_only_where_declared(method, dataset):
    run = _run_state(dataset, method)
    for epoch in _stage_starts(run):
        reads = step_reads(run, epoch)
        per_place = _places(reads)
        undeclared = {w: n for w, n in per_place.items() if w not in ALLOWED}
        assert not undeclared, f"{method} on {dataset}, epoch {epoch}: host reads {reads.report()}"
        for where, n in per_place.items():
            limit = ALLOWED[where][0]
            assert limit is None or n <= limit, f"{method}, epoch {epoch}: {n} reads in {where} (at most {limit})"


def test_the_counter_sees_each_kind_of_read_and_keeps_host_side_reads_apart():
    t = torch.arange(6.0, requires_grad=True)
    with HostReads() as reads:
        float(t.sum())
        bool(t[0] > 0)
        t.detach().tolist()
        t.detach().numpy()
        _ = t[t > 2]  # boolean-mask indexing: the output's size depends on the data
        torch.nonzero(t)
        with host_side():
            host = to_host(t)
            host.tolist()
            int(host.argmax())
        torch.where(t > 2, t, 0.0).sum()  # no read
    kinds = {kind for kind, _ in reads.counts}
    assert kinds == {"item", "tolist", "numpy", "boolean index", "nonzero", "to_host"}
    assert sum(reads.counts.values()) == 7
    assert {kind for kind, _ in reads.host_counts} == {"tolist", "item"}
    assert all(where == "(outside the suite)" for _, where in reads.counts)
    assert torch.Tensor.tolist is not None and t.detach().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # restored


def _places(reads: HostReads) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, where), n in reads.counts.items():
        out[where] = out.get(where, 0) + n
    return out


def test_a_host_read_added_to_a_step_fails_the_guard(monkeypatch):
    """A loss that checks its labels on the host (as the suite's did) is a read in the suite's `task_losses`; an
    aggregator that branches on a tensor exceeds `guarded_direction`'s one read."""
    from baselines import pcgrad
    from mtlbench.tasks import TaskSpec

    loss = TaskSpec.loss
    monkeypatch.setattr(TaskSpec, "loss", lambda self, o, y: loss(self, o, y) if bool((y >= 0).any()) else 0 * o.sum())
    places = _places(step_reads(_run_state("multimnist", "hps"), 0))
    assert places == {"mtlbench/update_rules.py:task_losses": 2}  # one per task: not declared
    monkeypatch.setattr(TaskSpec, "loss", loss)

    def branching(jacobian):
        return jacobian.sum(0) if jacobian.sum() > 0 else jacobian.mean(0)

    monkeypatch.setattr(pcgrad.PCGrad, "aggregate", lambda self, jacobian: branching(jacobian))
    places = _places(step_reads(_run_state("synthetic_relations", "pcgrad"), 0))
    assert places == {"mtlbench/update_rules.py:guarded_direction": 2}  # over its limit of 1
