"""The one training loop every method uses.

Seeding (same seed => identical metrics on CPU), model selection on validation only, test metrics of the
selected epoch, a checkpoint every epoch and exact resume, a NaN/inf guard that ends the run as `diverged`,
`device: auto`, timing, parameter counts, peak memory and MLflow logging all live here, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from tqdm import tqdm

from mtlbench.architectures import MTLArchitecture
from mtlbench.config import TrackingConfig, TrainConfig, check_device_name, component_kwargs, config_hash, train_config
from mtlbench.convergence import assess_history
from mtlbench.data import DatasetBundle, TensorTaskData, iterate_batches
from mtlbench.errors import MtlbenchError
from mtlbench.method import get_method
from mtlbench.record import (
    EpochEntry,
    MethodState,
    Metrics,
    Params,
    Process,
    RunRecord,
    Schedule,
    Timing,
    git_commit,
    host_info,
    json_text,
    process_age,
    versions,
    write_text_atomic,
)
from mtlbench.registry import ARCHITECTURES, DATASETS, UPDATE_RULES
from mtlbench.schedule import Stage, Stages
from mtlbench.task_kinds import RegressionEvaluator
from mtlbench.tasks import TaskSpec, labels_complete
from mtlbench.tracking import (
    epoch_metrics,
    final_metrics,
    final_status,
    is_logged_epoch,
    log_every,
    log_history,
    make_tracker,
    run_key,
    run_name,
    run_params,
    run_tags,
    track_finished,
)
from mtlbench.update_rules import UpdateRule, task_losses

LOCK = "run.lock"  # held by the one process training into the folder
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
RECORD = "record.json"


def resolve_device(name: str) -> torch.device:
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MtlbenchError(f"train.device={name!r} but no CUDA device is available; use train.device=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg: dict[str, Any], device: torch.device | str = "cpu") -> tuple[DatasetBundle, MTLArchitecture, UpdateRule]:
    """Dataset, model and update rule of a resolved config; the model's initialisation depends on `seed` only.
    The model is on `device` before the rule binds to it, so that what a rule makes of its own (SRDML's relation
    weights, uncertainty weighting's log-variances, their optimisers' state) is made there."""
    get_method(cfg["method"])  # registers user components named as package.module:Name
    bundle = load_dataset(cfg)
    seed_everything(cfg["seed"])
    arch_cls = ARCHITECTURES.get(cfg["arch"]["name"])
    model = arch_cls(bundle.tasks, bundle.network, **component_kwargs(cfg["arch"])).to(device)
    rule = UPDATE_RULES.get(cfg["rule"]["name"])(**component_kwargs(cfg["rule"]))
    rule.network_lr = cfg["train"]["lr"]
    rule.bind(model, bundle.tasks)
    return bundle, model, rule


_LOADED: dict[str, DatasetBundle] = {}  # the datasets this process built (the seeds of one job share them)


def load_dataset(cfg: dict[str, Any]) -> DatasetBundle:
    """The dataset of a resolved config, built once per process; settings that cannot build it end in one
    message naming them."""
    name, kwargs = cfg["dataset"]["name"], component_kwargs(cfg["dataset"])
    key = json.dumps([name, kwargs, cfg["data_seed"]], sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED.clear()  # one dataset at a time: a process trains one (dataset, method)
        _LOADED[key] = _build_dataset(name, kwargs, cfg["data_seed"])
    return _LOADED[key]


def _build_dataset(name: str, kwargs: dict[str, Any], data_seed: int) -> DatasetBundle:
    try:
        bundle = DATASETS.get(name)(**kwargs).load(data_seed)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise MtlbenchError(
            f"dataset {name!r} cannot be built with these settings ({exc}); check the dataset.* "
            f"keys (`mtlbench train --dataset {name} --method hps --print-config` lists them)"
        ) from None
    for split in ("train", "val", "test"):
        if len(getattr(bundle, split)) == 0:
            sizes = ", ".join(f"dataset.{k}={v}" for k, v in kwargs.items() if k.startswith("n_"))
            raise MtlbenchError(
                f"the {split} split of {name!r} is empty ({sizes or 'no size keys'}); every split "
                f"needs at least one sample"
            )
    return with_label_completeness(bundle)


def with_label_completeness(bundle: DatasetBundle) -> DatasetBundle:
    """The bundle with each task's `labels_complete` decided once, for the whole dataset: when every split is
    held as tensors and no label of the task is missing, its loss is the plain mean (no mask at every step)."""
    splits = [s for s in (bundle.train, bundle.val, bundle.test) if isinstance(s, TensorTaskData)]
    if len(splits) < 3:
        return bundle
    bundle.tasks = [
        replace(task, labels_complete=labels_complete(task, *(s.targets[i] for s in splits)))
        for i, task in enumerate(bundle.tasks)
    ]
    return bundle


def apply_memory_format(model: torch.nn.Module, memory_format: str, device: torch.device) -> None:
    """`train.memory_format`: conv weights (4-D parameters) in channels_last, which the convolutions then
    keep for their activations; other parameters are untouched."""
    if memory_format == "channels_last" or (memory_format == "auto" and device.type == "cpu"):
        model.to(memory_format=torch.channels_last)


def make_optimizer(params: list[dict[str, Any]], tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "adam":  # foreach: one kernel per operation over all tensors, same numbers as the loop
        return torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay, foreach=True)
    return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)


@torch.no_grad()
def evaluate(
    model: MTLArchitecture, data: Any, tasks: list[TaskSpec], batch_size: int, device: torch.device
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Exact split metrics per task, and the mean loss per task (weighted by labelled-batch size)."""
    size = max(batch_size, 0) or 1024
    if isinstance(data, TensorTaskData) and len(data) <= size and all(stackable_regression(t) for t in tasks):
        return evaluate_regression_split(model, data, tasks)
    return evaluate_per_task(model, data, tasks, size, device)


