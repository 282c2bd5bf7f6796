"""Every registered method trains on both tier-0 datasets through the command line."""

from __future__ import annotations

import pytest

from mtlbench.cli import main
from mtlbench.record import MethodState, RunRecord
from mtlbench.registry import METHODS

TINY = {
    "multimnist": [
        "--epochs",
        "2",
        "--set",
        "dataset.n_train=256",
        "--set",
        "dataset.n_val=64",
        "--set",
        "dataset.n_test=64",
        "--set",
        "train.batch_size=64",
    ],
    "synthetic_relations": ["--epochs", "6"],
}


@pytest.mark.parametrize("dataset", sorted(TINY))
@pytest.mark.parametrize("method", METHODS.names())
def test_method_trains_from_the_cli(method, dataset, tmp_path):
    args = [
        "train",
        "--dataset",
        dataset,
        "--method",
        method,
        "--seed",
        "0",
        "--out",
        str(tmp_path),
        "--no-tracking",
        *TINY[dataset],
    ]
    assert main(args) == 0
    record = RunRecord.read(tmp_path / "record.json")
    assert record.status == "ok" and record.method == method
    assert record.selected_epoch is not None and record.metrics.test
    if method.startswith("srdml"):
        assert "relation" in record.method_state
    if method.startswith("dsmtl"):
        assert "gates" in record.method_state
    if method.startswith("mgda"):
        assert set(record.method_state["task_weights"]) == set(record.metrics.test)
    undeclared = set(record.method_state) - set(MethodState.__annotations__)
    assert not undeclared, f"{method} writes method_state keys not declared in mtlbench.record.MethodState"
