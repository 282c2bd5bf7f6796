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
