"""Efficiency that can be trusted: step time, the memory a method needs, and growth with the number of tasks.

- Step times are measured in rounds, each round timing one step of every method, in an order that reverses
  every round (warm-up and drift cannot favour the method measured first); medians with their quartiles.
- Memory on a CPU is not the process's resident size (~1 GB for every method): it is what the method itself
  keeps during one step: parameters, gradients, optimiser state and the activations autograd saves for the
  backward passes (counted once per storage, through saved-tensor hooks). On CUDA, the allocator's peak.
- Scaling: the same synthetic multi-task problem with T tasks; each method's growth exponent is the slope of
  log step time against log T.
- The floor: a plain PyTorch hard-sharing step on the same batches, with nothing of the suite around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from mtlbench.config import resolve_config, train_config
from mtlbench.data import iterate_batches
from mtlbench.nets import MULTILENET, vector_network
from mtlbench.registry import ARCHITECTURES, UPDATE_RULES
from mtlbench.tasks import TaskSpec
from mtlbench.training import apply_memory_format, build, make_optimizer
from mtlbench.update_rules import UpdateRule

Step = Callable[[], None]


def start_mechanism(rule: UpdateRule, epochs: int) -> None:
    """Plan the rule's stages and enter the first epoch its own mechanism is active (SRDML's regulariser on,
    DSMTL-IL's stage 2, DSMTL-AL's derived network): a staged method's step is measured where it is itself."""
    rule.plan(epochs)
    rule.on_epoch_start(rule.staging.first_selectable())


@dataclass
class Prepared:
    step: Step
    model: nn.Module
    optimizer: torch.optim.Optimizer
    rule_params: list[torch.Tensor]


def multimnist_step(method: str, batch_size: int = 256) -> Prepared:
    """One training step of a named method on a MultiMNIST batch (mechanism active)."""
    cfg = resolve_config(
        "multimnist",
        method,
        0,
        {
            "tracking.enabled": False,
            "dataset.n_train": 2 * batch_size,
            "dataset.n_val": 64,
            "dataset.n_test": 64,
        },
    )
    bundle, model, rule = build(cfg)
    apply_memory_format(model, cfg["train"]["memory_format"], torch.device("cpu"))
    data = rule.prepare(bundle.train)
    start_mechanism(rule, cfg["train"]["epochs"])
    model.train()
    optimizer = make_optimizer(model.param_groups(cfg["train"]["lr"]), train_config(cfg))
    x, targets = next(iterate_batches(data, batch_size, True, torch.Generator().manual_seed(0), torch.device("cpu")))
    return rule_step(model, rule, optimizer, x, targets)


def rule_step(
    model: nn.Module, rule, optimizer: torch.optim.Optimizer, x: torch.Tensor, targets: list[torch.Tensor]
) -> Prepared:
    """The training loop's step body (the suite's own cost per step) on a fixed batch."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        rule.backward(x, targets)
        optimizer.step()
        rule.after_step()

    return Prepared(step, model, optimizer, rule.parameters())


def plain_hps_step(batch_size: int = 256) -> Prepared:
    """Hard sharing written as a minimal PyTorch loop body (MultiLeNet, Adam, summed cross-entropy) on the same
    batch as the suite's `hps`: the floor for the framework's per-step overhead."""
    torch.manual_seed(0)
    encoder = MULTILENET.make_encoder()
    tasks = [TaskSpec("left", "classification", 10), TaskSpec("right", "classification", 10)]
    heads = nn.ModuleList(MULTILENET.make_head(t) for t in tasks)
    model = nn.ModuleDict({"encoder": encoder, "heads": heads}).train()
    cfg = resolve_config(
        "multimnist",
        "hps",
        0,
        {"tracking.enabled": False, "dataset.n_train": 2 * batch_size, "dataset.n_val": 64, "dataset.n_test": 64},
    )
    apply_memory_format(model, cfg["train"]["memory_format"], torch.device("cpu"))  # the suite's layout
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    bundle, _, _ = build(cfg)
    x, targets = next(
        iterate_batches(bundle.train, batch_size, True, torch.Generator().manual_seed(0), torch.device("cpu"))
    )
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        rep = encoder(x)
        loss = sum(loss_fn(head(rep), y) for head, y in zip(heads, targets, strict=True))
        loss.backward()
        optimizer.step()

    return Prepared(step, model, optimizer, [])


def synthetic_step(method: str, n_tasks: int, batch_size: int = 128, dim: int = 64) -> Prepared:
    """One step of a method's architecture and rule on T regression tasks over a shared MLP trunk."""
    from mtlbench.method import get_method

    spec = get_method(method)
    tasks = [TaskSpec(f"t{i}", "regression") for i in range(n_tasks)]
    torch.manual_seed(0)
    arch_kwargs = dict(spec.arch_params)
    model = ARCHITECTURES.get(spec.architecture)(tasks, vector_network(dim, "mlp", dim), **arch_kwargs).train()
    rule = UPDATE_RULES.get(spec.update_rule)(**spec.rule_params)
    rule.network_lr = 1e-3
    rule.bind(model, tasks)
    start_mechanism(rule, 10)
    optimizer = torch.optim.Adam([p for g in model.param_groups(1e-3) for p in g["params"]], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, dim, generator=g)
    targets = [torch.randn(batch_size, generator=g) for _ in tasks]
    return rule_step(model, rule, optimizer, x, targets)