@torch.no_grad()
def evaluate_per_task(
    model: MTLArchitecture, data: Any, tasks: list[TaskSpec], size: int, device: torch.device
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """`evaluate` by each task's evaluator, in batches of `size`."""
    model.eval()
    evaluators = [t.evaluator() for t in tasks]
    batch_losses, sizes = [], []  # read once, after the split
    for x, targets in iterate_batches(data, size, False, None, device):
        outputs = model(x)
        batch_losses.append(task_losses(outputs, targets, tasks))
        sizes.append(len(x))
        for ev, out, tgt in zip(evaluators, outputs, targets, strict=True):
            ev.update(out, tgt)
    model.train()
    loss_sums = [0.0] * len(tasks)
    for losses, n in zip(torch.stack(batch_losses).tolist(), sizes, strict=True):
        loss_sums = [s + loss * n for s, loss in zip(loss_sums, losses, strict=True)]
    metrics = {t.name: ev.compute() for t, ev in zip(tasks, evaluators, strict=True)}
    return metrics, [s / sum(sizes) for s in loss_sums]


def stackable_regression(task: TaskSpec) -> bool:
    """A task whose metrics are the regression evaluator's (mse, mae), with every label present."""
    return task.spec.evaluator is RegressionEvaluator and task.labels_complete


@torch.no_grad()
def evaluate_regression_split(
    model: MTLArchitecture, data: TensorTaskData, tasks: list[TaskSpec]
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """`evaluate` for a split of regression tasks with complete labels, held as tensors and evaluated in one
    batch (synthetic_relations): the tasks' errors as one (T, N) tensor, its metrics in one read; the same
    numbers as the per-task evaluators give."""
    model.eval()
    outputs = model(data.x)
    losses = task_losses(outputs, data.targets, tasks)
    err = torch.cat(outputs, 1).T.contiguous().float() - torch.stack(data.targets).float()
    losses, mse, mae = torch.stack([losses, (err**2).mean(1), err.abs().mean(1)]).tolist()
    model.train()
    metrics = {t.name: {"mse": m, "mae": a} for t, m, a in zip(tasks, mse, mae, strict=True)}
    return metrics, [loss * len(data) / len(data) for loss in losses]  # the per-task path's sum / count, exactly


def selection_score(
    tc: TrainConfig, metrics: dict[str, dict[str, float]], losses: list[float], tasks: list[TaskSpec]
) -> float:
    """Lower is better. `loss`: summed validation loss; `metric`: mean signed primary metric."""
    if tc.selection == "loss":
        return float(sum(losses))
    signed = [(-1 if t.primary_metric.higher_is_better else 1) * metrics[t.name][t.primary_metric.name] for t in tasks]
    return float(sum(signed) / len(signed))


def _finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"


def plan_epochs(rule: UpdateRule, epochs: int, method: str) -> int:
    """The epochs the loop runs for a budget of `train.epochs`: the rule turns its stage fractions into
    epochs; a budget too short for its stages ends in one message naming the method and the stage key."""
    try:
        total = rule.plan(epochs)
    except MtlbenchError as exc:
        raise MtlbenchError(f"method {method!r}: {exc}") from None
    if not isinstance(getattr(rule, "staging", None), Stages):
        raise MtlbenchError(
            f"method {method!r}: update rule {type(rule).__name__} overrides plan() without planning its stages; "
            f"declare them in stages() instead and leave plan() to UpdateRule (docs/adding-a-method.md)"
        )
    return total


def check_budget(rule: UpdateRule, epochs: int, method: str) -> int:
    """The first selectable epoch; a run that would end before a staged method's mechanism starts is refused
    (a guard: `UpdateRule.plan` keeps at least one epoch of the mechanism)."""
    first, before = rule.staging.first_selectable(), rule.staging.before_mechanism()
    if first >= epochs:
        stages = ", ".join(f"{k} -> {v} epoch(s)" for k, v in before.items())
        raise MtlbenchError(
            f"method {method!r} needs {first} epoch(s) before its own mechanism is active ({stages}), but "
            f"runs {epochs}: no epoch could be reported as {method}. Raise train.epochs or lower "
            f"{' / '.join(before)}"
        )
    return first


class Stopwatch:
    """Seconds of one training process's run by kind (the record's `timing.breakdown`, the pipeline profile)."""

    KINDS = ("startup", "data", "build", "training", "validation", "checkpoints", "tracking", "finalise")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.KINDS, 0.0)

    @contextlib.contextmanager
    def __call__(self, kind: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[kind] += time.perf_counter() - start


class TimedTracker:
    """The tracker, with the time of every call counted as `tracking`."""

    def __init__(self, tracker: Any, clock: Stopwatch):
        self._tracker, self._clock = tracker, clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._tracker, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock("tracking"):
                return attr(*args, **kwargs)

        return timed


def read_checkpoint(path: Path, fallback: Path | None) -> dict[str, Any] | None:
    """One checkpoint file, or None when it is damaged (a kill while it was written, a full disk): that is
    named, with what the run falls back to."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch reports a damaged file in several types
        then = "the previous checkpoint" if fallback is not None and fallback.exists() else None
        print(
            f"warning: {path} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); resuming from "
            f"{then or 'the start (the run is trained again)'}",
            file=sys.stderr,
        )
        return None


def device_split(data: Any, device: torch.device) -> Any:
    """A validation or test split moved to the device once (tensor splits), not batch by batch at every
    evaluation; other datasets stay where they are and are copied per batch."""
    return data.to(device) if hasattr(data, "to") else data


class StepTimer:
    """Seconds spent in training steps. On a GPU each step is bracketed by CUDA events that are read once per
    epoch (`seconds`), so timing never makes a step wait for the device; on the CPU the clock is read."""

    def __init__(self, device: torch.device):
        self.cuda, self.device = device.type == "cuda", device
        self.steps, self._seconds, self._start = 0, 0.0, 0.0
        self._events: list[tuple[Any, Any]] = []

    def __enter__(self) -> StepTimer:
        if self.cuda:
            self._events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record(torch.cuda.current_stream(self.device))
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.steps += 1
        if self.cuda:
            self._events[-1][1].record(torch.cuda.current_stream(self.device))
        else:
            self._seconds += time.perf_counter() - self._start

    def seconds(self) -> float:
        """The steps' total; on a GPU, the one wait for the device in an epoch."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events = []
        return self._seconds


def _no_best() -> dict[str, Any]:
    return {"epoch": -1, "score": math.inf, "model": None, "val": None}


def _no_timing() -> dict[str, Any]:
    return {"train_seconds": 0.0, "step_seconds": 0.0, "steps": 0, "epoch_seconds": []}


@dataclass
class Progress:
    """What the loop has done so far (saved in every checkpoint): epochs done, status, per-epoch history, the
    selected epoch with its weights (`best`), the timing and the MLflow run."""

    epoch: int = 0
    status: str = "ok"
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=_no_best)
    timing: dict[str, Any] = field(default_factory=_no_timing)
    mlflow_run_id: str | None = None


@dataclass
class RunState:
    """One run in memory: what it trains (data, model, rule, optimiser) and how far it got (`progress`). Its
    checkpoint is `checkpoint()`; a resumed run is this state brought back by `resume`."""

    config_hash: str
    tc: TrainConfig
    bundle: DatasetBundle
    model: MTLArchitecture
    rule: UpdateRule
    device: torch.device
    total: int  # the epochs planned
    first_active: int  # the first selectable epoch
    train_all: Any
    train_carved: Any
    val: Any
    progress: Progress = field(default_factory=Progress)
    resumed_from: int = 0
    tracker: Any = None
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: Any = field(init=False)

    def __post_init__(self) -> None:
        self.fresh_optimizer()

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.bundle.tasks

    @property
    def epoch(self) -> int:
        """Epochs done."""
        return self.progress.epoch

    def fresh_optimizer(self) -> None:
        tc = self.tc
        self.optimizer = make_optimizer(self.model.param_groups(tc.lr), tc)
        step = tc.lr_step > 0
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, tc.lr_step, tc.lr_gamma) if step else None

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Model, optimiser, schedule, rule, progress and the random state as the checkpoint holds them."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.rule.load_state_dict(checkpoint["rule"])
        self.progress = Progress(
            checkpoint["epoch"],
            checkpoint["status"],
            json.loads(checkpoint["history"]),
            checkpoint["best"],
            json.loads(checkpoint["timing"]),
            checkpoint["mlflow_run_id"],
        )
        self.resumed_from = checkpoint["epoch"]
        torch.set_rng_state(checkpoint["rng"])

    def checkpoint(self) -> dict[str, Any]:
        progress = self.progress
        return {
            "config_hash": self.config_hash,
            "epoch": progress.epoch,
            "status": progress.status,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rule": self.rule.state_dict(),
            # plain data as JSON text: one string pickles far faster than thousands of small objects
            "history": json.dumps(progress.history),
            "best": progress.best,
            "timing": json.dumps(progress.timing),
            "rng": torch.get_rng_state(),
            "mlflow_run_id": self.tracker.run_id,
        }

    def final_checkpoint(self) -> dict[str, Any]:
        """The checkpoint of the last weights, copied (the record then loads the selected ones)."""
        checkpoint = self.checkpoint()
        return {**checkpoint, "model": {k: v.detach().clone() for k, v in checkpoint["model"].items()}}

    def step(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        """One training step; returns the (T,) task losses, on the device (no read by the host)."""
        self.optimizer.zero_grad(set_to_none=True)
        losses = check_losses(self.rule.backward(x, targets), len(self.tasks), self.rule)
        self.optimizer.step()
        self.rule.after_step()
        return losses

    def train_one_epoch(self, epoch: int, seed: int) -> tuple[float, list[float]]:
        """The epoch's training steps, in the order its seed gives; returns its seconds and mean task losses."""
        rule = self.rule
        if rule.on_epoch_start(epoch) or rule.staging.restarts_at(epoch):  # re-initialised, or a stage restarts
            self.fresh_optimizer()
        self.model.train()
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loss_sum, timer = torch.zeros(len(self.tasks), device=self.device), StepTimer(self.device)
        epoch_start = time.perf_counter()
        data, batch_size = epoch_data(rule.staging.stage_at(epoch).stage, self.train_all, self.train_carved, self.tc)
        for x, targets in iterate_batches(data, batch_size, True, generator, self.device):
            with timer:
                losses = self.step(x, targets)
            loss_sum += losses
        if self.scheduler is not None:
            self.scheduler.step()
        step_seconds = timer.seconds()
        epoch_seconds = time.perf_counter() - epoch_start
        timing = self.progress.timing
        timing["step_seconds"] += step_seconds
        timing["steps"] += timer.steps
        timing["epoch_seconds"].append(epoch_seconds)
        timing["train_seconds"] += epoch_seconds
        return epoch_seconds, (loss_sum / max(timer.steps, 1)).tolist()

    def consider_for_selection(self, epoch: int, score: float, val: dict[str, dict[str, float]]) -> None:
        """Keep the epoch's weights when it is selectable and its validation score is the best so far."""
        if epoch >= self.first_active and score < self.progress.best["score"]:
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.progress.best = {"epoch": epoch, "score": score, "val": val, "model": weights}


_FIRST_RUN_IN_PROCESS = True
PROCESS_STARTED_AT = time.time() - process_age()


class Trainer:
    def __init__(
        self,
        cfg: dict[str, Any],
        out: Path,
        tracking: TrackingConfig | None = None,
        on_epoch: Callable[[int, int], None] | None = None,
    ):
        """`on_epoch(epochs done, epochs planned)` is called after each epoch's training (status lines)."""
        self.cfg, self.out = cfg, Path(out)
        self.on_epoch = on_epoch or (lambda done, total: None)
        self.tc = train_config(cfg)
        self.tracking = tracking or TrackingConfig(**cfg["tracking"])
        self.hash = config_hash(cfg)

    # --- checkpoints ------------------------------------------------------------------------------------
    def _load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint; a corrupt one (a kill while it was written, a full disk) is named and the
        previous one is used, or, failing that, the run starts over."""
        if not self.tc.checkpoint:
            return None
        path, previous = self.out / CHECKPOINT, self.out / PREVIOUS_CHECKPOINT
        loaded = [(read_checkpoint(c, previous if c == path else None), c) for c in (path, previous) if c.exists()]
        checkpoint, read = next(((c, p) for c, p in loaded if c is not None), (None, path))
        if checkpoint is not None and checkpoint["config_hash"] != self.hash:
            stale = " and ".join(str(p) for p in (path, previous) if p.exists())
            raise MtlbenchError(
                f"{read} belongs to a run with another config (hash {checkpoint['config_hash']}, this one "
                f"{self.hash}); delete {stale} to start over, or choose another --out"
            )
        return checkpoint

    def _save_checkpoint(self, run: RunState) -> None:
        """At most one checkpoint per `checkpoint_every_s`: `run.checkpoint()` is built only when one is written,
        never on the epochs in between."""
        if not self.tc.checkpoint:
            return
        last = run.epoch >= run.total or run.progress.status != "ok"
        now = time.monotonic()
        if not last and now - getattr(self, "_last_save", -math.inf) < self.tc.checkpoint_every_s:
            return
        self._last_save = now
        with self.clock("checkpoints"):
            self._write_checkpoint(run.checkpoint())

    def _write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        try:
            torch.save(checkpoint, tmp)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError of its writer
            tmp.unlink(missing_ok=True)
            raise MtlbenchError(
                f"cannot write the checkpoint {tmp} ({exc}); is the disk full? Nothing was lost: the run resumes "
                f"from its last checkpoint when rerun"
            ) from None
        if path.exists():  # kept until the new one is in place: a damaged newest checkpoint has a fallback
            os.replace(path, self.out / PREVIOUS_CHECKPOINT)
        os.replace(tmp, path)

    # --- the run, in its parts ----------------------------------------------------------------------------
    def run(self) -> RunRecord:
        """Restore a finished run, or start (build, or resume from the checkpoint), train the remaining epochs
        and finish (record, final checkpoint, tracking)."""
        self.clock, started_at = Stopwatch(), time.time()
        self._count_startup()
        self.out.mkdir(parents=True, exist_ok=True)
        device = resolve_device(self.tc.device)
        torch.set_num_threads(self.tc.threads)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        checkpoint = self._load_checkpoint()
        if checkpoint is not None and checkpoint.get("record_text"):
            return self._restore_finished(checkpoint["record_text"])
        run = self._start(device, checkpoint)
        self._train_epochs(run)
        return self._finish(run, started_at)

    def _count_startup(self) -> None:
        global _FIRST_RUN_IN_PROCESS
        if _FIRST_RUN_IN_PROCESS:  # interpreter and imports: paid once per process, by its first run
            self.clock.seconds["startup"] = process_age()
            _FIRST_RUN_IN_PROCESS = False

    def _restore_finished(self, record_text: str) -> RunRecord:
        """A finished run (its record deleted, or removed by Snakemake before rerunning the job of its seed
        group): the record comes back byte for byte, so tracking by record hash knows it."""
        write_text_atomic(self.out / RECORD, record_text)
        record = RunRecord.from_json(json.loads(record_text), str(self.out / RECORD))
        if self.tracking.enabled and self.tracking.live:  # a kill may have left its MLflow run open
            track_finished(self.tracking, record, self.out / RECORD, run_key(self.out, self.hash))
        return record

    def _start(self, device: torch.device, checkpoint: dict[str, Any] | None) -> RunState:
        """The run built from its config, then brought to its checkpoint's epoch when there is one."""
        cfg, tc = self.cfg, self.tc
        with self.clock("data"):
            load_dataset(cfg)
        with self.clock("build"):
            bundle, model, rule = build(cfg, device)
        total = plan_epochs(rule, tc.epochs, cfg["method"])
        first_active = check_budget(rule, total, cfg["method"])
        apply_memory_format(model, tc.memory_format, device)
        train_all = bundle.train.to(device) if hasattr(bundle.train, "to") else bundle.train
        run = RunState(
            config_hash=self.hash,
            tc=tc,
            bundle=bundle,
            model=model,
            rule=rule,
            device=device,
            total=total,
            first_active=first_active,
            train_all=train_all,
            train_carved=rule.prepare(train_all),  # what is left after a hold-out, for the stages using one
            val=device_split(bundle.val, device),
        )
        if checkpoint is not None:
            run.resume(checkpoint)
        self._open_tracking(run)
        return run

    def _open_tracking(self, run: RunState) -> None:
        """The run's tracker; idempotent on a reopened run, and a new one (a replaced database) gets the epochs
        it lacks from the history."""
        progress, names = run.progress, [t.name for t in run.tasks]
        self.every = log_every(self.tracking.log_every, run.total)
        with self.clock("tracking"):
            key = run_key(self.out, self.hash)
            tracker = make_tracker(self.tracking, run_name(self.cfg), progress.mlflow_run_id, key)
        run.tracker = TimedTracker(tracker, self.clock)
        run.tracker.log_params(run_params(self.cfg, self.hash))
        run.tracker.set_tags(run_tags(self.cfg))
        seconds, stopped = progress.timing["epoch_seconds"], progress.status != "ok"
        log_history(run.tracker, names, progress.history, seconds, run.total, self.every, stopped)

    def _train_epochs(self, run: RunState) -> None:
        tc = self.tc
        show = tc.progress == "on" or (tc.progress == "auto" and sys.stderr.isatty())
        name = run_name(self.cfg)
        bar = tqdm(range(run.epoch, run.total), desc=name, disable=not show, initial=run.epoch, total=run.total)
        for epoch in bar:
            if run.progress.status != "ok":
                break
            self._one_epoch(run, epoch)
            if epoch + 1 < run.total and run.progress.status == "ok":  # the final one is written with the record
                self._save_checkpoint(run)
        bar.close()

    def _one_epoch(self, run: RunState, epoch: int) -> None:
        """Train one epoch, validate, select and log it."""
        epoch_seconds, train_losses = run.train_one_epoch(epoch, self.cfg["seed"])
        self.on_epoch(epoch + 1, run.total)
        with self.clock("validation"):
            val, val_losses = evaluate(run.model, run.val, run.tasks, self.tc.batch_size, run.device)
        entry = {
            "epoch": epoch,
            "train_loss": train_losses,
            "val": val,
            "val_loss": val_losses,
            **({"rule": run.rule.epoch_log()} if run.rule.epoch_log() else {}),
        }
        run.progress.history.append(entry)
        check_method_state(run.model, run.rule, first=epoch == run.resumed_from)
        if not (_finite(train_losses) and _finite(val_losses)):
            run.progress.status = "diverged"
        else:
            run.consider_for_selection(epoch, selection_score(self.tc, val, val_losses, run.tasks), val)
        run.progress.epoch = epoch + 1
        names, stopped = [t.name for t in run.tasks], run.progress.status != "ok"
        if is_logged_epoch(epoch, run.total, self.every, stopped):
            run.tracker.log_metrics(epoch_metrics(names, entry, epoch_seconds), step=epoch)

    def _finish(self, run: RunState, started_at: float) -> RunRecord:
        """The record (test metrics of the selected epoch), the final checkpoint with the record's exact text,
        and the tracker's final metrics and status."""
        progress, clock = run.progress, self.clock
        if progress.status == "ok" and progress.best["model"] is None:  # no selectable epoch ran: never report it
            progress.status = "incomplete"
        finalise_start = time.perf_counter()
        final = run.final_checkpoint() if self.tc.checkpoint else None  # _record loads the best into the model
        with clock("finalise"):
            record = self._record(run)
            diverged_if_unaggregatable(record)
            record.schedule = Schedule(run.total, run.first_active, run.rule.staging.summary())
            ok = progress.status == "ok"
            record.convergence = assess_history(progress.history, run.first_active) if ok else None
            clock.seconds["training"] = sum(progress.timing["epoch_seconds"][run.resumed_from :])
            clock.seconds["finalise"] = time.perf_counter() - finalise_start  # up to here: test metrics, record
            record.timing.breakdown = dict(clock.seconds)
            record.timing.started_at, record.timing.ended_at = started_at, time.time()
            record.timing.process = Process(os.getpid(), PROCESS_STARTED_AT, self.tc.threads)
            text = record.write(self.out / RECORD)
            if final is not None:  # the final checkpoint keeps the record's exact text
                with clock("checkpoints"):
                    self._write_checkpoint({**final, "record_text": text})
        run.tracker.log_final(final_metrics(record), step=run.total)
        run.tracker.log_artifact(self.out / "record.json")
        run.tracker.finish(final_status(record.status))
        return record

    def _record(self, run: RunState) -> RunRecord:
        progress, model, device = run.progress, run.model, run.device
        metrics, method_state = selected_test_metrics(run, self.tc.batch_size)
        memory, memory_kind = peak_memory(device)
        n_params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in run.rule.parameters())
        return RunRecord(
            dataset=self.cfg["dataset"]["name"],
            method=self.cfg["method"],
            seed=self.cfg["seed"],
            data_seed=self.cfg["data_seed"],
            config=self.cfg,
            config_hash=self.hash,
            status=progress.status,
            selected_epoch=progress.best["epoch"] if progress.status == "ok" else None,
            epochs_completed=len(progress.history),
            metrics=metrics,
            directions={t.name: t.directions() for t in run.tasks},
            timing=record_timing(progress.timing),
            params=Params(total=n_params, inference=model.inference_parameter_count()),
            peak_memory_mb=memory,
            peak_memory_kind=memory_kind,
            versions=versions(),
            git_commit=git_commit(),
            device=str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
            host=host_info(),
            method_state=cast(MethodState, method_state),
            history=cast(list[EpochEntry], progress.history),
            task_info=run.bundle.info,
            mlflow_run_id=run.tracker.run_id,
        )


