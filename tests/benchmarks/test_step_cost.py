"""Cost of one training step (forward, update rule, optimiser step) on MultiMNIST, batch 256, per method.

Run: `pytest tests/benchmarks --benchmark-only`; the summary prints each method's mean step time as a ratio to
hard sharing, all measured in the same run on the same machine. Regularisers are measured active (SRDML's
warm-up switched off)."""

from __future__ import annotations

import pytest
import torch

from mtlbench.config import resolve_config, train_config
from mtlbench.data import iterate_batches
from mtlbench.training import build, make_optimizer

METHODS = ["hps", "stl", "srdml", "srdml_pcgrad", "pcgrad", "mgda_ub", "mgda", "cross_stitch", "dsmtl_jl",
           "dsmtl_il", "dsmtl_al"]
ACTIVE = {"srdml": {"rule.warmup_epochs": 0}, "srdml_pcgrad": {"rule.warmup_epochs": 0},
          "dsmtl_il": {"rule.stage1_epochs": 0}}


def _step_fn(method: str):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = resolve_config("multimnist", method, 0, {"tracking.enabled": False, "dataset.n_train": 1024,
                                                   "dataset.n_val": 256, "dataset.n_test": 64,
                                                   **ACTIVE.get(method, {})})
    bundle, model, rule = build(cfg)
    train_data = rule.prepare(bundle.train)
    rule.on_epoch_start(0)
    model.train()
    optimizer = make_optimizer(model.param_groups(1e-3), train_config(cfg))
    x, targets = next(iterate_batches(train_data, 256, True, torch.Generator().manual_seed(0), torch.device("cpu")))

    def step():
        optimizer.zero_grad(set_to_none=True)
        rule.backward(x, targets)
        optimizer.step()
        rule.after_step()

    return step


@pytest.mark.parametrize("method", METHODS)
def test_training_step(benchmark, method):
    step = _step_fn(method)
    step()  # warm-up
    benchmark.group = "training step, multimnist, batch 256"
    benchmark.pedantic(step, rounds=30, iterations=1, warmup_rounds=2)
