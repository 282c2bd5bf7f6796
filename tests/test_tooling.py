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
