"""MLflow tracking through `MlflowClient` (no global state), with a no-op twin when tracking is off.

SQLite allows one writer at a time; parallel pipeline jobs therefore (1) find the database already created
by `mtlbench tracking init` (schema migrations are the one step that must not race) and (2) retry a write
that meets a locked database, so no run is lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mtlbench.config import TrackingConfig

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


def init_store(cfg: TrackingConfig) -> str:
    """Create the tracking database and experiment once, before parallel jobs start. Returns the experiment id."""
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(cfg.uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = _retry(lambda: MlflowClient(tracking_uri=cfg.uri))
    return _experiment_id(client, cfg)


def _experiment_id(client: Any, cfg: TrackingConfig) -> str:
    def get_or_create() -> str:
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is not None:
            return exp.experiment_id
        location = Path(cfg.artifacts).resolve()
        location.mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(cfg.experiment, artifact_location=location.as_uri())
        except Exception:  # another process created it in between
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    return _retry(get_or_create)


class Tracker:
    """One MLflow run. `run_id` lets a resumed training continue the run it started.

    Per-epoch metrics are buffered and written in batches (every `flush_seconds`, and at the end): one
    SQLite transaction per epoch would cost more than a tier-0 epoch itself."""

    flush_seconds = 10.0

    def __init__(self, cfg: TrackingConfig, run_name: str, run_id: str | None = None):
        from mlflow.tracking import MlflowClient

        init_store(cfg)
        self.client = _retry(lambda: MlflowClient(tracking_uri=cfg.uri))
        experiment = _experiment_id(self.client, cfg)
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        if run_id is not None:
            self.run_id = run_id
        else:
            run = _retry(lambda: self.client.create_run(experiment, run_name=run_name))
            self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            _retry(lambda s=start: self.client.log_batch(self.run_id, params=items[s : s + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            _retry(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c))
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        _retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_artifact(self, path: Path) -> None:
        _retry(lambda: self.client.log_artifact(self.run_id, str(path)))

    def finish(self, status: str) -> None:
        self.flush()
        _retry(lambda: self.client.set_terminated(self.run_id, status))


class NullTracker:
    """Tracking switched off (`tracking.enabled=false`)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def flush(self) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: Path) -> None: ...
    def finish(self, status: str) -> None: ...


def make_tracker(cfg: TrackingConfig, run_name: str, run_id: str | None = None) -> Tracker | NullTracker:
    return Tracker(cfg, run_name, run_id) if cfg.enabled else NullTracker()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
