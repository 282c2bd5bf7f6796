"""Bad input gets one clear message and loses nothing; faults lose nothing (issue 13's probes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from mtlbench.cli import main
from mtlbench.config import resolve_config
from mtlbench.params import coerce
from mtlbench.record import RunRecord
from mtlbench.training import CHECKPOINT, Trainer, train

CALLED = Path(__file__).with_name(".called-by-mtlbench")


def not_a_method():
    """Importable, callable, and not a method: naming it must never call it."""
    CALLED.write_text("called")


def _one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("method", ["tests.test_robustness:not_a_method", "os:system", "../../x:Y", "builtins:print"])
def test_a_method_name_never_calls_what_it_names(tmp_path, capsys, method):
    CALLED.unlink(missing_ok=True)
    for argv in (
        ["--method", method],
        ["--method", "hps", "--set", f"rule.name={method}"],
        ["--method", "hps", "--set", f"arch.name={method}"],
    ):
        err = _one_error_line(
            capsys,
            ["train", "--dataset", "synthetic_relations", *argv, "--no-tracking", "--out", str(tmp_path / "run")],
        )
        assert "package.module:Name" in err or "is not usable as" in err
    assert not CALLED.exists()


TINY = ["--dataset", "synthetic_relations", "--method", "hps", "--no-tracking", "--epochs", "2"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "dataset.n_train=0"], "the train split of 'synthetic_relations' is empty"),
        (["--set", "dataset.n_test=-4"], "cannot be built with these settings"),
        (["--set", "train.device=tpu"], "train.device='tpu' is not a device"),
        (["--set", "train.threads=0"], "train.threads: must be >= 1"),
        (["--out", "/sys/mtlbench-run"], "/sys/mtlbench-run"),  # a folder nobody may write (root included)
    ],
)
def test_user_mistakes_end_in_one_error_line(tmp_path, capsys, extra, fragment):
    argv = ["train", *TINY, *(["--out", str(tmp_path / "run")] if "--out" not in extra else []), *extra]
    assert fragment in _one_error_line(capsys, argv)


@pytest.mark.parametrize("spelling", ["3e-4", "3E-4", "3.0e-4", ".0003", "0.000_3"])
def test_every_float_spelling_is_a_float(spelling):
    assert coerce("train.lr", spelling, float) == pytest.approx(3e-4)
    assert coerce("rule.lam", spelling, float | None) == pytest.approx(3e-4)
    cfg = resolve_config("synthetic_relations", "hps", 0, {"train.lr": spelling})  # a YAML config's "3e-4"
    assert cfg["train"]["lr"] == pytest.approx(3e-4)
    with pytest.raises(Exception, match="expected int"):
        coerce("train.epochs", "3e-4", int)


# --- MLflow: exactly one run per record, every epoch logged once, whatever was killed or deleted -------------
class Killed(BaseException):
    """Like SIGKILL for the training loop: nothing is cleaned up, nothing buffered is flushed."""


def _live(tmp_path, **extra):
    overrides = {
        "train.epochs": 8,
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.artifacts": str(tmp_path / "artifacts"),
        "tracking.log_every": 1,
        **extra,
    }
    return resolve_config("synthetic_relations", "hps", 0, overrides)


def _runs(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mtlbench")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    return client, runs


_READ_RUNS = """
import json, sys
from mtlbench.record import RunRecord
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.get_experiment_by_name("mtlbench")
print(json.dumps([{"id": r.info.run_id, "status": r.info.status,
                   "val_steps": [m.step for m in client.get_metric_history(r.info.run_id, "val.task01.mse")],
                   "n_test": len(client.get_metric_history(r.info.run_id, "test.task01.mse"))}
                  for r in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)]))
