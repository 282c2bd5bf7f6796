"""Every output of the analysis catalogue (mtlbench/catalogue.py), parametrised over the catalogue itself: a table
declared anywhere (mtlbench/outputs.py, or an `analyses/` module on the import path) is checked here with no
edit of this file (issue 24.2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.catalogue import Analysis, in_order, load_catalogue, run_pass
from mtlbench.errors import MtlbenchError
from tests.conftest import ROOT, scored_records
from tests.test_pipeline import TINY, snakemake

CATALOGUE = load_catalogue()


@pytest.fixture(scope="module")
def one_pass(tmp_path_factory):
    tables = tmp_path_factory.mktemp("tables")
    claims = ROOT / "config" / "claims.yaml"
    records = scored_records({"stl": 0.0, "hps": 0.05, "mgda": 0.1})
    return run_pass(Analysis(records, [], AnalysisSettings(), claims), tables), tables


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_every_output_is_computed_and_written(one_pass, name):
    analysis, tables = one_pass
    output = CATALOGUE[name]
    assert name in analysis.values
    assert output.caption, f"{name} has no caption"
    assert set(output.needs) <= set(CATALOGUE)
    for file in output.files:
        assert (tables / file).is_file(), file
    if output.files and output.files[0].endswith(".csv") and isinstance(analysis[name], pd.DataFrame):
        written = pd.read_csv(tables / output.files[0], index_col=0 if name == "nemenyi" else None)
        assert len(written) == len(analysis[name])


def test_the_pass_computes_each_output_after_what_it_needs():
    order = [o.name for o in in_order(CATALOGUE)]
    for output in CATALOGUE.values():
        assert all(order.index(need) < order.index(output.name) for need in output.needs)


def test_a_missing_or_circular_need_is_one_message():
    from mtlbench.catalogue import Output

    def out(name, needs):
        return Output(name, lambda a: None, (), needs, "x", None, None)

    with pytest.raises(MtlbenchError, match="output 'a' needs 'nowhere', which no output declares"):
        in_order({"a": out("a", ("nowhere",))})
    with pytest.raises(MtlbenchError, match="circle: a -> b -> a"):
        in_order({"a": out("a", ("b",)), "b": out("b", ("a",))})


# README's example of a table of one's own, exactly as written there
MY_TABLE = next(
    block
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    if block.startswith("# analyses/runs_per_method.py")
)


def test_a_table_declared_in_a_module_of_ones_own_reaches_the_pipeline_the_report_and_this_test(tmp_path):
    """Issue 24: adding a table touched 9 files; now one decorated function in an `analyses/` folder."""
    folder = tmp_path / "mine" / "analyses"
    folder.mkdir(parents=True)
    (folder / "runs_per_method.py").write_text(MY_TABLE)
    path = os.pathsep.join(filter(None, [str(tmp_path / "mine"), os.environ.get("PYTHONPATH")]))
    work = tmp_path / "work"
    work.mkdir()
    config = {**TINY, "datasets": ["synthetic_relations"], "efficiency": {"benchmark": False}}
    result = snakemake(work, config=config, env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr[-4000:]
    table = pd.read_csv(work / "results" / "tables" / "runs_per_method.csv")
    assert set(table.runs) == {len(TINY["seeds"])}
    assert "runs per method" in (work / "results" / "report" / "runs_per_method.html").read_text()
    report = snakemake(work, "--report", "results/report.html", config=config, env={"PYTHONPATH": path})
    assert report.returncode == 0, report.stderr[-3000:]
    assert "How many seeds each method ran." in (work / "results" / "report.html").read_text()
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_outputs.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert "test_every_output_is_computed_and_written[runs_per_method]" in collected.stdout
