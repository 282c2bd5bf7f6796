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
from pathlib import Path
from typing import Any, cast

import torch
from tqdm import tqdm

from mtlbench.architectures import MTLArchitecture
from mtlbench.config import TrackingConfig, TrainConfig, check_device_name, component_kwargs, config_hash, train_config
from mtlbench.convergence import assess_history
from mtlbench.data import DatasetBundle, iterate_batches
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
from mtlbench.tasks import TaskSpec
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


def build(cfg: dict[str, Any]) -> tuple[DatasetBundle, MTLArchitecture, UpdateRule]:
    """Dataset, model and update rule of a resolved config; the model's initialisation depends on `seed` only."""
    get_method(cfg["method"])  # registers user components named as package.module:Name
    bundle = load_dataset(cfg)
    seed_everything(cfg["seed"])
    arch_cls = ARCHITECTURES.get(cfg["arch"]["name"])
    model = arch_cls(bundle.tasks, bundle.network, **component_kwargs(cfg["arch"]))
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
    return bundle


def apply_memory_format(model: torch.nn.Module, memory_format: str, device: torch.device) -> None:
    """`train.memory_format`: conv weights (4-D parameters) in channels_last, which the convolutions then
    keep for their activations; other parameters are untouched."""
    if memory_format == "channels_last" or (memory_format == "auto" and device.type == "cpu"):
        model.to(memory_format=torch.channels_last)


def make_optimizer(params: list[dict[str, Any]], tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "adam":
        return torch.optim.Adam(params, lr=tc.lr, weight_decay=tc.weight_decay)
    return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)