"""


def _run_summaries(tmp_path, fresh_process: bool) -> list[dict]:
    if fresh_process:  # MLflow keeps a process's engine on a database file even after the file is replaced
        out = subprocess.run(
            [sys.executable, "-c", _READ_RUNS, f"sqlite:///{tmp_path / 'mlflow.db'}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        return json.loads(out)
    client, runs = _runs(tmp_path)
    return [
        {
            "id": r.info.run_id,
            "status": r.info.status,
            "val_steps": [m.step for m in client.get_metric_history(r.info.run_id, "val.task01.mse")],
            "n_test": len(client.get_metric_history(r.info.run_id, "test.task01.mse")),
        }
        for r in runs
    ]


def _assert_one_complete_run(tmp_path, epochs=8, fresh_process=False):
    runs = _run_summaries(tmp_path, fresh_process)
    assert len(runs) == 1, runs
    run = runs[0]
    assert run["status"] == "FINISHED"
    assert sorted(run["val_steps"]) == list(range(epochs))  # every epoch, once
    assert run["n_test"] == 1
    record = RunRecord.read(tmp_path / "run" / "record.json")
    assert record.mlflow_run_id == run["id"]


def _kill_when(monkeypatch, target, name, when):
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            monkeypatch.setattr(target, name, original)
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


KILL_POINTS = {
    "before the first checkpoint": (Trainer, "_save_checkpoint", lambda self, run: run.epoch == 1),
    "after a checkpoint, with epochs flushed beyond it": (
        Trainer,
        "_save_checkpoint",
        lambda self, run: run.epoch == 6,
    ),
    "after the record, before the run is finished": (None, "finish", lambda self, status: True),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_run_has_exactly_one_mlflow_run_with_every_epoch_once(tmp_path, monkeypatch, point):
    from mtlbench import tracking

    monkeypatch.setattr(tracking.Tracker, "flush_seconds", 0.0)  # every epoch reaches MLflow at once
    target, name, when = KILL_POINTS[point]
    # checkpoints every 3rd epoch: a kill loses epochs that MLflow already holds, and they are trained again
    cfg = _live(tmp_path, **{"train.checkpoint_every_s": 0.0})
    if point.startswith("after a checkpoint"):
        original = Trainer._save_checkpoint
        monkeypatch.setattr(
            Trainer, "_save_checkpoint", lambda self, run: original(self, run) if run.epoch % 3 == 0 else None
        )
    _kill_when(monkeypatch, target or tracking.Tracker, name, when)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run")
    train(cfg, tmp_path / "run")
    _assert_one_complete_run(tmp_path)
    (tmp_path / "run" / "record.json").unlink()  # deleting the record and rerunning: still one run
    train(cfg, tmp_path / "run")
    _assert_one_complete_run(tmp_path)


def test_a_deleted_tracking_database_never_strands_a_run(tmp_path, monkeypatch):
    cfg = _live(tmp_path)
    _kill_when(monkeypatch, Trainer, "_save_checkpoint", lambda self, run: run.epoch == 5)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run")
    (tmp_path / "mlflow.db").unlink()  # the checkpoint holds a run id the new database lacks
    # the rerun, as a user makes it: a new process (this one keeps MLflow's engine on the deleted file)
    sets = [
        f"{k}={v}"
        for k, v in {
            "train.epochs": 8,
            "tracking.uri": cfg["tracking"]["uri"],
            "tracking.artifacts": cfg["tracking"]["artifacts"],
            "tracking.log_every": 1,
        }.items()
    ]
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlbench",
            "train",
            "--dataset",
            "synthetic_relations",
            "--method",
            "hps",
            "--seed",
            "0",
            "--out",
            str(tmp_path / "run"),
            *[a for kv in sets for a in ("--set", kv)],
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "logging this run anew" in rerun.stderr and "Traceback" not in rerun.stderr
    record = RunRecord.read(tmp_path / "run" / "record.json")
    assert record.status == "ok" and record.epochs_completed == 8
    # the new run has the epochs before the kill too (from the history)
    _assert_one_complete_run(tmp_path, fresh_process=True)


def test_a_store_that_fails_mid_run_leaves_training_untracked_not_dead(tmp_path, monkeypatch, capsys):
    from mtlbench import tracking

    monkeypatch.setattr(tracking.Tracker, "flush_seconds", 0.0)
    calls = {"n": 0}
    original = tracking._retry

    def failing(call, attempts=40):
        calls["n"] += 1
        if calls["n"] > 8:
            raise RuntimeError("sqlite3.OperationalError: no such table: runs")
        return original(call, attempts)

    monkeypatch.setattr(tracking, "_retry", failing)
    record = train(_live(tmp_path), tmp_path / "run")
    assert record.status == "ok" and record.metrics.test
    assert "training continues untracked" in capsys.readouterr().err


# --- corrupt files -------------------------------------------------------------------------------------------
def test_a_corrupt_checkpoint_resumes_from_the_previous_one(tmp_path, monkeypatch, capsys):
    cfg = resolve_config("synthetic_relations", "srdml", 0, {"tracking.enabled": False, "train.epochs": 16})
    whole = train(cfg, tmp_path / "whole")
    _kill_when(monkeypatch, Trainer, "_save_checkpoint", lambda self, run: run.epoch == 14)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run")
    newest = tmp_path / "run" / CHECKPOINT
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a kill during the write
    resumed = train(cfg, tmp_path / "run")
    err = capsys.readouterr().err
    assert f"{newest} is corrupt" in err and "resuming from the previous checkpoint" in err
    assert resumed.metrics == whole.metrics and resumed.history == whole.history
    for name in (CHECKPOINT, "checkpoint.prev.pt"):  # both damaged: the run is trained again, same numbers
        (tmp_path / "run" / name).write_bytes(b"garbage")
    (tmp_path / "run" / "record.json").unlink()
    again = train(cfg, tmp_path / "run")
    assert "the run is trained again" in capsys.readouterr().err and again.metrics == whole.metrics


def test_a_garbage_record_is_named(tmp_path, capsys):
    good = train(
        resolve_config("synthetic_relations", "hps", 0, {"tracking.enabled": False, "train.epochs": 2}), tmp_path / "a"
    )
    assert good.status == "ok"
    bad = tmp_path / "b" / "record.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    err = _one_error_line(
        capsys, ["aggregate", str(tmp_path / "a" / "record.json"), str(bad), "--out", str(tmp_path / "tables")]
    )
    assert str(bad) in err and "delete it and rerun" in err


def test_the_record_says_what_decides_the_last_bits(tmp_path):
    record = train(
        resolve_config(
            "synthetic_relations", "hps", 0, {"tracking.enabled": False, "train.epochs": 2, "train.threads": 2}
        ),
        tmp_path / "a",
    )
    host = record.host
    assert host["threads"] == 2 == record.config["train"]["threads"]
    assert host["cpu"] and {"cpu_capability", "mkl", "mkldnn", "openmp"} <= set(host)
    torch.set_num_threads(1)


def test_rerunning_the_command_completes_a_run_killed_before_it_finished(tmp_path, monkeypatch):
    """The record was written, then the process died before MLflow heard `finish`: the same command (which
    does not retrain an up-to-date record) still completes the MLflow run."""
    from mtlbench import tracking

    argv = [
        "train",
        "--dataset",
        "synthetic_relations",
        "--method",
        "hps",
        "--seed",
        "0",
        "--out",
        str(tmp_path / "run"),
        "--set",
        "train.epochs=8",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "--set",
        f"tracking.artifacts={tmp_path / 'artifacts'}",
        "--set",
        "tracking.log_every=1",
    ]
    _kill_when(monkeypatch, tracking.Tracker, "finish", lambda self, status: True)
    with pytest.raises(Killed):
        main(argv)
    assert _run_summaries(tmp_path, False)[0]["status"] == "RUNNING"
    assert main(argv) == 0
    _assert_one_complete_run(tmp_path)


def test_logging_records_completes_a_run_killed_mid_log(tmp_path, monkeypatch):
    """Deferred tracking: a kill while a record's run is being filled leaves it incomplete; logging again
    completes that run (no duplicate, no epoch twice) instead of skipping it."""
    from mtlbench import tracking
    from mtlbench.config import TrackingConfig

    record = train(
        resolve_config(
            "synthetic_relations", "hps", 0, {"tracking.live": False, "train.epochs": 8, "tracking.log_every": 1}
        ),
        tmp_path / "run",
    )
    assert record.mlflow_run_id is None
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=str(tmp_path / "artifacts"), log_every=1)
    monkeypatch.setattr(tracking.Tracker, "flush_seconds", 0.0)
    calls = {"n": 0}
    original = tracking.Tracker.log_metrics

    def dying(self, metrics, step):
        calls["n"] += 1
        if calls["n"] == 4:  # part of the history is in MLflow
            raise Killed
        return original(self, metrics, step)

    monkeypatch.setattr(tracking.Tracker, "log_metrics", dying)
    with pytest.raises(Killed):
        tracking.log_records(cfg, [tmp_path / "run" / "record.json"])
    monkeypatch.setattr(tracking.Tracker, "log_metrics", original)
    runs = tracking.log_records(cfg, [tmp_path / "run" / "record.json"])
    summaries = _run_summaries(tmp_path, False)
    assert len(summaries) == 1 and summaries[0]["status"] == "FINISHED" and summaries[0]["id"] in runs.values()
    assert sorted(summaries[0]["val_steps"]) == list(range(8)) and summaries[0]["n_test"] == 1
