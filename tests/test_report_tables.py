"""The report's leaderboards and HTML tables (issue 16.2), from hand-built tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.report_tables import html_table, leaderboard, leaderboard_markdown, write_report_tables
from tests.conftest import ROOT, scored_records


def bootstrap_rows() -> pd.DataFrame:
    rows = [
        ("d", "stl", 0.0, 0.0, 0.0, 0.9, 0.5),
        ("d", "hps", 2.0, 1.0, 3.0, 0.5, 0.1),
        ("d", "new", -1.5, -2.5, -0.5, 0.95, 0.8),
        ("e", "stl", 0.0, 0.0, 0.0, 0.4, 0.5),
        ("e", "hps", -3.0, -4.0, -2.0, 0.5, 0.9),
    ]
    table = pd.DataFrame(
        rows,
        columns=[
            "dataset",
            "method",
            "mean_delta_m",
            "boot_ci95_low",
            "boot_ci95_high",
            "p_improve_vs_hps",
            "p_improve_vs_stl",
        ],
    )
    return table.assign(n=5)


def test_leaderboard_ranks_by_delta_m_within_each_dataset_and_names_verdicts():
    safeness = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "method": ["hps", "new"],
            "n_worse": [1, 0],
            "worse": ["a.accuracy", np.nan],
            "n_compared": [2, 2],
        }
    )
    claims = pd.DataFrame(
        {
            "dataset": ["d", "d", "e"],
            "method": ["new", "new", "hps"],
            "id": ["x", "y", "z"],
            "verdict": ["reproduced", "inconclusive", "contradicted"],
        }
    )
    board = leaderboard(bootstrap_rows(), safeness, claims)
    d = board[board.dataset == "d"]
    assert d.method.tolist() == ["new", "stl", "hps"] and d["rank"].tolist() == [1, 2, 3]
    assert board[board.dataset == "e"].method.tolist() == ["hps", "stl"]
    assert d.set_index("method").tasks_worse_than_reference.to_dict() == {
        "new": "0 of 2",
        "stl": "",
        "hps": "1 of 2 (a.accuracy)",
    }
    assert d.set_index("method").claims["new"] == "x: reproduced; y: inconclusive"
    assert board.set_index(["dataset", "method"]).claims[("e", "hps")] == "z: contradicted"


def test_a_method_against_itself_shows_a_dash_and_the_reference_is_named(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    board = leaderboard(bootstrap_rows())  # as the analysis pass writes it (mtlbench/outputs.py)
    board.to_csv(tables / "leaderboard.csv", index=False)
    (tables / "leaderboard.md").write_text(leaderboard_markdown(board, "stl"))
    pd.DataFrame(
        {
            "dataset": ["d"],
            "method": ["hps"],
            "task": ["all"],
            "metric": ["delta_m"],
            "primary": [True],
            "higher_is_better": [False],
            "mean": [2.0],
            "std": [0.5],
            "n": [5],
            "n_diverged": [0],
        }
    ).to_csv(tables / "summary.csv", index=False)
    (tables / "significance.csv").write_text("")  # one method only: pandas writes an empty file
    pages = write_report_tables(tables, tmp_path / "html", AnalysisSettings())
    assert {p.name for p in pages} == {
        "front.html",
        "claims.html",
        "leaderboard.html",
        "summary.html",
        "significance.html",
    }
    assert "No rows in this run" in (tmp_path / "html" / "significance.html").read_text()
    md = (tables / "leaderboard.md").read_text()
    stl_row = next(line for line in md.splitlines() if "| stl " in line and "reference" in line)
    assert stl_row.count("—") == 1 and "0.50" not in stl_row  # P(better than stl) for stl: not 0.5
    hps_row = next(line for line in md.splitlines() if "| hps " in line and "+2.00 [+1.00, +3.00]" in line)
    assert "0.10" in hps_row and "0.50" not in hps_row


def test_html_cells_are_escaped_and_verdicts_coloured():
    text = html_table(pd.DataFrame({"verdict": ["not reproduced"], "note": ["<script>x</script> & more"]}))
    assert "<script>" not in text and "&lt;script&gt;" in text and "&amp; more" in text
    assert '<td class="not-reproduced">not reproduced</td>' in text


def test_time_estimate_of_the_default_run_is_the_reference_runs_measured_time_with_its_overhead():
    """Every default run with the reference config: measured training time x (all core-time / training
    core-time) / cores (the reference's wall time, less the share of the protocols' and choices' runs, which
    efficiency.csv does not list); a run scaled by 2 (a choice value's doubled budget) counts twice; other
    configs are only counted."""
    from mtlbench.pipeline import time_estimate
    from tests.conftest import ROOT

    reference = ROOT / "results" / "reference"
    eff = pd.read_csv(reference / "efficiency.csv")
    planned = [(r.dataset, r.method, True) for r in eff.itertuples() for _ in range(int(r.n))]
    profile = pd.read_csv(reference / "pipeline_profile.csv")
    overhead, cores = profile.core_seconds.sum() / profile.set_index("kind").core_seconds["training"], 2
    minutes = (eff.train_seconds * eff.n).sum() * overhead / cores / 60
    line = time_estimate(planned, reference, cores)
    assert line.startswith(f"{len(planned)} run(s) to train: about {minutes:.0f} min on {cores} core(s)")
    assert minutes < profile.wall_seconds.iloc[0] / 60  # the protocols' and choices' runs took the rest
    doubled = time_estimate([(d, m, 2.0) for d, m, _ in planned], reference, cores)
    assert f"about {2 * minutes:.0f} min" in doubled and "scaled by their epochs" in doubled
    mixed = time_estimate(planned[:10] + [("multimnist", "hps", False)] * 3, reference, cores)
    assert "for the 10 the reference ran" in mixed and "plus 3 run(s) of configs the reference did not run" in mixed
    assert time_estimate([("d", "m", False)], reference, 2).endswith("no time estimate)")


def test_time_estimate_takes_a_method_only_the_zoo_ran_from_the_zoos_measured_times(tmp_path):
    from mtlbench.pipeline import time_estimate

    (tmp_path / "zoo").mkdir()
    pd.DataFrame({"dataset": ["d"], "method": ["hps"], "train_seconds": [60.0]}).to_csv(tmp_path / "efficiency.csv")
    pd.DataFrame({"dataset": ["d", "d"], "method": ["hps", "uw"], "train_seconds": [999.0, 120.0]}).to_csv(
        tmp_path / "zoo" / "efficiency.csv"
    )
    pd.DataFrame({"kind": ["training", "startup"], "core_seconds": [90.0, 10.0]}).to_csv(
        tmp_path / "pipeline_profile.csv"
    )
    # (60 + 120 s) x (100 / 90 core-seconds) / 1 core = 200 s: hps from the default run, uw from the zoo's
    line = time_estimate([("d", "hps", True), ("d", "uw", True)], tmp_path, 1)
    assert line.startswith("2 run(s) to train: about 3 min on 1 core(s) at")
    assert time_estimate([("d", "hps", True)] * 9 + [("d", "uw", True)] * 9, tmp_path, 1).startswith(
        "18 run(s) to train: about 30 min"
    )


def test_an_estimate_without_a_ci_is_shown_without_one():
    """A counted claim (fewer parameters) has no CI: the table shows the estimate, not '[nan, nan]'."""
    from mtlbench.claims import claims_display

    table = pd.DataFrame(
        {
            "verdict": ["reproduced", "inconclusive"],
            "claim": ["c", "d"],
            "dataset": ["x", "x"],
            "test": ["fewer_parameters", "superior"],
            "estimate": [0.696, np.nan],
            "ci_low": [np.nan, np.nan],
            "ci_high": [np.nan, np.nan],
            "ci_level": [np.nan, np.nan],
            "unit": ["", ""],
            "n": [5, 0],
            "p": [np.nan, np.nan],
            "note": ["", ""],
            "source": ["", ""],
        }
    )
    assert claims_display(table)["estimate [interval] (level)"].tolist() == ["0.696", "—"]


def test_headline_names_the_reference_and_says_when_one_seed_gives_no_ci(tmp_path):
    """Audit (zoo with one seed): every method without a bootstrap CI was called 'the reference'."""
    from mtlbench.pipeline import headline

    pd.DataFrame(
        {
            "dataset": ["d", "d", "d"],
            "method": ["stl", "hps", "uw"],
            "mean_delta_m": [0.0, -2.0, -1.0],
            "boot_ci95_low": [float("nan"), -3.0, float("nan")],
            "boot_ci95_high": [float("nan"), -1.0, float("nan")],
            "n": [5, 5, 1],
        }
    ).to_csv(tmp_path / "delta_m_bootstrap.csv", index=False)
    line = headline(tmp_path, tmp_path / "figures", "results/report.html", "stl").splitlines()[0]
    expected = "hps -2.0 [-3.0, -1.0]; uw -1.0 (n = 1: no CI); stl (the reference)"
    assert line == f"Best Delta_m % vs stl (lower is better), d: {expected}"


def test_summary_tables_are_split_and_rounded_to_stay_readable(tmp_path):
    """Issue 26.6: synthetic_relations' 12 tasks in one table were scaled to about 3-point type with 4 decimals
    on both sides of every +-; now at most LATEX_COLUMNS metric columns per table, 3 significant digits."""
    from mtlbench.tables import LATEX_COLUMNS

    summary = pd.read_csv(ROOT / "results" / "reference" / "summary.csv")
    from mtlbench.tables import write_summary_tables

    write_summary_tables(summary, tmp_path)
    text = (tmp_path / "summary.tex").read_text()
    widths = [len(spec) - 1 for spec in re.findall(r"\\begin\{tabular\}\{(l?r*)\}", text)]
    assert widths and max(widths) <= LATEX_COLUMNS
    assert "synthetic\\_relations (part 1 of" in text and "e+" not in text
    assert re.search(r"(?<![\d.])(?:[1-9]\d*\.\d{3,}|0\.[1-9]\d{3,})", text) is None  # at most 3 significant


def _write_runs(tmp_path, methods: dict[str, float]) -> list[str]:
    """Records of dataset d, 4 seeds, two tasks (score, higher is better), each method offset from STL."""
    paths = []
    for record in scored_records(methods):
        path = tmp_path / "runs" / record.method / f"seed{record.seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.text())
        paths.append(str(path))
    return paths


def test_the_leaderboard_compares_against_the_configured_baselines(tmp_path):
    """Issue 24: with baselines [mgda, stl] significance.csv used mgda while the leaderboard showed an all-dash
    hard-sharing column and no mgda column (its bootstrap step ran with a built-in default)."""
    from mtlbench.cli import main

    paths = _write_runs(tmp_path, {"stl": 0.0, "hps": 0.05, "mgda": 0.1})
    tables = tmp_path / "tables"
    assert main(["aggregate", *paths, "--out", str(tables), "--baselines", "mgda", "stl"]) == 0
    assert main(["report-tables", "--tables", str(tables), "--out", str(tmp_path / "html")]) == 0
    board = pd.read_csv(tables / "leaderboard.csv")
    compared = sorted(c.removeprefix("p_improve_vs_") for c in board.columns if c.startswith("p_improve_vs_"))
    assert compared == ["mgda", "stl"]
    assert sorted(pd.read_csv(tables / "significance.csv").baseline.unique()) == ["mgda", "stl"]
    markdown = (tables / "leaderboard.md").read_text()
    assert "P(better than mgda)" in markdown and "than hps" not in markdown


def test_the_figures_follow_the_configured_alpha_and_reference(tmp_path, monkeypatch):
    """Issue 24: `mtlbench figures` took no alpha or reference: the CD diagram always used 0.05, the metric
    panels always STL. Now the CD diagram draws the analysis pass's rankings (at the configured alpha) and the
    panels the configured reference. The figure functions are wrapped to see what they are given, and still draw."""
    from mtlbench import figures
    from mtlbench.cli import main
    from mtlbench.stats import friedman_nemenyi

    paths = _write_runs(tmp_path, {"stl": 0.0, "hps": 0.05, "mgda": 0.1, "pcgrad": 0.02})
    tables = tmp_path / "tables"
    assert main(["aggregate", *paths, "--out", str(tables), "--alpha", "0.2"]) == 0
    given: dict[str, object] = {}
    for name in ("metrics_with_ci", "critical_difference", "time_vs_delta_m"):
        drawn = getattr(figures, name)
        monkeypatch.setattr(figures, name, lambda *a, _n=name, _f=drawn: (given.__setitem__(_n, a), _f(*a))[-1])
    out = tmp_path / "figures"
    assert main(["figures", *paths, "--tables", str(tables), "--out", str(out), "--reference", "hps"]) == 0
    assert given["metrics_with_ci"][-1] == "hps" and given["time_vs_delta_m"][-1] == "hps"
    metrics = pd.read_csv(tables / "metrics.csv")
    (panel,) = given["critical_difference"][0].values()  # one dataset, its tasks as blocks: one panel
    expected, default = friedman_nemenyi(metrics, 0.2), friedman_nemenyi(metrics, 0.05)
    assert panel["critical_difference"] == pytest.approx(expected["critical_difference"])
    assert panel["critical_difference"] != pytest.approx(default["critical_difference"])  # alpha changes the CD
    assert panel["mean_ranks"] == pytest.approx(expected["mean_ranks"])
    assert np.allclose(
        panel["nemenyi"].loc[expected["nemenyi"].index, expected["nemenyi"].columns], expected["nemenyi"]
    )
    assert (out / "cd_diagram.png").is_file()


def test_the_settings_defaults_are_the_configs():
    """One set of defaults: the config schema's `statistics` defaults are the settings object's."""
    import yaml

    from mtlbench.analysis_settings import AnalysisSettings

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    declared = {k: v["default"] for k, v in schema["properties"]["statistics"]["properties"].items()}
    assert AnalysisSettings(**{**declared, "baselines": tuple(declared["baselines"])}) == AnalysisSettings()
