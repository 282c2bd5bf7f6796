"""MLflow tracking on a real sqlite store: parallel runs must all arrive."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mtlbench.record import RunRecord
from tests.conftest import ROOT, run_cli


def test_parallel_runs_are_all_tracked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    init = run_cli("tracking", "init", "--uri", uri, "--experiment", "par", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    n_runs = 4
    procs = [
        subprocess.Popen(
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
                str(seed),
                "--out",
                str(tmp_path / f"run{seed}"),
                "--epochs",
                "15",
                "--set",
                f"tracking.uri={uri}",
                "--set",
                "tracking.experiment=par",
                "--set",
                f"tracking.artifacts={tmp_path / 'artifacts'}",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for seed in range(n_runs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("par")
    # MLflow 3's UI opens it on its training runs, not on the GenAI overview (issue 16.7)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == n_runs
    assert {r.data.tags["seed"] for r in runs} == {str(s) for s in range(n_runs)}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val.task01.mse")) == 15  # log_every: auto -> 1
        assert "test.task01.mse" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["record.json"]


def _run_content(client, run_id):
    """Everything a run holds except its identity and wall-clock times."""
    run = client.get_run(run_id)
    histories = {key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)] for key in run.data.metrics}
    identity = ("record_sha256", "mtlbench_run_key")  # how each way finds its run again
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k not in identity}
    return {
        "params": run.data.params,
        "tags": tags,
        "metrics": histories,
        "status": run.info.status,
        "name": run.info.run_name,
        "artifacts": [a.path for a in client.list_artifacts(run_id)],
    }


def test_logging_a_record_gives_the_run_that_live_tracking_gives(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [
        "--set",
        f"tracking.uri={uri}",
        "--set",
        f"tracking.artifacts={tmp_path / 'artifacts'}",
        "--set",
        "tracking.log_every=3",
    ]
    live = run_cli(
        "train",
        "--dataset",
        "synthetic_relations",
        "--method",
        "srdml",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "live"),
        "--epochs",
        "15",
        *sets,
        cwd=tmp_path,
    )
    assert live.returncode == 0, live.stderr
    record = RunRecord.read(tmp_path / "live" / "record.json")
    live_id = record.mlflow_run_id
    # the same record as a run trained with tracking.live=false would have written it
    deferred = tmp_path / "deferred" / "record.json"
    deferred.parent.mkdir()
    deferred.write_text(dataclasses.replace(record, mlflow_run_id=None).text())

    args = [
        "tracking",
        "log",
        str(deferred),
        str(tmp_path / "live" / "record.json"),
        "--uri",
        uri,
        "--out",
        str(tmp_path / "runs.json"),
    ]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert runs[str(tmp_path / "live" / "record.json")] == live_id  # tracked live: not logged twice
    client = MlflowClient(tracking_uri=uri)
    logged = _run_content(client, runs[str(deferred)])
    assert logged == _run_content(client, live_id)
    assert [step for step, _ in logged["metrics"]["val.task01.mse"]] == [0, 3, 6, 9, 12, 14]  # log_every 3, last
    assert any(k.startswith("rule.") for k in logged["metrics"])  # SRDML's relation weights per epoch
    # issue 26.3: a logged record's run spans its training, not the seconds it took to log it
    info = client.get_run(runs[str(deferred)]).info
    assert (info.start_time, info.end_time) == (
        int(record.timing.started_at * 1000),
        int(record.timing.ended_at * 1000),
    )

    again = run_cli(*args, cwd=tmp_path)  # idempotent: the record is found by its hash
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "runs.json").read_text()) == runs
    experiment = client.get_experiment_by_name("mtlbench")
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_deferred_tracking_writes_no_run_until_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(
        "train",
        "--dataset",
        "synthetic_relations",
        "--method",
        "hps",
        "--seed",
        "0",
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "2",
        "--set",
        f"tracking.uri={uri}",
        "--set",
        "tracking.live=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert RunRecord.read(tmp_path / "run" / "record.json").mlflow_run_id is None
    missing = run_cli("tracking", "log", str(tmp_path / "nope.json"), "--uri", uri, cwd=tmp_path)
    assert missing.returncode == 2 and "no run record at" in missing.stderr and "Traceback" not in missing.stderr


def test_tracking_init_prints_the_runs_table_link(tmp_path):
    """Issue 26.3: MLflow 3 opens the experiment on its GenAI overview; README points at the runs table."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli("tracking", "init", "--uri", uri, "--artifacts", str(tmp_path / "a"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("mtlbench").experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning" in result.stdout


# A client that reaches this machine through the name `login-node` (as a compute node reaches a login node):
# only this process's name lookup is changed; the server, the HTTP requests and their Host header are real.
THROUGH_LOGIN_NODE = """
import runpy, socket, sys
lookup = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: lookup("127.0.0.1" if host == "login-node" else host, *a, **k)
sys.argv = ["mtlbench", *sys.argv[1:]]
runpy.run_module("mtlbench", run_name="__main__")
"""


def _documented_server_command(home: Path, port: int) -> list[str]:
    """docs/cluster.md's `mlflow server` command as written, on this port and with $HOME here."""
    block = re.search(
        r"```bash\n(.*?)```", (ROOT / "docs/cluster.md").read_text().split("## Tracking on a cluster")[1], re.S
    )
    assert block is not None
    command = next(c for c in block.group(1).replace("\\\n", " ").splitlines() if c.startswith("mlflow server"))
    command = command.rstrip(" &").replace("$HOME", str(home)).replace("5000", str(port))
    return shlex.split(command)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(server: subprocess.Popen, port: int) -> None:
    for _ in range(240):
        assert server.poll() is None, server.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the MLflow server did not start in 2 minutes")


def _train_through_login_node(tmp_path: Path, port: int) -> subprocess.CompletedProcess:
    sets = [f"tracking.uri=http://login-node:{port}", f"tracking.artifacts={tmp_path / 'a'}", "train.epochs=2"]
    args = ["train", "--dataset", "synthetic_relations", "--method", "stl", "--out", str(tmp_path / "run")]
    return subprocess.run(
        [sys.executable, "-c", THROUGH_LOGIN_NODE, *args, *[x for s in sets for x in ("--set", s)]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


@pytest.mark.parametrize("documented", [True, False])
def test_the_documented_mlflow_server_takes_runs_through_a_host_name(tmp_path, documented):
    """Issue 26.3: docs/cluster.md's recipe was refused by current servers (HTTP 403 "Invalid Host header")."""
    (tmp_path / "mlflow").mkdir()
    port = _free_port()
    command = _documented_server_command(tmp_path, port)
    if not documented:  # the recipe as it was, without --allowed-hosts: the check that this test can fail
        at = command.index("--allowed-hosts")
        command = command[:at] + command[at + 2 :]
    server = subprocess.Popen(
        [*command, "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_until_up(server, port)
        result = _train_through_login_node(tmp_path, port)
        runs = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").search_runs(
            [e.experiment_id for e in MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").search_experiments()]
        )
    finally:
        server.terminate()
        server.communicate(timeout=60)
    if documented:
        assert result.returncode == 0, result.stderr[-3000:]
        assert [run.data.tags["mlflow.runName"] for run in runs] == ["synthetic_relations/stl/seed0"]
        assert runs[0].info.status == "FINISHED"
    else:
        assert "Invalid Host header" in result.stderr + result.stdout
        assert runs == []
