from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A MultiMNIST small enough for a 2-core machine: a few hundred pairs, a couple of epochs.
TINY_MULTIMNIST = {
    "dataset.n_train": 512,
    "dataset.n_val": 128,
    "dataset.n_test": 128,
    "train.batch_size": 64,
    "train.epochs": 2,
    "tracking.enabled": False,
}
TINY_SYNTHETIC = {"train.epochs": 20, "tracking.enabled": False}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mtlbench", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def tiny_multimnist() -> dict:
    return dict(TINY_MULTIMNIST)


@pytest.fixture
def tiny_synthetic() -> dict:
    return dict(TINY_SYNTHETIC)


def scored_records(shifts: dict[str, float], seeds: int = 4) -> list:
    """Run records of dataset d: per method and seed, two tasks with one score each (higher is better), each
    method's scores offset from 0.5 by its shift, with noise (seeded)."""
    import numpy as np

    from mtlbench.record import RunRecord

    rng, records = np.random.default_rng(0), []
    for method, shift in shifts.items():
        for seed in range(seeds):
            m = {t: {"score": float(0.5 + shift + 0.05 * rng.standard_normal())} for t in ("t1", "t2")}
            records.append(
                RunRecord.from_json(
                    {
                        "dataset": "d",
                        "method": method,
                        "seed": seed,
                        "status": "ok",
                        "metrics": {"val": m, "test": m},
                        "directions": {t: {"score": True} for t in m},
                        "config": {"method": method, "seed": seed, "train": {"epochs": 10}},
                    }
                )
            )
    return records