def selected_test_metrics(run: RunState, batch_size: int) -> tuple[Metrics, dict[str, Any]]:
    """Test metrics of the last and of the selected epoch (whose weights the model then holds), and the
    method's state as selected; an unfinished run has none."""
    model, rule, best = run.model, run.rule, run.progress.best
    metrics = Metrics()
    if run.progress.status == "ok" and best["model"] is not None:
        test = device_split(run.bundle.test, run.device)
        metrics.test_last, _ = evaluate(model, test, run.tasks, batch_size, run.device)
        model.load_state_dict(best["model"])
        metrics.val = best["val"]
        metrics.test, _ = evaluate(model, test, run.tasks, batch_size, run.device)
    return metrics, {**model.method_state(), **rule.method_state()}


def record_timing(timing: dict[str, Any]) -> Timing:
    epochs_done = len(timing["epoch_seconds"])
    return Timing(
        train_seconds=timing["train_seconds"],
        seconds_per_epoch=timing["train_seconds"] / epochs_done if epochs_done else None,
        seconds_per_step=timing["step_seconds"] / timing["steps"] if timing["steps"] else None,
        steps=timing["steps"],
        epoch_seconds=timing["epoch_seconds"],
    )


def epoch_data(stage: Stage, train_all: Any, train_carved: Any, tc: TrainConfig) -> tuple[Any, int]:
    """What an epoch of `stage` trains on: the part left after a hold-out for a stage that uses one (else the
    whole training split), at the stage's own batch size where it has one."""
    data = train_carved if stage.holdout else train_all
    return data, tc.batch_size if stage.batch_size is None else stage.batch_size