@torch.no_grad()
def evaluate(
    model: MTLArchitecture, data: Any, tasks: list[TaskSpec], batch_size: int, device: torch.device
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Exact split metrics per task, and the mean loss per task (weighted by labelled-batch size)."""
    model.eval()
    evaluators = [t.evaluator() for t in tasks]
    loss_sums = [0.0] * len(tasks)
    count = 0
    for x, targets in iterate_batches(data, max(batch_size, 0) or 1024, False, None, device):
        outputs = model(x)
        losses = task_losses(outputs, targets, tasks)
        for i, (ev, out, tgt) in enumerate(zip(evaluators, outputs, targets, strict=True)):
            ev.update(out, tgt)
            loss_sums[i] += float(losses[i]) * len(x)
        count += len(x)
    model.train()
    return {t.name: ev.compute() for t, ev in zip(tasks, evaluators, strict=True)}, [s / count for s in loss_sums]


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


def full_state(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's content: built now from the loop's `build`, or as loaded from disk."""
    return state["build"]() if "build" in state else state


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
        state, read = None, path
        for candidate in (path, previous):
            if not candidate.exists():
                continue
            try:
                state, read = torch.load(candidate, map_location="cpu", weights_only=True), candidate
                break
            except Exception as exc:  # noqa: BLE001 - torch reports a damaged file in several types
                fallback = (
                    "the previous checkpoint"
                    if candidate == path and previous.exists()
                    else "the start (the run is trained again)"
                )
                print(
                    f"warning: {candidate} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); resuming from "
                    f"{fallback}",
                    file=sys.stderr,
                )
        if state is None:
            return None
        if state["config_hash"] != self.hash:
            stale = " and ".join(str(p) for p in (path, previous) if p.exists())
            raise MtlbenchError(
                f"{read} belongs to a run with another config (hash {state['config_hash']}, this one {self.hash}); "
                f"delete {stale} to start over, or choose another --out"
            )
        return state

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        """`state` holds the epoch and status, and `build`, which makes the full state: it is called only when
        a checkpoint is written (at most one per `checkpoint_every_s`), never on the epochs in between."""
        if not self.tc.checkpoint:
            return
        last = state["epoch"] >= self.total_epochs or state["status"] != "ok"
        now = time.monotonic()
        if not last and now - getattr(self, "_last_save", -math.inf) < self.tc.checkpoint_every_s:
            return
        self._last_save = now
        with self.clock("checkpoints"):
            self._write_checkpoint(full_state(state))

    def _write_checkpoint(self, state: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        try:
            torch.save(state, tmp)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError of its writer
            tmp.unlink(missing_ok=True)
            raise MtlbenchError(
                f"cannot write the checkpoint {tmp} ({exc}); is the disk full? Nothing was lost: the run resumes "
                f"from its last checkpoint when rerun"
            ) from None
        if path.exists():  # kept until the new one is in place: a damaged newest checkpoint has a fallback
            os.replace(path, self.out / PREVIOUS_CHECKPOINT)
        os.replace(tmp, path)

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self) -> RunRecord:
        global _FIRST_RUN_IN_PROCESS
        cfg, tc = self.cfg, self.tc
        clock = self.clock = Stopwatch()
        started_at = time.time()
        if _FIRST_RUN_IN_PROCESS:  # interpreter and imports: paid once per process, by its first run
            clock.seconds["startup"] = process_age()
            _FIRST_RUN_IN_PROCESS = False
        self.out.mkdir(parents=True, exist_ok=True)
        device = resolve_device(tc.device)
        torch.set_num_threads(tc.threads)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        state = self._load_checkpoint()
        if state is not None and state.get("record_text"):
            # a finished run (its record deleted, or removed by Snakemake before rerunning the job of its
            # seed group): the record comes back byte for byte, so tracking by record hash knows it
            write_text_atomic(self.out / RECORD, state["record_text"])
            record = RunRecord.from_json(json.loads(state["record_text"]), str(self.out / RECORD))
            if self.tracking.enabled and self.tracking.live:  # a kill may have left its MLflow run open
                track_finished(self.tracking, record, self.out / RECORD, run_key(self.out, self.hash))
            return record
        with clock("data"):
            load_dataset(cfg)
        with clock("build"):
            bundle, model, rule = build(cfg)
        total = self.total_epochs = plan_epochs(rule, tc.epochs, cfg["method"])
        first_active = check_budget(rule, total, cfg["method"])
        tasks = bundle.tasks
        model.to(device)
        apply_memory_format(model, tc.memory_format, device)
        train_all = bundle.train.to(device) if hasattr(bundle.train, "to") else bundle.train
        train_carved = rule.prepare(train_all)  # what is left after a hold-out, for the stages that use one

        def fresh_optimizer():
            opt = make_optimizer(model.param_groups(tc.lr), tc)
            return opt, torch.optim.lr_scheduler.StepLR(opt, tc.lr_step, tc.lr_gamma) if tc.lr_step > 0 else None

        optimizer, scheduler = fresh_optimizer()

        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"epoch": -1, "score": math.inf, "model": None, "val": None}
        timing: dict[str, Any] = {"train_seconds": 0.0, "step_seconds": 0.0, "steps": 0, "epoch_seconds": []}
        start_epoch, status, run_id = 0, "ok", None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            rule.load_state_dict(state["rule"])
            history, best = json.loads(state["history"]), state["best"]
            timing = json.loads(state["timing"])
            start_epoch, status, run_id = state["epoch"], state["status"], state["mlflow_run_id"]
            torch.set_rng_state(state["rng"])

        name = run_name(cfg)
        every = log_every(self.tracking.log_every, total)
        with clock("tracking"):
            tracker = TimedTracker(make_tracker(self.tracking, name, run_id, run_key(self.out, self.hash)), clock)
        # idempotent on a reopened run; a new one (a replaced database) gets the epochs it lacks from the history
        tracker.log_params(run_params(cfg, self.hash))
        tracker.set_tags(run_tags(cfg))
        log_history(
            tracker, [t.name for t in bundle.tasks], history, timing["epoch_seconds"], total, every, status != "ok"
        )

        show = tc.progress == "on" or (tc.progress == "auto" and sys.stderr.isatty())
        bar = tqdm(range(start_epoch, total), desc=name, disable=not show, initial=start_epoch, total=total)
        for epoch in bar:
            if status != "ok":
                break
            reinitialised = rule.on_epoch_start(epoch)
            if reinitialised or rule.staging.restarts_at(epoch):
                optimizer, scheduler = fresh_optimizer()
            model.train()
            generator = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch)
            loss_sum = torch.zeros(len(tasks), device=device)
            n_batches = 0
            epoch_start = time.perf_counter()
            train_data, batch_size = epoch_data(rule.staging.stage_at(epoch).stage, train_all, train_carved, tc)
            for x, targets in iterate_batches(train_data, batch_size, True, generator, device):
                step_start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                losses = check_losses(rule.backward(x, targets), len(tasks), rule)
                optimizer.step()
                rule.after_step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                timing["step_seconds"] += time.perf_counter() - step_start
                timing["steps"] += 1
                loss_sum += losses
                n_batches += 1
            if scheduler is not None:
                scheduler.step()
            epoch_seconds = time.perf_counter() - epoch_start
            timing["epoch_seconds"].append(epoch_seconds)
            timing["train_seconds"] += epoch_seconds
            self.on_epoch(epoch + 1, total)
            train_losses = (loss_sum / max(n_batches, 1)).tolist()
            with clock("validation"):
                val, val_losses = evaluate(model, bundle.val, tasks, tc.batch_size, device)
            entry = {
                "epoch": epoch,
                "train_loss": train_losses,
                "val": val,
                "val_loss": val_losses,
                **({"rule": rule.epoch_log()} if rule.epoch_log() else {}),
            }
            history.append(entry)
            check_method_state(model, rule, first=epoch == start_epoch)
            if not (_finite(train_losses) and _finite(val_losses)):
                status = "diverged"
            else:
                score = selection_score(tc, val, val_losses, tasks)
                if epoch >= first_active and score < best["score"]:
                    best = {
                        "epoch": epoch,
                        "score": score,
                        "val": val,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    }
            if is_logged_epoch(epoch, total, every, status != "ok"):
                tracker.log_metrics(epoch_metrics([t.name for t in tasks], entry, epoch_seconds), step=epoch)
            state = {
                "epoch": epoch + 1,
                "status": status,
                "build": lambda epoch=epoch, status=status, optimizer=optimizer, scheduler=scheduler, best=best: {
                    "config_hash": self.hash,
                    "epoch": epoch + 1,
                    "status": status,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    # plain data as JSON text: one string pickles far faster than thousands of small objects
                    "rule": rule.state_dict(),
                    "history": json.dumps(history),
                    "best": best,
                    "timing": json.dumps(timing),
                    "rng": torch.get_rng_state(),
                    "mlflow_run_id": tracker.run_id,
                },
            }
            if epoch + 1 < total and status == "ok":  # the final checkpoint is written once, with the record
                self._save_checkpoint(state)
        bar.close()

        if status == "ok" and best["model"] is None:  # no selectable epoch ran: never report it as this method
            status = "incomplete"
        finalise_start = time.perf_counter()
        final = None
        if tc.checkpoint and state is not None:  # the last weights, copied: _record loads the best into the model
            final = full_state(state)
            final = {**final, "model": {k: v.detach().clone() for k, v in final["model"].items()}}
        with clock("finalise"):
            record = self._record(bundle, model, rule, device, status, history, best, timing, tracker.run_id)
            diverged_if_unaggregatable(record)
            record.schedule = Schedule(total, first_active, rule.staging.summary())
            record.convergence = assess_history(history, first_active) if status == "ok" else None
            clock.seconds["training"] = sum(timing["epoch_seconds"][start_epoch:])
            clock.seconds["finalise"] = time.perf_counter() - finalise_start  # up to here: test metrics, record
            record.timing.breakdown = dict(clock.seconds)
            record.timing.started_at, record.timing.ended_at = started_at, time.time()
            record.timing.process = Process(os.getpid(), PROCESS_STARTED_AT, tc.threads)
            text = record.write(self.out / RECORD)
            if final is not None:  # the final checkpoint keeps the record's exact text
                with clock("checkpoints"):
                    self._write_checkpoint({**final, "record_text": text})
        tracker.log_final(final_metrics(record), step=total)
        tracker.log_artifact(self.out / "record.json")
        tracker.finish(final_status(record.status))
        return record

    def _record(
        self,
        bundle: DatasetBundle,
        model: MTLArchitecture,
        rule: UpdateRule,
        device: torch.device,
        status: str,
        history: list[dict[str, Any]],
        best: dict[str, Any],
        timing: dict[str, Any],
        run_id: str | None,
    ) -> RunRecord:
        tasks, tc = bundle.tasks, self.tc
        metrics = Metrics()
        method_state = {**model.method_state(), **rule.method_state()}
        if status == "ok" and best["model"] is not None:
            metrics.test_last, _ = evaluate(model, bundle.test, tasks, tc.batch_size, device)
            model.load_state_dict(best["model"])
            metrics.val = best["val"]
            metrics.test, _ = evaluate(model, bundle.test, tasks, tc.batch_size, device)
            method_state = {**model.method_state(), **rule.method_state()}
        epochs_done = len(timing["epoch_seconds"])
        memory, memory_kind = peak_memory(device)
        n_params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in rule.parameters())
        return RunRecord(
            dataset=self.cfg["dataset"]["name"],
            method=self.cfg["method"],
            seed=self.cfg["seed"],
            data_seed=self.cfg["data_seed"],
            config=self.cfg,
            config_hash=self.hash,
            status=status,
            selected_epoch=best["epoch"] if status == "ok" else None,
            epochs_completed=len(history),
            metrics=metrics,
            directions={t.name: t.directions() for t in tasks},
            timing=Timing(
                train_seconds=timing["train_seconds"],
                seconds_per_epoch=timing["train_seconds"] / epochs_done if epochs_done else None,
                seconds_per_step=timing["step_seconds"] / timing["steps"] if timing["steps"] else None,
                steps=timing["steps"],
                epoch_seconds=timing["epoch_seconds"],
            ),
            params=Params(total=n_params, inference=model.inference_parameter_count()),
            peak_memory_mb=memory,
            peak_memory_kind=memory_kind,
            versions=versions(),
            git_commit=git_commit(),
            device=str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
            host=host_info(),
            method_state=cast(MethodState, method_state),
            history=cast(list[EpochEntry], history),
            task_info=bundle.info,
            mlflow_run_id=run_id,
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
