"""The methods zoo (issue 17): a method is one file, found without a central list, and at least 25 methods
are registered (each trains on both tier-0 datasets in tests/test_all_methods.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd

from mtlbench.registry import METHODS, UPDATE_RULES
from tests.conftest import ROOT
from tests.test_pipeline import TINY, snakemake

# docs/adding-a-method.md's built-in example, exactly as written there
PROBE = next(
    block
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "adding-a-method.md").read_text(), flags=re.S)
    if block.startswith("# methods/scaled_sum.py")
)


def test_at_least_25_methods_each_with_its_rule_registered_once():
    names = METHODS.names()
    assert len(names) >= 25, names
    for name in names:
        spec = METHODS.get(name)
        assert spec.name == name
        if spec.update_rule in UPDATE_RULES and spec.update_rule == name:
            assert UPDATE_RULES.get(name).name == name  # the rule's name comes from its one registration


def _methods_folder_on_the_path(tmp_path) -> dict[str, str]:
    """The probe as one file in a `mtlbench_methods` folder, outside the source tree, on the import path."""
    folder = tmp_path / "plugins" / "mtlbench_methods"
    folder.mkdir(parents=True)
    (folder / "scaled_sum.py").write_text(PROBE)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH")]))}


def test_a_new_method_file_is_listed_trained_and_tabled_with_no_other_edit(tmp_path):
    env = _methods_folder_on_the_path(tmp_path)
    listed = subprocess.run(
        [sys.executable, "-m", "mtlbench", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, **env},
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "scaled_sum" in listed.stdout and "rule.scale: float = 0.5" in listed.stdout
    config = {**TINY, "datasets": ["synthetic_relations"], "methods": ["stl", "hps", "scaled_sum"]}
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, config=config, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    board = pd.read_csv(work / "results" / "tables" / "leaderboard.csv")
    assert "scaled_sum" in set(board.method)
    assert "scaled_sum" in set(pd.read_csv(work / "results" / "tables" / "significance.csv").method)
    assert not (ROOT / "methods" / "scaled_sum.py").exists()  # nothing was written into the source tree


def test_the_zoo_config_runs_every_registered_method(tmp_path):
    """`methods: all` (config/zoo.yaml): every registered method, a new method file included, no list to edit."""
    import yaml

    assert yaml.safe_load((ROOT / "config" / "zoo.yaml").read_text())["methods"] == "all"
    for env, count in (({}, len(METHODS.names())), (_methods_folder_on_the_path(tmp_path), len(METHODS.names()) + 1)):
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/zoo.yaml"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            env={**os.environ, **env},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert re.search(rf"train_run\s+{2 * count}\b", result.stdout), result.stdout[-2000:]
