"""The methods zoo (issue 17): a method is one file, found without a central list, and at least 25 methods
are registered (each trains on both tier-0 datasets in tests/test_all_methods.py)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from mtlbench.registry import METHODS, UPDATE_RULES
from tests.conftest import ROOT
from tests.test_pipeline import TINY, snakemake

PROBE = '''"""A probe method for tests/test_zoo.py: the task losses times a constant."""

import torch

from mtlbench.method import rule_method
from mtlbench.update_rules import LossWeighting


@rule_method("probe_scaled_sum", "Probe: the task losses times rule.scale")
class ProbeScaledSum(LossWeighting):
    def __init__(self, scale: float = 0.5):
        self.scale = scale

    def weighted_loss(self, losses):
        weights = torch.full((len(self.tasks),), self.scale)
        self.weight_log.add(weights)
        return (weights.to(losses) * losses).sum()
'''


def test_at_least_25_methods_each_with_its_rule_registered_once():
    names = METHODS.names()
    assert len(names) >= 25, names
    for name in names:
        spec = METHODS.get(name)
        assert spec.name == name
        if spec.update_rule in UPDATE_RULES and spec.update_rule == name:
            assert UPDATE_RULES.get(name).name == name  # the rule's name comes from its one registration


def test_a_new_file_under_methods_is_listed_trained_and_tabled_with_no_other_edit(tmp_path):
    path = ROOT / "methods" / "probe_scaled_sum.py"
    path.write_text(PROBE)
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "mtlbench", "list"], capture_output=True, text=True, cwd=ROOT, timeout=300
        )
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert "probe_scaled_sum" in listed.stdout and "rule.scale: float = 0.5" in listed.stdout
        config = {**TINY, "datasets": ["synthetic_relations"], "methods": ["stl", "hps", "probe_scaled_sum"]}
        result = snakemake(tmp_path, config=config)
        assert result.returncode == 0, result.stderr[-4000:]
    finally:
        path.unlink()
    board = pd.read_csv(tmp_path / "results" / "tables" / "leaderboard.csv")
    assert "probe_scaled_sum" in set(board.method)
    assert "probe_scaled_sum" in set(pd.read_csv(tmp_path / "results" / "tables" / "significance.csv").method)


def test_the_zoo_config_runs_every_registered_method():
    import re

    import yaml

    zoo = yaml.safe_load((ROOT / "config" / "zoo.yaml").read_text())
    assert sorted(zoo["methods"]) == METHODS.names()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/zoo.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"train_run\s+{2 * len(zoo['methods'])}\b", result.stdout), result.stdout[-2000:]