def interleaved_rounds(steps: dict[str, Step], rounds: int = 30, warmup: int = 3) -> pd.DataFrame:
    """Per method and round, the seconds of one step. Every round times one step of each method; the order
    reverses every round, so drift and the machine's other load fall on every method alike."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    rows = []
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            steps[name]()
            rows.append({"method": name, "round": r, "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def summarise_rounds(times: pd.DataFrame) -> pd.DataFrame:
    """Per method: median step seconds, quartiles and the median's ratio to `hps` (when present)."""
    by = times.groupby("method", sort=False).seconds
    table = pd.DataFrame(
        {
            "method": by.median().index.to_list(),
            "median_s": by.median().to_numpy(),
            "q25_s": by.quantile(0.25).to_numpy(),
            "q75_s": by.quantile(0.75).to_numpy(),
            "rounds": by.size().to_numpy(),
        }
    )
    if "hps" in set(table.method):
        table["ratio_to_hps"] = table.median_s / float(table.loc[table.method == "hps", "median_s"].iloc[0])
    return table


def interleaved_times(steps: dict[str, Step], rounds: int = 30, warmup: int = 3) -> pd.DataFrame:
    """`summarise_rounds` of `interleaved_rounds`."""
    return summarise_rounds(interleaved_rounds(steps, rounds, warmup))


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def method_memory_mb(prepared: Prepared) -> float:
    """What one step keeps: parameters, their gradients and optimiser state, the rule's own parameters, and
    the tensors autograd saves for backward (each storage once), on the CPU; the CUDA allocator's peak there."""
    device = next(prepared.model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        prepared.step()
        return torch.cuda.max_memory_allocated(device) / 2**20
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        prepared.step()
    params = list(prepared.model.parameters()) + list(prepared.rule_params)
    grads = [p.grad for p in params if p.grad is not None]
    state = [v for s in prepared.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return (_bytes(params) + _bytes(grads) + _bytes(state) + sum(saved.values())) / 2**20


# Methods whose step cost grows faster than linearly in T by their definition (growth.csv's `by_design`)
SUPERLINEAR_BY_DESIGN = {
    "mgda": "T backward passes through the shared trunk (one per task gradient) and a T x T Gram matrix "
    "for the min-norm solver",
    "mgda_ub": "T head backward passes for the representation gradients and a T x T Gram matrix",
    "pcgrad": "T backward passes and the projection of every task gradient on every other: T(T-1) dot products",
    "srdml": "T saliency gradients through the heads (each differentiated again) and T(T-1)/2 pairwise saliency "
    "distances with as many relation weights",
    "cross_stitch": "a T x T mixing unit after every encoder stage: T columns each reading all T",
}


def growth_exponents(times: pd.DataFrame) -> pd.DataFrame:
    """Slope of log median step time against log T, per method (least squares), and for a method whose cost
    is superlinear in T by design, what makes it so."""
    rows = []
    for method, grp in times.groupby("method"):
        slope = np.polyfit(np.log(grp.n_tasks.to_numpy(float)), np.log(grp.median_s.to_numpy(float)), 1)[0]
        rows.append(
            {"method": method, "growth_exponent": float(slope), "by_design": SUPERLINEAR_BY_DESIGN.get(method, "")}
        )
    return pd.DataFrame(rows)


MULTIMNIST_METHODS = (
    "hps",
    "stl",
    "cross_stitch",
    "mgda",
    "mgda_ub",
    "pcgrad",
    "srdml",
    "srdml_pcgrad",
    "dsmtl_jl",
    "dsmtl_il",
    "dsmtl_al",
)
SCALING_METHODS = ("hps", "mgda", "mgda_ub", "pcgrad", "srdml", "dsmtl_jl", "cross_stitch")
TASK_COUNTS = (2, 5, 10, 20, 40)


def run_benchmarks(
    out_dir,
    rounds: int = 30,
    task_counts: tuple[int, ...] = TASK_COUNTS,
    methods: tuple[str, ...] = MULTIMNIST_METHODS,
    scaling_methods: tuple[str, ...] = SCALING_METHODS,
) -> dict[str, pd.DataFrame]:
    """step_cost.csv (MultiMNIST, batch 256, with the plain loop and memory), step_rounds.csv (its time per
    round), scaling.csv, growth.csv and scaling.png under `out_dir`."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared = {m: multimnist_step(m) for m in methods}
    prepared["plain_pytorch_hps"] = plain_hps_step()
    times = interleaved_rounds({m: p.step for m, p in prepared.items()}, rounds)
    times.insert(0, "dataset", "multimnist")  # every round's time: the step-cost claims are tested on these
    times.to_csv(out / "step_rounds.csv", index=False)
    step_cost = summarise_rounds(times)
    step_cost["memory_mb"] = [method_memory_mb(prepared[m]) for m in step_cost.method]
    if "hps" in set(step_cost.method):
        hps_memory = float(step_cost.loc[step_cost.method == "hps", "memory_mb"].iloc[0])
        step_cost["memory_ratio_to_hps"] = step_cost.memory_mb / hps_memory
    step_cost.to_csv(out / "step_cost.csv", index=False)

    scaling = []
    for t in task_counts:
        times = interleaved_times({m: synthetic_step(m, t).step for m in scaling_methods}, max(3, rounds // 2))
        scaling.append(times.assign(n_tasks=t))
    scaling_table = pd.concat(scaling, ignore_index=True)
    scaling_table.to_csv(out / "scaling.csv", index=False)
    growth = growth_exponents(scaling_table)
    growth.to_csv(out / "growth.csv", index=False)
    _scaling_figure(scaling_table, growth, out / "scaling.png")
    return {"step_cost": step_cost, "scaling": scaling_table, "growth": growth}


def _scaling_figure(scaling: pd.DataFrame, growth: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exponents = growth.set_index("method").growth_exponent
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, grp in scaling.groupby("method"):
        grp = grp.sort_values("n_tasks")
        ax.errorbar(
            grp.n_tasks,
            grp.median_s * 1e3,
            yerr=[(grp.median_s - grp.q25_s) * 1e3, (grp.q75_s - grp.median_s) * 1e3],
            marker="o",
            capsize=2,
            label=f"{method} (T^{exponents[method]:.2f})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(scaling.n_tasks.unique()), labels=[str(t) for t in sorted(scaling.n_tasks.unique())])
    ax.set_xlabel("number of tasks T")
    ax.set_ylabel("median step time (ms), quartiles as bars")
    ax.set_title(
        "Step time against the number of tasks (synthetic regression, batch 128)\n"
        "legend: fitted growth exponent; slope 1 = linear in T",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
