"""The CPU wins of the training core (issue 25), each timed against what it replaced, interleaved in one process
(`mtlbench.bench.interleaved_rounds`), with a check in the same run that the numbers are unchanged:

- Adam: the network optimiser's `foreach` step against the per-parameter loop (PyTorch's default on a CPU);
- DSMTL-AL's search step: the first stage's public layer computed once for all tasks, against once per task;
- synthetic_relations' validation: the tasks' errors as one tensor (`evaluate_regression_split`), against each
  task's evaluator (`evaluate_per_task`, which every other dataset takes).
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from mtlbench.bench import Step, interleaved_rounds, rule_step, summarise_rounds
from mtlbench.config import resolve_config, train_config
from mtlbench.data import iterate_batches
from mtlbench.training import build, evaluate, evaluate_per_task, make_optimizer

#: a change: (the step before, the step after, whether both give the same numbers)
Pair = tuple[Step, Step, Callable[[], bool]]
MULTIMNIST = {"tracking.enabled": False, "dataset.n_train": 512, "dataset.n_val": 64, "dataset.n_test": 64}


def adam_pair() -> Pair:
    """MultiMNIST hard sharing's parameters with fixed gradients, stepped by each Adam."""
    _, model, _ = build(resolve_config("multimnist", "hps", 0, MULTIMNIST))
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) for p in params]

    def optimiser(foreach: bool) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
        copies = [p.detach().clone().requires_grad_(True) for p in params]
        for c, g in zip(copies, grads, strict=True):
            c.grad = g
        return copies, torch.optim.Adam(copies, lr=1e-3, foreach=foreach)

    def same() -> bool:
        (loop_params, loop), (each_params, each) = optimiser(False), optimiser(True)
        for _ in range(20):
            loop.step()
            each.step()
        return all(torch.equal(a, b) for a, b in zip(loop_params, each_params, strict=True))

    return optimiser(False)[1].step, optimiser(True)[1].step, same


def per_task_first_stage(model, x: torch.Tensor) -> list[torch.Tensor]:
    """DSMTL-AL's search forward as it was: each task computes the first stage's public layer itself."""
    pub, priv = model.gates()
    outputs = []
    for t, head in enumerate(model.heads):
        h = x
        for s in range(model.n_stages):
            h = pub[t, s] * model.public[s](h) + priv[t, s] * model.private_layer(t, s)(h)
        outputs.append(head(h))
    return outputs


def dsmtl_al_search_pair(batch_size: int = 256) -> Pair:
    """One search step of DSMTL-AL on MultiMNIST (network weights on the training batch, gates on held-out
    data), with the first public layer shared by the tasks or not."""
    cfg = resolve_config("multimnist", "dsmtl_al", 0, MULTIMNIST)

    def prepared(shared: bool):
        bundle, model, rule = build(cfg)
        if not shared:
            model.forward = types.MethodType(per_task_first_stage, model)  # type: ignore[method-assign]
        data = rule.prepare(bundle.train)
        rule.plan(cfg["train"]["epochs"])
        rule.on_epoch_start(0)  # the search
        cpu = torch.device("cpu")
        x, targets = next(iterate_batches(data, batch_size, True, torch.Generator().manual_seed(0), cpu))
        optimizer = make_optimizer(model.param_groups(cfg["train"]["lr"]), train_config(cfg))
        return model, x, rule_step(model, rule, optimizer, x, targets).step

    (before_model, x, before), (after_model, _, after) = prepared(False), prepared(True)

    def same() -> bool:
        after_model.load_state_dict(copy.deepcopy(before_model.state_dict()))  # the same weights, then forward
        outputs = []
        for model in (before_model, after_model):
            torch.manual_seed(1)  # the Gumbel draws of the gates
            with torch.no_grad():
                outputs.append(model(x))
        return all(torch.equal(a, b) for a, b in zip(*outputs, strict=True))

    return before, after, same


def synthetic_validation_pair() -> Pair:
    cfg = resolve_config("synthetic_relations", "hps", 0, {"tracking.enabled": False})
    bundle, model, _ = build(cfg)
    cpu = torch.device("cpu")

    def per_task():
        return evaluate_per_task(model, bundle.val, bundle.tasks, 1024, cpu)

    def stacked():
        return evaluate(model, bundle.val, bundle.tasks, cfg["train"]["batch_size"], cpu)

    return per_task, stacked, lambda: per_task() == stacked()


PAIRS: dict[str, Callable[[], Pair]] = {
    "Adam step: foreach (was: per-parameter loop)": adam_pair,
    "DSMTL-AL search step: first public layer once (was: once per task)": dsmtl_al_search_pair,
    "synthetic_relations validation: stacked errors (was: per-task evaluators)": synthetic_validation_pair,
}


def run_cpu_wins(out_dir: Path | None = None, rounds: int = 30) -> pd.DataFrame:
    """Per change: median seconds before and after (quartiles in the rounds), the speed-up (before / after) and
    whether the numbers are the same; written to `cpu_wins.csv` under `out_dir` when given."""
    pairs = {change: make() for change, make in PAIRS.items()}
    steps: dict[str, Step] = {}
    for change, (before_step, after_step, _) in pairs.items():
        steps[f"{change} | before"], steps[f"{change} | after"] = before_step, after_step
    summary = summarise_rounds(interleaved_rounds(steps, rounds)).set_index("method")
    rows = []
    for change, (_, _, same) in pairs.items():
        before, after = summary.loc[f"{change} | before"], summary.loc[f"{change} | after"]
        rows.append(
            {
                "change": change,
                "before_ms": before.median_s * 1e3,
                "after_ms": after.median_s * 1e3,
                "speedup": before.median_s / after.median_s,
                "rounds": int(before.rounds),
                "same_numbers": bool(same()),
            }
        )
    table = pd.DataFrame(rows)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out_dir) / "cpu_wins.csv", index=False)
    return table
