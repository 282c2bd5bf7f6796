"""The code checks run once, here, so CI enforces them (issue 17.7): ruff's lint and formatting, and mypy
over the packages (configured in pyproject.toml; .pre-commit-config.yaml runs the same before a commit)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]])
def test_code_checks_pass(command):
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


ANALYSIS_MODULES = [
    "mtlbench/analysis_settings.py",
    "mtlbench/aggregate.py",
    "mtlbench/claims.py",
    "mtlbench/claims_file.py",
    "mtlbench/machines.py",
    "mtlbench/official.py",
    "mtlbench/protocols.py",
    "mtlbench/robustness.py",
    "mtlbench/convergence.py",
    "mtlbench/efficiency.py",
    "mtlbench/figures.py",
    "mtlbench/pipeline.py",
    "mtlbench/progress.py",
    "mtlbench/published.py",
    "mtlbench/report_tables.py",
    "mtlbench/stats.py",
    "mtlbench/tables.py",
]


def test_the_analysis_modules_keep_every_function_at_complexity_10_or_less():
    """Issue 24: small functions on the analysis side (McCabe complexity <= 10, as ruff's C901 counts it)."""
    command = ["ruff", "check", "--select", "C901", "--config", "lint.mccabe.max-complexity=10", *ANALYSIS_MODULES]
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]


TRAINING_MODULES = [
    "mtlbench/training.py",
    "mtlbench/update_rules.py",
    "mtlbench/regularisers.py",
    "mtlbench/task_kinds.py",
    "mtlbench/tasks.py",
    "mtlbench/holdout.py",
    "mtlbench/host_reads.py",
    "methods",
    "baselines",
]


def test_the_training_core_and_the_rules_keep_every_function_at_complexity_10_or_less():
    """Issue 25: the loop in small parts (McCabe complexity <= 10 in training and every rule), and no function of
    the loop over about 40 lines."""
    import ast

    command = ["ruff", "check", "--select", "C901", "--config", "lint.mccabe.max-complexity=10", *TRAINING_MODULES]
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    tree = ast.parse((ROOT / "mtlbench" / "training.py").read_text())
    long = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno >= 45]
    assert not long, f"functions of the training loop over 45 lines: {long}"
