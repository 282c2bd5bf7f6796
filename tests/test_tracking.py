"""MLflow tracking on a real sqlite store: parallel runs must all arrive."""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from tests.conftest import run_cli


def test_parallel_runs_are_all_tracked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init = run_cli("tracking", "init", "--uri", uri, "--experiment", "par", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    n_runs = 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mtlbench", "train", "--dataset", "synthetic_relations", "--method", "hps",
             "--seed", str(seed), "--out", str(tmp_path / f"run{seed}"), "--epochs", "15",
             "--set", f"tracking.uri={uri}", "--set", "tracking.experiment=par",
             "--set", f"tracking.artifacts={tmp_path / 'artifacts'}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for seed in range(n_runs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("par")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == n_runs
    assert {r.data.tags["seed"] for r in runs} == {str(s) for s in range(n_runs)}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val.task01.mse")) == 15  # log_every: auto -> 1
        assert "test.task01.mse" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["record.json"]
