"""MLflow tracking through `MlflowClient` (no global state), with a no-op twin when tracking is off.

SQLite allows one writer at a time; parallel pipeline jobs therefore (1) find the database already created
by `mtlbench tracking init` (schema migrations are the one step that must not race) and (2) retry a write
that meets a locked database, so no run is lost.

Two ways to track, with the same content (the functions `run_params` ... `final_metrics` are the one
definition of what an MLflow run holds):
- live (`tracking.live=true`): the training process logs while it trains;
- from the record (`tracking.live=false`): `log_records` logs finished run records afterwards, in one process
  for all runs. Importing MLflow and opening the store costs a few seconds per process, which dominates a
  tier-0 job; the default pipeline therefore tracks its many short runs this way.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from mtlbench.config import TrackingConfig
from mtlbench.record import RunRecord

R = TypeVar("R")


def _retry(call: Callable[[], R], attempts: int = 40) -> R:
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - MLflow wraps SQLAlchemy errors in several types
            text = str(exc).lower()
            transient = "locked" in text or "busy" in text or "unique constraint" in text
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.05 + random.random() * 0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def runs_table_url(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's runs table of an experiment (MLflow 3 opens an experiment on its GenAI overview)."""
    return f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def init_store(cfg: TrackingConfig) -> str:
    """Create the tracking database and experiment once, before parallel jobs start. Returns the experiment id."""
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(cfg.uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = _retry(lambda: MlflowClient(tracking_uri=cfg.uri))
    return _experiment_id(client, cfg)


# MLflow 3's UI opens an experiment by its kind: without this tag it shows the GenAI overview (traces, an
# assistant) instead of the training runs
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client: Any, cfg: TrackingConfig) -> str:
    def get_or_create() -> str:
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is not None:
            if exp.tags.get("mlflow.experimentKind") is None:
                for key, value in EXPERIMENT_KIND.items():
                    client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = Path(cfg.artifacts).resolve()
        location.mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(cfg.experiment, artifact_location=location.as_uri(), tags=EXPERIMENT_KIND)
        except Exception:  # another process created it in between
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    return _retry(get_or_create)


RUN_KEY_TAG = "mtlbench_run_key"


class TrackingUnavailable(Exception):
    """The tracking store failed in a way retrying does not fix (deleted, unreachable, corrupt)."""