def diverged_if_unaggregatable(record: RunRecord) -> None:
    """An `ok` run whose test metrics cannot be aggregated (a non-finite value) is recorded as diverged, never as
    numbers."""
    if record.ok and record.metric_problem():
        record.status, record.metrics, record.selected_epoch = "diverged", Metrics(), None


def check_losses(losses: torch.Tensor, n_tasks: int, rule: UpdateRule) -> torch.Tensor:
    """A rule's step returns its (T,) task losses; another shape would be broadcast silently into the sums."""
    if tuple(losses.shape) != (n_tasks,):
        raise MtlbenchError(
            f"update rule {rule.name!r} returned losses of shape {tuple(losses.shape)} from backward(); it must "
            f"return the ({n_tasks},) task losses"
        )
    return losses


def check_method_state(model: MTLArchitecture, rule: UpdateRule, first: bool = True) -> None:
    """After the first epoch (`first`; later epochs return at once): the method's state is declared
    (MethodState) and JSON, and the rule's checkpoint state can be saved, so that a user method fails in its first
    epoch, naming the key, not after training."""
    if not first:
        return
    state = {**model.method_state(), **rule.method_state()}
    undeclared = sorted(set(state) - set(MethodState.__annotations__))
    if undeclared:
        raise MtlbenchError(
            f"method_state has undeclared keys {undeclared}; a user method puts its own state under 'extra' "
            f"(declared: {', '.join(MethodState.__annotations__)})"
        )
    for key, value in state.items():
        try:
            json_text(value)
        except (TypeError, ValueError) as exc:
            raise MtlbenchError(f"method_state[{key!r}] cannot be written as JSON ({exc})") from None
    try:
        torch.save(rule.state_dict(), io.BytesIO())
    except Exception as exc:  # noqa: BLE001 - pickling reports an unsupported object in several types
        raise MtlbenchError(
            f"update rule {rule.name!r}: state_dict() cannot be saved in a checkpoint ({type(exc).__name__}: {exc})"
        ) from None


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One training process per output folder: a second one into the same folder (the same command started
    twice) is refused at once, before it reads a checkpoint or logs anything."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise MtlbenchError(
                f"{out} is being trained by {holder}: wait for it to finish (a rerun then finds its record), or "
                f"choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train(cfg: dict[str, Any], out: Path, on_epoch: Callable[[int, int], None] | None = None) -> RunRecord:
    with run_lock(Path(out)):
        return Trainer(cfg, out, on_epoch=on_epoch).run()
