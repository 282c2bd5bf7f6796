"""The statistics against hand-worked cases and the libraries they come from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from mtlbench.aggregate import DELTA_M, delta_m, delta_m_metrics, summarize, tidy_metrics, with_delta_m
from mtlbench.record import RunRecord
from mtlbench.stats import friedman_nemenyi, paired_tests, safeness, significance, wilcoxon_min_p


def test_paired_t_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = np.array([1.1, 2.3, 2.9, 4.4, 5.6])
    d = a - b  # -0.1, -0.3, 0.1, -0.4, -0.6: mean -0.26, sd sqrt(0.073)
    sd = math.sqrt(sum((x + 0.26) ** 2 for x in d) / 4)
    t = -0.26 / (sd / math.sqrt(5))
    res = paired_tests(a, b)
    assert res["t_stat"] == pytest.approx(t)
    assert res["effect_size_dz"] == pytest.approx(-0.26 / sd)
    assert res["n"] == 5 and res["mean_diff"] == pytest.approx(-0.26)


def test_wilcoxon_exact_p_and_its_floor():
    a = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    b = a - np.array([0.1, 0.2, 0.3, 0.4, 0.5])  # every difference positive
    res = paired_tests(a, b)
    assert res["wilcoxon_stat"] == 0.0  # no negative ranks
    assert res["wilcoxon_p"] == pytest.approx(2 / 32)  # exact: both all-positive and all-negative of 2^5
    assert wilcoxon_min_p(5) == pytest.approx(0.0625) and wilcoxon_min_p(6) == pytest.approx(0.03125)


def _metric(task: str) -> str:
    """Each task's one metric: `score`, or `auc` for a task named so (the one metric a finished run may leave
    undefined, NaN)."""
    return "auc" if task == "auc" else "score"


def _records(values: dict[str, list[dict[str, float]]], directions: dict[str, bool]) -> list[RunRecord]:
    records = []
    for method, per_seed in values.items():
        for seed, metrics in enumerate(per_seed):
            m = {task: {_metric(task): v} for task, v in metrics.items()}
            records.append(
                RunRecord.from_json(
                    {
                        "dataset": "d",
                        "method": method,
                        "seed": seed,
                        "status": "ok",
                        "metrics": {"val": m, "test": m},
                        "directions": {t: {_metric(t): directions[t]} for t in metrics},
                    }
                )
            )
    return records


def test_delta_m_by_hand():
    recs = _records(
        {"stl": [{"acc": 0.8, "err": 2.0}], "hps": [{"acc": 0.88, "err": 2.5}]}, {"acc": True, "err": False}
    )
    dm = delta_m(tidy_metrics(recs), "stl").set_index("method")[DELTA_M]
    # acc 10% better (-10), err 25% worse (+25): mean 7.5, lower is better
    assert dm["hps"] == pytest.approx(7.5) and dm["stl"] == 0.0


def test_holm_matches_statsmodels_and_the_hand_computation():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 4))
    values = {
        "hps": [dict(zip("abcd", row, strict=True)) for row in base],
        "stl": [
            dict(zip("abcd", row + shift, strict=True))
            for row, shift in zip(base, rng.normal(0.3, 0.4, size=(6, 4)), strict=True)
        ],
    }
    sig = significance(tidy_metrics(_records(values, dict.fromkeys("abcd", True))), ("hps",), 0.05)
    assert np.allclose(sig.t_p_holm, multipletests(sig.t_p, method="holm")[1])
    assert sig.t_p.between(0, 1).all() and sig.t_p_holm.between(0, 1).all()
    # Holm by hand on four p-values: sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, 0.06
    assert np.allclose(multipletests([0.01, 0.04, 0.03, 0.005], method="holm")[1], [0.03, 0.06, 0.06, 0.02])


def test_safeness_counts_tasks_significantly_worse_than_stl():
    stl = [{"a": 0.90 + 0.001 * s, "b": 0.5 + 0.01 * s} for s in range(6)]
    worse = [{"a": 0.80 + 0.0012 * s, "b": 0.5 + 0.01 * s + 0.001 * (-1) ** s} for s in range(6)]
    tidy = tidy_metrics(_records({"stl": stl, "hps": worse}, {"a": True, "b": True}))
    table = safeness(significance(tidy, ("stl",), 0.05), "stl")
    row = table.set_index("method").loc["hps"]
    assert row.n_worse == 1 and row.worse == "a.score"


def test_friedman_and_critical_difference_follow_demsar():
    rng = np.random.default_rng(1)
    per_block = {m: rng.normal(loc, 0.05, size=14) for m, loc in zip("wxyz", (0.9, 0.8, 0.7, 0.6), strict=True)}
    rows = [
        {
            "dataset": "d",
            "method": m,
            "seed": 0,
            "split": "test",
            "task": f"t{b}",
            "metric": "acc",
            "value": v[b],
            "higher_is_better": True,
            "status": "ok",
        }
        for m, v in per_block.items()
        for b in range(14)
    ]
    res = friedman_nemenyi(pd.DataFrame(rows), 0.05)
    assert res["mean_ranks"]["w"] < res["mean_ranks"]["z"]
    # Demsar (2006): q_0.05 = 2.569 for k = 4; CD = q sqrt(k(k+1)/(6N))
    assert res["critical_difference"] == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), rel=1e-3)
    assert 0 <= res["p"] < 0.01


def test_diverged_runs_are_counted_not_dropped():
    recs = _records({"stl": [{"a": 0.9}, {"a": 0.8}], "hps": [{"a": 0.85}]}, {"a": True})
    recs.append(RunRecord("d", "hps", 1, "diverged"))
    summary = summarize(with_delta_m(tidy_metrics(recs), "stl"))
    assert summary[summary.method == "hps"].n_diverged.max() == 1
    assert summary[(summary.method == "hps") & (summary.metric == "score")].n.iloc[0] == 1


def test_binary_metrics_by_hand():
    import torch

    from mtlbench.tasks import binary_metrics

    logits = torch.tensor([2.0, 1.0, -0.5, 0.5, -1.0, -2.0])
    target = torch.tensor([1, 0, 1, 1, 0, 0])
    m = binary_metrics(logits, target)
    # positives score 2.0, -0.5, 0.5; negatives 1.0, -1.0, -2.0: 7 of the 9 pairs are ordered correctly
    assert m["auc"] == pytest.approx(7 / 9)
    # predicted positive (logit > 0): 2.0 (tp), 1.0 (fp), 0.5 (tp) -> precision 2/3, recall 2/3, accuracy 4/6
    assert (m["precision"], m["recall"], m["accuracy"]) == pytest.approx((2 / 3, 2 / 3, 4 / 6))


# --- the audit's findings on the statistics' inputs (issue 12, items 5, 8, 9, 10, 18) -------------------------
def test_delta_m_leaves_a_metric_with_a_zero_reference_out_for_every_method():
    directions = {"acc": True, "recall": True}
    stl = [{"acc": 0.80, "recall": 0.5}, {"acc": 0.80, "recall": 0.0}]  # seed 1: no positive predicted
    hps = [{"acc": 0.88, "recall": 0.6}, {"acc": 0.72, "recall": 0.1}]
    tidy = tidy_metrics(_records({"stl": stl, "hps": hps}, directions))
    dm = delta_m(tidy, "stl").set_index(["method", "seed"])
    assert np.isfinite(dm[DELTA_M]).all() and (dm.n_metrics == 1).all()
    # only accuracy remains, in both seeds and for both methods: -10 (better) and +10 (worse)
    assert dm.loc[("hps", 0), DELTA_M] == pytest.approx(-10.0) and dm.loc[("hps", 1), DELTA_M] == pytest.approx(10.0)
    used = delta_m_metrics(tidy, "stl").set_index("task")  # (_records names each task's one metric "score")
    assert not used.loc["recall", "used"] and "is 0" in used.loc["recall", "reason"] and used.loc["acc", "used"]
    summary = summarize(with_delta_m(tidy, "stl"))
    ci = summary[(summary.method == "hps") & (summary.metric == DELTA_M)]
    assert np.isfinite(ci[["mean", "ci95_low", "ci95_high"]].to_numpy(float)).all()


def test_delta_m_averages_the_same_metrics_in_every_run_when_one_is_nan():
    directions = {"acc": True, "auc": True}
    stl = [{"acc": 0.8, "auc": 0.9}, {"acc": 0.8, "auc": 0.9}]
    hps = [{"acc": 0.88, "auc": float("nan")}, {"acc": 0.88, "auc": 0.9}]  # AUC undefined in one run
    dm = delta_m(tidy_metrics(_records({"stl": stl, "hps": hps}, directions)), "stl").set_index(["method", "seed"])
    # both hps seeds average accuracy alone (not accuracy in one seed, accuracy and AUC in the other)
    assert dm.loc[("hps", 0), DELTA_M] == pytest.approx(-10.0) == dm.loc[("hps", 1), DELTA_M]


def _many_methods(n_methods: int, worse_task: str = "a", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stl = [{"a": 0.90 + rng.normal(0, 0.01), "b": 0.5 + rng.normal(0, 0.01)} for _ in range(6)]
    values = {"stl": stl}
    for k in range(n_methods):
        values[f"m{k:02d}"] = [{t: v + rng.normal(0, 0.02) for t, v in row.items()} for row in stl]
    # hps: 2 points worse on task a, a shift that a paired test at n = 6 finds at p of order 1e-3
    values["hps"] = [{"a": row["a"] - 0.02 + rng.normal(0, 0.01), "b": row["b"]} for row in stl]
    return with_delta_m(tidy_metrics(_records(values, {"a": True, "b": True})), "stl")


def test_holm_family_is_one_methods_task_metrics_against_one_baseline():
    sig = significance(_many_methods(10), ("stl",), 0.05)
    for _, grp in sig.groupby(["method", sig.task == "all"]):
        assert grp.holm_family.nunique() == 1
    tasks = sig[sig.task != "all"]
    for _, grp in tasks.groupby("method"):
        assert len(grp) == 2  # the family: this method's two task metrics, nothing else
        assert np.allclose(grp.t_p_holm, multipletests(grp.t_p, method="holm")[1])
    dm = sig[sig.task == "all"]
    assert dm.method.nunique() == 11 and dm.holm_family.nunique() == 1  # Delta_m: its own family across methods
    assert np.allclose(dm.t_p_holm, multipletests(dm.t_p, method="holm")[1])


def test_safeness_finds_a_worse_task_among_many_methods():
    sig = significance(_many_methods(10), ("stl",), 0.05)
    raw = sig[(sig.method == "hps") & (sig.task == "a")].t_p.iloc[0]
    assert raw < 0.025  # significant within hps's own family of two, not across 22 task comparisons
    row = safeness(sig, "stl").set_index("method").loc["hps"]
    assert row.n_worse == 1 and row.worse == "a.score"


def _dm_rows(n_datasets: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for d in range(n_datasets):
        for m, loc in zip("wxyz", (-5.0, -2.0, 0.0, 3.0), strict=True):
            for task in ("t1", "t2"):
                rows.append(
                    {
                        "dataset": f"d{d}",
                        "method": m,
                        "seed": 0,
                        "split": "test",
                        "task": task,
                        "metric": "acc",
                        "value": 0.8 - loc / 100 + rng.normal(0, 0.01),
                        "higher_is_better": True,
                        "status": "ok",
                    }
                )
            rows.append(
                {
                    "dataset": f"d{d}",
                    "method": m,
                    "seed": 0,
                    "split": "test",
                    "task": "all",
                    "metric": DELTA_M,
                    "value": loc + rng.normal(0, 0.5),
                    "higher_is_better": False,
                    "status": "ok",
                }
            )
    return pd.DataFrame(rows)


def test_friedman_ranks_datasets_when_there_are_enough_and_says_when_blocks_are_tasks():
    many = friedman_nemenyi(_dm_rows(6), 0.05)
    assert many["block_kind"] == "datasets" and many["n_blocks"] == 6
    assert many["mean_ranks"]["w"] == 1.0 and many["mean_ranks"]["z"] == 4.0  # lowest Delta_m ranks first
    few = friedman_nemenyi(_dm_rows(2), 0.05)
    assert few["block_kind"] == "tasks" and few["n_blocks"] == 4
    assert "not independent" in few["note"] and "optimistic" in few["note"]


def _configured(method: str, seed: int, epochs: int) -> RunRecord:
    config = {
        "dataset": {"name": "d"},
        "method": method,
        "seed": seed,
        "train": {"epochs": epochs},
        "tracking": {"uri": f"u{seed}"},
    }
    return RunRecord("d", method, seed, "ok", config=config)


def test_aggregation_refuses_one_row_of_two_configs():
    from mtlbench.aggregate import check_one_config
    from mtlbench.errors import MtlbenchError

    same = [_configured("hps", s, 10) for s in range(3)]  # tracking differs: not part of the config hash
    check_one_config(same)
    mixed = [*same[:2], _configured("hps", 2, 40)]
    with pytest.raises(MtlbenchError, match=r"hps: .*differing keys: train\.epochs.*--allow-mixed-configs") as err:
        check_one_config(mixed, [Path(f"runs/seed{s}/record.json") for s in range(3)])
    assert "runs/seed2/record.json" in str(err.value)
    with pytest.raises(MtlbenchError, match=r"seed\(s\) \[1\] appear in more than one record"):
        check_one_config([*same, _configured("hps", 1, 10)])


def test_aggregate_cli_refuses_mixed_configs_with_one_line(tmp_path, capsys):

    from mtlbench.cli import main

    paths = []
    for seed, epochs in ((0, 10), (1, 40)):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(_configured("hps", seed, epochs).text())
        paths.append(str(path))
    assert main(["aggregate", *paths, "--out", str(tmp_path / "tables")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: d/hps") and err.count("\n") == 1 and "train.epochs" in err
    assert main(["aggregate", *paths, "--out", str(tmp_path / "tables"), "--allow-mixed-configs"]) == 0


def test_task_averaged_table_averages_within_a_seed_then_over_seeds():
    from mtlbench.aggregate import task_averaged

    directions = {"t1": True, "t2": True}
    recs = _records({"hps": [{"t1": 0.8, "t2": 0.6}, {"t1": 0.9, "t2": 0.9}]}, directions)
    table = task_averaged(tidy_metrics(recs)).set_index("method").loc["hps"]
    assert table["mean"] == pytest.approx((0.7 + 0.9) / 2) and table["std"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert table.n == 2 and table.n_tasks == 2


def test_safeness_counts_tasks_not_metrics():
    """Issue 26.6: the leaderboard said '16 of 24 tasks' for 12 tasks (it counted metrics)."""
    import pandas as pd

    from mtlbench.stats import safeness

    sig = pd.DataFrame(
        {
            "dataset": ["d"] * 4,
            "method": ["m"] * 4,
            "baseline": ["stl"] * 4,
            "task": ["t1", "t1", "t2", "t2"],
            "metric": ["mse", "mae", "mse", "mae"],
            "significant": [True, True, False, False],
            "better": [False, False, False, False],
        }
    )
    row = safeness(sig, "stl").iloc[0]
    assert (row.n_worse, row.n_compared) == (1, 2) and row.worse == "t1.mse; t1.mae"
