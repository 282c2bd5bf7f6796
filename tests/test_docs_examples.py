"""Every shell example in README.md and docs/ runs as written, in the order given, in a fresh copy of the tree
(issue 26.2).

Each command runs as written, with three kinds of exception, each named in `how_to_run`:
- the set-up block (README's first): CI runs its test command itself (.ci/run; tests/test_packaging.py checks the
  two agree), and this test runs inside the environment it installs;
- commands whose real run is out of reach here run as a dry run (`-n`): the papers' config (datasets that cannot
  be downloaded here), the zoo (320 runs, about 2 hours) and the SLURM profile (a cluster; tests/cluster/ runs
  the tiny pipeline through a one-node SLURM);
- the MLflow server and its `pip install` (tests/test_tracking.py starts that exact server command).
The default pipeline (`snakemake`) runs for real on a tiny `config/config.yaml` written into the copy.
docs/adding-a-method.md is run by tests/test_pipeline.py::test_the_documented_user_method_runs_through_the_pipeline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_pipeline import TINY

pytestmark = pytest.mark.slow

DRY_RUN_ONLY = ("config/paper.yaml", "config/zoo.yaml", "config/sensitivity.yaml", "workflow/profiles/slurm")
STARTED_ELSEWHERE = ("mlflow server", 'pip install -e ".[ui]"')


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def how_to_run(command: str) -> str | None:
    """The command as this test runs it, or None where another test runs it (see the module's docstring)."""
    if command.startswith(STARTED_ELSEWHERE):
        return None
    if command.startswith("snakemake") and any(part in command for part in DRY_RUN_ONLY):
        return command.replace("snakemake", "snakemake -n", 1)
    return command


def fresh_copy(target: Path) -> Path:
    """The tree as a fresh clone of it has it: tracked files and new ones not ignored (no results, no venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source, copy = ROOT / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # e.g. profiles -> workflow/profiles
            copy.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, copy)
    return target


def run_block(block: str, cwd: Path) -> list[str]:
    """Runs the block's commands in one shell, as a user types them; returns the commands run."""
    script = [c for c in map(how_to_run, commands(block)) if c is not None]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**env, "MTLBENCH_SLURM_PARTITION": env.get("MTLBENCH_SLURM_PARTITION", "debug")},
    )
    assert result.returncode == 0, f"{script}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return script


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    copy = fresh_copy(tmp_path_factory.mktemp("clone"))
    default = yaml.safe_load((copy / "config" / "config.yaml").read_text())
    tiny = {**default, **TINY, "efficiency": {**default["efficiency"], **TINY["efficiency"]}}
    (copy / "config" / "config.yaml").write_text(yaml.safe_dump(tiny))  # the default pipeline, tiny
    return copy


def test_readme_examples_run_as_written(clone):
    readme = ROOT / "README.md"
    (mine,) = [b for b in blocks(readme, "yaml") if b.startswith("# mine.yaml")]
    (clone / "mine.yaml").write_text(mine)
    setup, *examples = blocks(readme, "bash")
    assert "pip install" in setup  # the set-up block, run by CI itself
    ran = [command for block in examples for command in run_block(block, clone)]
    assert "snakemake --report results/report.html" in " ".join(ran)
    assert (clone / "results" / "report.html").is_file()
    assert (clone / "results" / "mine" / "tables" / "claims.csv").is_file()
    for run in ("runs/stl3", "runs/hps0"):
        assert (clone / run / "record.json").is_file()


def test_cluster_examples_run_as_written(clone):
    ran = [command for block in blocks(ROOT / "docs" / "cluster.md", "bash") for command in run_block(block, clone)]
    assert sum(command.startswith("snakemake -n --workflow-profile workflow/profiles/slurm") for command in ran) == 2


def test_every_example_line_is_run_somewhere():
    """A new kind of example must be given a way to run here (or a test that runs it)."""
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    skipped = [c for d in documents for b in blocks(d, "bash") for c in commands(b) if how_to_run(c) is None]
    assert sorted(" ".join(c.split()[:2]) for c in skipped) == ["mlflow server", "pip install"]
