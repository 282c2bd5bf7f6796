"""The tiny pipeline through Snakemake's SLURM executor on a real single-node SLURM (tests/cluster/).

Skipped, with the reason, where no cluster answers; `.ci/run` starts one before the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_pipeline import TINY


def _cluster_state() -> str | None:
    if shutil.which("sinfo") is None:
        return None
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.mark.slurm
def test_tiny_pipeline_runs_through_slurm(tmp_path):
    state = _cluster_state()
    if state not in ("idle", "mixed", "allocated"):
        pytest.skip(
            f"no SLURM cluster answers here (sinfo state: {state!r}); start one with tests/cluster/start_slurm.sh"
        )
    # live tracking here (as on a real cluster): the jobs log to MLflow while they run
    config = {**TINY, "datasets": ["synthetic_relations"], "tracking": {"live": True}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--workflow-profile",
        str(ROOT / "workflow/profiles/slurm"),
        "--jobs",
        "2",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--set-resources",
        "train_run:gpu=0",  # the CI node has no GPU; the profile asks for one
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=1000",
        "runtime=10",
    ]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1200,
        env={**os.environ, "MTLBENCH_SLURM_PARTITION": "debug"},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]

    # the same outputs as the local run
    metrics = pd.read_csv(tmp_path / "results" / "tables" / "metrics.csv")
    assert len(metrics[["method", "seed"]].drop_duplicates()) == 4
    assert (metrics[(metrics.metric == "delta_m") & (metrics.method == "stl")].value == 0).all()
    for name in ("summary.md", "significance.csv", "safeness.csv", "efficiency.csv"):
        assert (tmp_path / "results" / "tables" / name).exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mtlbench").experiment_id])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)

    # and the training jobs went through SLURM: finished jobs stay in squeue (MinJobAge) without accounting
    history = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i %T %k"], capture_output=True, text=True, timeout=30
    ).stdout
    train_jobs = [line for line in history.splitlines() if "train_run" in line]
    assert len(train_jobs) >= 4, history
    assert all(" COMPLETED " in f" {line} " for line in train_jobs), history
