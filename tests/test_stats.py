"""The statistics against hand-worked cases and the libraries they come from."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from mtlbench.aggregate import DELTA_M, delta_m, summarize, tidy_metrics, with_delta_m
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


def _records(values: dict[str, list[dict[str, float]]], directions: dict[str, bool]) -> list[dict]:
    records = []
    for method, per_seed in values.items():
        for seed, metrics in enumerate(per_seed):
            m = {task: {"score": v} for task, v in metrics.items()}
            records.append({"dataset": "d", "method": method, "seed": seed, "status": "ok",
                            "metrics": {"val": m, "test": m},
                            "directions": {t: {"score": directions[t]} for t in metrics}})
    return records


def test_delta_m_by_hand():
    recs = _records({"stl": [{"acc": 0.8, "err": 2.0}], "hps": [{"acc": 0.88, "err": 2.5}]},
                    {"acc": True, "err": False})
    dm = delta_m(tidy_metrics(recs)).set_index("method")[DELTA_M]
    # acc 10% better (-10), err 25% worse (+25): mean 7.5, lower is better
    assert dm["hps"] == pytest.approx(7.5) and dm["stl"] == 0.0


def test_holm_matches_statsmodels_and_the_hand_computation():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 4))
    values = {"hps": [dict(zip("abcd", row, strict=True)) for row in base],
              "stl": [dict(zip("abcd", row + shift, strict=True)) for row, shift in
                      zip(base, rng.normal(0.3, 0.4, size=(6, 4)), strict=True)]}
    sig = significance(tidy_metrics(_records(values, dict.fromkeys("abcd", True))), baselines=("hps",))
    assert np.allclose(sig.t_p_holm, multipletests(sig.t_p, method="holm")[1])
    assert sig.t_p.between(0, 1).all() and sig.t_p_holm.between(0, 1).all()
    # Holm by hand on four p-values: sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, 0.06
    assert np.allclose(multipletests([0.01, 0.04, 0.03, 0.005], method="holm")[1], [0.03, 0.06, 0.06, 0.02])


def test_safeness_counts_tasks_significantly_worse_than_stl():
    stl = [{"a": 0.90 + 0.001 * s, "b": 0.5 + 0.01 * s} for s in range(6)]
    worse = [{"a": 0.80 + 0.0012 * s, "b": 0.5 + 0.01 * s + 0.001 * (-1) ** s} for s in range(6)]
    tidy = tidy_metrics(_records({"stl": stl, "hps": worse}, {"a": True, "b": True}))
    table = safeness(significance(tidy, baselines=("stl",)))
    row = table.set_index("method").loc["hps"]
    assert row.n_worse == 1 and row.worse == "a.score"


def test_friedman_and_critical_difference_follow_demsar():
    rng = np.random.default_rng(1)
    per_block = {m: rng.normal(loc, 0.05, size=14) for m, loc in zip("wxyz", (0.9, 0.8, 0.7, 0.6), strict=True)}
    rows = [{"dataset": "d", "method": m, "seed": 0, "split": "test", "task": f"t{b}", "metric": "acc",
             "value": v[b], "higher_is_better": True, "status": "ok"} for m, v in per_block.items() for b in range(14)]
    res = friedman_nemenyi(pd.DataFrame(rows))
    assert res["mean_ranks"]["w"] < res["mean_ranks"]["z"]
    # Demsar (2006): q_0.05 = 2.569 for k = 4; CD = q sqrt(k(k+1)/(6N))
    assert res["critical_difference"] == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), rel=1e-3)
    assert 0 <= res["p"] < 0.01


def test_diverged_runs_are_counted_not_dropped():
    recs = _records({"stl": [{"a": 0.9}, {"a": 0.8}], "hps": [{"a": 0.85}]}, {"a": True})
    recs.append({"dataset": "d", "method": "hps", "seed": 1, "status": "diverged", "metrics": {}, "directions": {}})
    summary = summarize(with_delta_m(tidy_metrics(recs)))
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