class Tracker:
    """One MLflow run per run record, whatever was killed, deleted or replaced.

    The run is found again by its run key (the run directory and config hash, a tag): a resumed or restarted
    training reopens it (also an orphan left RUNNING by a kill), and a replaced database gets a new one. On
    opening, the steps already logged are read back, so no epoch is logged twice and the caller can replay
    the epochs the run lacks from the checkpoint's history. A store that fails mid-run never stops training:
    the run continues untracked, with one warning, and rerunning the command logs what is missing.

    Per-epoch metrics are buffered and written in batches (every `flush_seconds`, and at the end): one
    SQLite transaction per epoch would cost more than a tier-0 epoch itself."""

    flush_seconds = 10.0
    step_metric = "epoch_seconds"  # logged with every epoch: its steps are the epochs MLflow holds

    def __init__(
        self,
        cfg: TrackingConfig,
        run_name: str,
        run_id: str | None = None,
        run_key: str | None = None,
        start_time: float | None = None,
    ):
        from mlflow.tracking import MlflowClient

        init_store(cfg)
        self.client = _retry(lambda: MlflowClient(tracking_uri=cfg.uri))
        experiment = _experiment_id(self.client, cfg)
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self.broken = False
        self.run_id = self._open(experiment, run_name, run_id, run_key, start_time)
        run = _retry(lambda: self.client.get_run(self.run_id))
        self.status = run.info.status
        self.logged_metrics = set(run.data.metrics)
        self.logged_steps = (
            {m.step for m in _retry(lambda: self.client.get_metric_history(self.run_id, self.step_metric))}
            if self.step_metric in self.logged_metrics
            else set()
        )

    def _open(
        self, experiment: str, run_name: str, run_id: str | None, run_key: str | None, start_time: float | None
    ) -> str:
        if run_id is not None:
            try:
                return _retry(lambda: self.client.get_run(run_id)).info.run_id
            except Exception:  # noqa: BLE001 - e.g. the database was replaced: find the run by its key, or start one
                warn(f"tracking run {run_id} is not in the store any more (database replaced?): logging this run anew")
        if run_key is not None:
            found = _retry(
                lambda: self.client.search_runs(
                    [experiment], filter_string=f"tags.{RUN_KEY_TAG} = '{run_key}'", max_results=1
                )
            )
            if found:
                return found[0].info.run_id
        tags = {RUN_KEY_TAG: run_key} if run_key is not None else {}
        start = None if start_time is None else int(start_time * 1000)  # a logged record: its training's start
        return _retry(
            lambda: self.client.create_run(experiment, run_name=run_name, tags=tags, start_time=start)
        ).info.run_id

    def _call(self, call: Callable[[], Any]) -> None:
        if self.broken:
            return
        try:
            _retry(call)
        except Exception as exc:  # noqa: BLE001 - whatever the store does, training goes on
            self.broken = True
            warn(
                f"tracking failed ({type(exc).__name__}: {str(exc)[:200]}); training continues untracked — "
                f"rerun the same command afterwards to log this run"
            )

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._call(partial(self.client.log_batch, self.run_id, params=items[start : start + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Per-epoch metrics; an epoch the run already holds is not logged again."""
        from mlflow.entities import Metric

        if step in self.logged_steps:
            return
        self.logged_steps.add(step)
        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """Metrics logged once per run (the test metrics of the selected epoch)."""
        from mlflow.entities import Metric

        if not metrics or set(metrics) <= self.logged_metrics:
            return
        self.logged_metrics |= set(metrics)
        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            self._call(partial(self.client.log_batch, self.run_id, metrics=chunk))
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._call(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_artifact(self, path: Path) -> None:
        self._call(lambda: self.client.log_artifact(self.run_id, str(path)))

    def finish(self, status: str, end_time: float | None = None) -> None:
        self.flush()
        end = None if end_time is None else int(end_time * 1000)
        self._call(lambda: self.client.set_terminated(self.run_id, status, end_time=end))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class RunTracker(Protocol):
    """What the training loop and the loggers call on a tracker (Tracker, the loop's timed one); the bodies do
    nothing, which is NullTracker."""

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        return None

    def flush(self) -> None:
        return None

    def set_tags(self, tags: dict[str, str]) -> None:
        return None

    def log_artifact(self, path: Path) -> None:
        return None

    def finish(self, status: str, end_time: float | None = None) -> None:
        return None


class NullTracker(RunTracker):
    """Tracking switched off (`tracking.enabled=false`): every call of the protocol, doing nothing."""

    run_id: str | None = None


def make_tracker(
    cfg: TrackingConfig, run_name: str, run_id: str | None = None, run_key: str | None = None
) -> Tracker | NullTracker:
    """The live tracker of a training process (a no-op when tracking is off or deferred to the record, and
    when the store cannot be opened: training never waits on tracking)."""
    if not (cfg.enabled and cfg.live):
        return NullTracker()
    try:
        return Tracker(cfg, run_name, run_id, run_key)
    except Exception as exc:  # noqa: BLE001 - an unreachable or broken store must not stop training
        warn(
            f"tracking store {cfg.uri} cannot be opened ({type(exc).__name__}: {str(exc)[:200]}); this run "
            f"continues untracked — rerun the same command afterwards to log it"
        )
        return NullTracker()


# --- what an MLflow run holds: one definition for live tracking and for logging from a record ------------
def run_name(cfg: dict[str, Any]) -> str:
    return f"{cfg['dataset']['name']}/{cfg['method']}/seed{cfg['seed']}"


def run_params(cfg: dict[str, Any], config_hash: str) -> dict[str, Any]:
    return {**flatten({k: v for k, v in cfg.items() if k != "tracking"}), "config_hash": config_hash}


def run_tags(cfg: dict[str, Any]) -> dict[str, str]:
    return {"dataset": cfg["dataset"]["name"], "method": cfg["method"], "seed": str(cfg["seed"])}


def log_every(configured: int, epochs: int) -> int:
    """Per-epoch metrics every k epochs: the configured k (`tracking.log_every`), or ~50 points per metric."""
    return configured or max(1, epochs // 50)


def is_logged_epoch(epoch: int, epochs: int, every: int, run_ended: bool) -> bool:
    return epoch % every == 0 or epoch == epochs - 1 or run_ended


def epoch_metrics(task_names: list[str], entry: dict[str, Any], epoch_seconds: float) -> dict[str, float]:
    """One epoch of the run history as MLflow metrics."""
    return {
        **{f"train_loss.{t}": v for t, v in zip(task_names, entry["train_loss"], strict=True)},
        **{f"val.{k}": v for k, v in flatten(entry["val"]).items()},
        **{f"rule.{k}": v for k, v in flatten(entry.get("rule", {})).items()},
        "epoch_seconds": epoch_seconds,
    }


def final_metrics(record: RunRecord) -> dict[str, float]:
    return {f"test.{k}": v for k, v in flatten(record.metrics.test).items() if isinstance(v, float)}


def final_status(status: str) -> str:
    return "FINISHED" if status == "ok" else "FAILED"


def log_records(cfg: TrackingConfig, paths: list[Path]) -> dict[str, str]:
    """Log finished run records to MLflow; returns record path -> MLflow run id.

    Idempotent, whatever was killed: a record already tracked live carries its run id; any other is opened by a
    run key made of the hash of its bytes, so a run that a kill or a failed store left incomplete is completed
    (steps it holds are not logged again) and a finished one is left as it is. A store that fails ends the
    command with an error, so the pipeline's job fails and its rerun completes the runs."""
    from mlflow.tracking import MlflowClient

    from mtlbench.errors import MtlbenchError

    init_store(cfg)
    client = _retry(lambda: MlflowClient(tracking_uri=cfg.uri))
    runs: dict[str, str] = {}
    for path in paths:
        raw = Path(path).read_bytes()
        record = RunRecord.from_json(json.loads(raw), str(path))
        if record.mlflow_run_id and _run_exists(client, record.mlflow_run_id):
            runs[str(path)] = record.mlflow_run_id
            continue
        try:
            tracker = Tracker(
                cfg,
                run_name(record.config),
                run_key="record-" + hashlib.sha256(raw).hexdigest(),
                start_time=record.timing.started_at,
            )
        except Exception as exc:  # noqa: BLE001 - an unreachable or broken store: one message, the job fails
            raise MtlbenchError(
                f"tracking store {cfg.uri} cannot log {path} ({type(exc).__name__}: "
                f"{str(exc)[:200]}); rerun to complete it"
            ) from None
        if tracker.status != "FINISHED":
            _log_run(tracker, record, Path(path))
        if tracker.broken:
            raise MtlbenchError(f"tracking {path} in {cfg.uri} failed; rerun to complete it (nothing is logged twice)")
        runs[str(path)] = tracker.run_id
    return runs


def log_delta_m(cfg: TrackingConfig, runs: dict[str, str], delta_m_csv: Path, reference: str) -> int:
    """Log each run's Delta_m (% against `reference` trained on the same seed, `delta_m.csv`) to its MLflow run
    as `test.delta_m`, with the reference as a tag: known only once the runs it compares have finished, so the
    pipeline logs it after the tables. Idempotent (a run that holds the value is left alone); returns how many
    runs were updated."""
    import pandas as pd
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    table = pd.read_csv(delta_m_csv).set_index(["dataset", "method", "seed"]).delta_m
    client = _retry(lambda: MlflowClient(tracking_uri=cfg.uri))
    updated = 0
    for path, run_id in runs.items():
        record = RunRecord.read(Path(path))
        key = (record.dataset, record.method, int(record.seed))
        # a protocol's or a choice value's run (record.variant) has no row in delta_m.csv
        if record.variant or key not in table.index or not math.isfinite(float(table[key])):
            continue
        value = float(table[key])
        held = _retry(partial(client.get_run, run_id)).data.metrics.get("test.delta_m")
        if held is not None and math.isclose(held, value, rel_tol=1e-9, abs_tol=1e-12):
            continue
        metric = Metric("test.delta_m", value, int(time.time() * 1000), record.epochs_planned)
        _retry(partial(client.log_batch, run_id, metrics=[metric], tags=[RunTag("delta_m.reference", reference)]))
        updated += 1
    return updated


def track_finished(cfg: TrackingConfig, record: RunRecord, path: Path, key: str) -> None:
    """Bring a finished record's live MLflow run up to date (idempotent: what the run holds is not logged again)."""
    _log_run(make_tracker(cfg, run_name(record.config), record.mlflow_run_id, key), record, path)


def _log_run(tracker: RunTracker, record: RunRecord, path: Path) -> None:
    """A finished record's parameters, tags, history, test metrics and file (steps the run holds are skipped)."""
    tracker.log_params(run_params(record.config, record.config_hash))
    tracker.set_tags(run_tags(record.config))
    _log_history(tracker, record)
    tracker.log_final(final_metrics(record), step=record.epochs_planned)
    tracker.log_artifact(path)
    tracker.finish(final_status(record.status), end_time=record.timing.ended_at)  # the training's own end


def _run_exists(client: Any, run_id: str) -> bool:
    try:
        _retry(lambda: client.get_run(run_id))
        return True
    except Exception:  # noqa: BLE001 - not found (a replaced database) or unreadable: log the record anew
        return False


def _log_history(tracker: RunTracker, record: RunRecord) -> None:
    epochs = record.epochs_planned
    every = log_every(record.config.get("tracking", {}).get("log_every", 0), epochs)
    seconds = record.timing.epoch_seconds or [float("nan")] * len(record.history)
    history = cast(list[dict[str, Any]], record.history)
    log_history(tracker, list(record.directions), history, seconds, epochs, every, not record.ok)


def log_history(
    tracker: RunTracker,
    task_names: list[str],
    history: list[dict[str, Any]],
    epoch_seconds: list[float],
    epochs: int,
    every: int,
    ended: bool,
) -> None:
    """The logged epochs of a run's history (those the MLflow run already holds are skipped by the tracker)."""
    for i, (entry, seconds) in enumerate(zip(history, epoch_seconds, strict=True)):
        if is_logged_epoch(entry["epoch"], epochs, every, ended and i == len(history) - 1):
            tracker.log_metrics(epoch_metrics(task_names, entry, seconds), step=entry["epoch"])


def run_key(out: Path, config_hash: str) -> str:
    """What identifies a run record's MLflow run: its directory and config."""
    return hashlib.sha256(f"{Path(out).resolve()}|{config_hash}".encode()).hexdigest()[:32]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
