"""The analysis's output catalogue (issue 24.2-3): each table is declared once, by one decorated function, with
the outputs it needs, the files it writes and the caption of its report page. The workflow's rule outputs,
`rule all`, the report's pages and categories and the outputs test all derive from this catalogue, and one
pass (`run_pass`) computes every table in memory in dependency order and writes them.

A table of one's own: a module in an `analyses/` folder on the import path (built-in ones: mtlbench/outputs.py)

    @table("my_table", needs=["metrics"], caption="What it shows.", category="3 Tables")
    def my_table(a: Analysis) -> pd.DataFrame:
        return a["metrics"].groupby("method").value.count().reset_index()

is computed, written as `tables/my_table.csv`, given a page in the report and checked by tests/test_outputs.py,
with no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord

Compute = Callable[["Analysis"], Any]
Write = Callable[[Any, Path, "Analysis"], None]


def write_csv(value: pd.DataFrame, path: Path, analysis: Analysis) -> None:
    value.to_csv(path, index=False)


@dataclass(frozen=True)
class Output:
    name: str
    compute: Compute
    files: tuple[str, ...]  # in the tables folder; the first is the table itself (a CSV)
    needs: tuple[str, ...]  # the outputs it is computed from (the records are always there)
    caption: str  # the report's caption of its page (reStructuredText)
    category: str | None  # the report's category of its page; None: no page of its own
    write: Write | None  # None: the value is written as the first file's CSV

    def write_files(self, value: Any, tables: Path, analysis: Analysis) -> None:
        if self.files:
            (self.write or write_csv)(value, tables / self.files[0], analysis)


CATALOGUE: dict[str, Output] = {}


def table(
    name: str,
    *,
    caption: str,
    needs: Sequence[str] = (),
    files: Sequence[str] | None = None,
    category: str | None = None,
    write: Write | None = None,
) -> Callable[[Compute], Compute]:
    """Declares an output: `name`, computed by the decorated function from the outputs it `needs`; written to
    `files` (default NAME.csv; `()`: kept in memory only, for other outputs)."""

    def register(compute: Compute) -> Compute:
        if name in CATALOGUE and CATALOGUE[name].compute is not compute:
            raise MtlbenchError(f"two outputs are named {name!r} ({CATALOGUE[name].compute.__module__})")
        written = tuple(files) if files is not None else (f"{name}.csv",)
        CATALOGUE[name] = Output(name, compute, written, tuple(needs), caption.strip(), category, write)
        return compute

    return register


@dataclass
class Analysis:
    """What a pass computes from: the run records, the settings and the optional inputs, and every output
    computed so far (`analysis["metrics"]`)."""

    records: list[RunRecord]
    paths: list[Path]
    settings: AnalysisSettings
    claims_file: Path | None = None
    step_rounds: Path | None = None
    benchmark: Path | None = None  # the interleaved benchmark's step_cost.csv (efficiency.csv merges it)
    cores: int = 0  # the pipeline's cores (its profile's core-time); 0: a cluster, the jobs' own core-time
    # robustness (issue 23): the records of each protocol's and each choice value's runs, by variant name, and the
    # plan that says what they are (mtlbench.protocols.Plan.to_json); empty without
    variants: dict[str, list[RunRecord]] = field(default_factory=dict)
    robustness: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def all_records(self) -> list[RunRecord]:
        """The config's own runs and every variant's: what the pipeline trained."""
        return self.records + [r for runs in self.variants.values() for r in runs]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


ANALYSIS_PACKAGES = ("analyses",)  # a folder of this name on the import path holds tables of one's own


def load_catalogue() -> dict[str, Output]:
    """The built-in outputs (mtlbench.outputs) and every module of the `analyses` folders on the import path."""
    importlib.import_module("mtlbench.outputs")
    for package in ANALYSIS_PACKAGES:
        try:
            found = importlib.import_module(package)
        except ModuleNotFoundError:
            continue
        for module in sorted(pkgutil.iter_modules(found.__path__), key=lambda m: m.name):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package}.{module.name}")
    return CATALOGUE


def in_order(catalogue: dict[str, Output]) -> list[Output]:
    """The outputs, each after those it needs (the declaration order otherwise); a missing or circular need is
    one message naming the output."""
    ordered: list[Output] = []
    placed: set[str] = set()

    def place(name: str, path: tuple[str, ...]) -> None:
        if name in placed:
            return
        if name in path:
            raise MtlbenchError(f"outputs need each other in a circle: {' -> '.join([*path, name])}")
        if name not in catalogue:
            raise MtlbenchError(f"output {path[-1]!r} needs {name!r}, which no output declares")
        for need in catalogue[name].needs:
            place(need, (*path, name))
        placed.add(name)
        ordered.append(catalogue[name])

    for name in catalogue:
        place(name, ())
    return ordered


def run_pass(analysis: Analysis, tables: Path) -> Analysis:
    """Every output of the catalogue, computed in dependency order in this process and written to `tables`."""
    tables.mkdir(parents=True, exist_ok=True)
    for output in in_order(load_catalogue()):
        analysis.values[output.name] = value = output.compute(analysis)
        output.write_files(value, tables, analysis)
    return analysis


def table_files() -> list[str]:
    """Every file the pass writes, relative to the tables folder."""
    return [f for output in load_catalogue().values() for f in output.files]


def report_pages() -> list[Output]:
    """The outputs with a page of their own in the report."""
    return [output for output in load_catalogue().values() if output.category is not None]


@dataclass(frozen=True)
class Figure:
    """A figure of the report: drawn from the run records and the pass's tables, after the pass."""

    name: str
    draw: Callable[[Drawing, Path], None]
    caption: str
    category: str = "5 Figures"

    @property
    def file(self) -> str:
        return f"{self.name}.png"


FIGURES: dict[str, Figure] = {}


def figure(name: str, *, caption: str, category: str = "5 Figures") -> Callable[[Callable], Callable]:
    """Declares a figure, `name`.png, drawn by the decorated function from a `Drawing` into the given path."""

    def register(draw: Callable[[Drawing, Path], None]) -> Callable[[Drawing, Path], None]:
        FIGURES[name] = Figure(name, draw, caption.strip(), category)
        return draw

    return register


@dataclass
class Drawing:
    """What a figure is drawn from: the run records (read once, when a figure asks), the pass's tables and the
    settings."""

    paths: list[Path]
    tables: Path
    settings: AnalysisSettings
    _records: list[RunRecord] | None = None

    @property
    def records(self) -> list[RunRecord]:
        if self._records is None:
            self._records = [RunRecord.read(Path(p)) for p in self.paths]
        return self._records

    def table(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.tables / f"{name}.csv")


def load_figures() -> dict[str, Figure]:
    load_catalogue()
    return FIGURES
