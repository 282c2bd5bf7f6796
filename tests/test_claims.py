"""Claims: each verdict from hand-built runs, the non-inferiority test by hand, the bootstrap against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from mtlbench.aggregate import DELTA_M, bootstrap_delta_m, probability_of_improvement
from mtlbench.claims import Claim, evaluate_claims, load_claims, one_sided_p
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _tidy(values: dict[tuple[str, str, str], list[float]], higher: dict[str, bool] | None = None) -> pd.DataFrame:
    """(method, task, metric) -> per-seed values on dataset `d`."""
    rows = []
    for (method, task, metric), per_seed in values.items():
        for seed, value in enumerate(per_seed):
            hib = False if metric == DELTA_M else (higher or {}).get(metric, True)
            rows.append(
                {
                    "dataset": "d",
                    "method": method,
                    "seed": seed,
                    "split": "test",
                    "task": task,
                    "metric": metric,
                    "value": value,
                    "higher_is_better": hib,
                    "status": "ok",
                }
            )
    return pd.DataFrame(rows)


def _records(methods: list[str], n: int = 5) -> list[RunRecord]:
    return [RunRecord("d", m, s, "ok") for m in methods for s in range(n)]


SUPERIOR = Claim(id="x", claim="A beats B", source="test", test="superior", method="a", baseline="b")


@pytest.mark.parametrize(
    ("improvement", "verdict"),
    [
        ([5.0, 6.0, 5.5, 4.5, 5.0], "reproduced"),
        ([-5.0, -6.0, -5.5, -4.5, -5.0], "contradicted"),
        ([0.1, -0.1, 0.05, -0.05, 0.0], "not reproduced"),  # the CI lies below the 1 pp that would matter
        ([3.0, -2.0, 4.0, -3.0, 1.0], "inconclusive"),
    ],
)
def test_superiority_verdicts(improvement, verdict):
    base = [10.0, 12.0, 9.0, 11.0, 10.0]
    tidy = _tidy(
        {("b", "all", DELTA_M): base, ("a", "all", DELTA_M): [b - d for b, d in zip(base, improvement, strict=True)]}
    )
    row = evaluate_claims([SUPERIOR], tidy, _records(["a", "b"])).iloc[0]
    assert row.verdict == verdict and row.n == 5
    assert row.estimate == pytest.approx(np.mean(improvement))
    if verdict == "inconclusive":
        assert "smallest detectable improvement at n=5" in row.note


def test_non_inferiority_against_a_hand_worked_case():
    """Two tasks; A - B in % of B per seed: task1 (0.1, 0.3, 0.2, 0.0, 0.4), task2 (-0.2, 0.1, 0.0, -0.1, 0.2).
    Margin 1: H0 mean <= -1, t = (mean + 1) / (sd / sqrt 5), one-sided; Holm over the two tasks."""
    d1, d2 = np.array([0.1, 0.3, 0.2, 0.0, 0.4]), np.array([-0.2, 0.1, 0.0, -0.1, 0.2])
    base = np.array([0.8, 0.7, 0.9, 0.75, 0.85])
    tidy = _tidy(
        {
            ("b", "t1", "acc"): list(base),
            ("a", "t1", "acc"): list(base * (1 + d1 / 100)),
            ("b", "t2", "acc"): list(base),
            ("a", "t2", "acc"): list(base * (1 + d2 / 100)),
        }
    )
    claim = Claim(
        id="safe",
        claim="A is safe",
        source="test",
        test="non_inferior",
        method="a",
        baseline="b",
        metric="tasks",
        margin=1.0,
    )
    row = evaluate_claims([claim], tidy, _records(["a", "b"])).iloc[0]
    by_hand = []
    for d in (d1, d2):
        t = (d.mean() + 1.0) / (d.std(ddof=1) / np.sqrt(5))
        by_hand.append(st.t.sf(t, 4))
    holm = sorted(by_hand)
    adjusted_max = max(2 * holm[0], holm[1])  # Holm: the larger adjusted p of two
    assert row.verdict == "reproduced" and row.p == pytest.approx(adjusted_max, rel=1e-9)
    assert row.estimate == pytest.approx(d2.mean())  # the worst task is reported
    assert one_sided_p(d1, -1.0) == pytest.approx(by_hand[0])


def test_safety_is_contradicted_beyond_the_margin_and_not_reproduced_within_it():
    base = np.array([0.8, 0.7, 0.9, 0.75, 0.85])
    claim = Claim(
        id="safe",
        claim="A is safe",
        source="test",
        test="non_inferior",
        method="a",
        baseline="b",
        metric="tasks",
        margin=1.0,
    )
    far = _tidy({("b", "t", "acc"): list(base), ("a", "t", "acc"): list(base * 0.9)})  # 10% worse
    assert evaluate_claims([claim], far, _records(["a", "b"])).verdict.iloc[0] == "contradicted"
    near = np.array([-0.5, -0.6, -0.4, -0.55, -0.45])  # 0.5% worse, tightly: worse, but within the margin
    within = _tidy({("b", "t", "acc"): list(base), ("a", "t", "acc"): list(base * (1 + near / 100))})
    assert evaluate_claims([claim], within, _records(["a", "b"])).verdict.iloc[0] == "reproduced"
    claim_tight = Claim(**{**claim.__dict__, "margin": 0.4})
    assert evaluate_claims([claim_tight], within, _records(["a", "b"])).verdict.iloc[0] == "contradicted"
    # 0.8% worse, clearly worse than B, but neither shown within the 1% margin nor beyond it: not reproduced
    unclear = np.array([-0.5, -1.1, -0.7, -0.9, -0.8])
    worse = _tidy({("b", "t", "acc"): list(base), ("a", "t", "acc"): list(base * (1 + unclear / 100))})
    row = evaluate_claims([claim], worse, _records(["a", "b"])).iloc[0]
    assert row.verdict == "not reproduced" and "within the margin" in row.note


def test_relation_recovery_from_learned_relations():
    truth = np.array([[0, 2, 1, 0], [2, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=float)
    rng = np.random.default_rng(0)
    records = []
    for seed in range(5):
        learned = truth * 0.6 + rng.uniform(0, 0.1, truth.shape)
        learned = (learned + learned.T) / 2
        np.fill_diagonal(learned, 0)
        records.append(
            RunRecord.from_json(
                {
                    "dataset": "d",
                    "method": "srdml",
                    "seed": seed,
                    "status": "ok",
                    "task_info": {"ground_truth_relation": truth.tolist()},
                    "method_state": {"relation": learned.tolist()},
                }
            )
        )
    claim = Claim(id="rel", claim="relations", source="test", test="relations", method="srdml")
    row = evaluate_claims([claim], _tidy({}), records).iloc[0]
    assert row.verdict == "reproduced" and row.estimate > 0.8


def test_bootstrap_matches_scipy_and_probability_of_improvement_by_hand():
    values = [3.0, -1.0, 2.0, 0.5, 4.0]
    tidy = _tidy(
        {
            ("a", "all", DELTA_M): values,
            ("hps", "all", DELTA_M): [5.0, 4.0, 6.0, 5.5, 3.0],
            ("stl", "all", DELTA_M): [0.0] * 5,
        }
    )
    row = bootstrap_delta_m(tidy).set_index("method").loc["a"]
    ref = st.bootstrap(
        (np.array(values),),
        np.mean,
        n_resamples=9999,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert (row.boot_ci95_low, row.boot_ci95_high) == pytest.approx((ref.low, ref.high))
    assert row.mean_delta_m == pytest.approx(np.mean(values))
    # pairs (1, 2), (1, 3), (2, 2) tied, (2, 3): 3.5 of 4
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(0.875)
    assert row.p_improve_vs_stl == pytest.approx(np.mean([[v < 0 for v in values]]))


def test_the_default_claims_file_loads_and_a_bad_one_is_named(tmp_path):
    claims = load_claims(ROOT / "config" / "claims.yaml")
    assert {c.test for c in claims} == {
        "relations",
        "superior",
        "negative_sharing",
        "non_inferior",
        "fewer_parameters",
        "cheaper_step",
    }
    bad = tmp_path / "claims.yaml"
    bad.write_text("- {id: mine, claim: x, source: y, test: superior, method: a, baseline: b, margn: 2}\n")
    with pytest.raises(MtlbenchError, match=r"claim 'mine' has unknown keys \['margn'\]"):
        load_claims(bad)
    bad.write_text("- {id: mine, claim: x, source: y, test: better, method: a, baseline: b}\n")
    with pytest.raises(MtlbenchError, match="unknown test 'better'"):
        load_claims(bad)


def test_bayesian_signed_rank_orientation_and_rope():
    """Per-seed improvements far beyond the ROPE: the method is better with high probability; all within it:
    practically equivalent; the mirror image swaps better and worse; a method against itself is equivalent."""
    from mtlbench.aggregate import bayesian_signed_rank

    far = np.array([9.0, 11.0, 10.0, 12.0, 8.0])
    better, rope, worse = bayesian_signed_rank(far, 1.0)
    assert better > 0.9 and worse < 0.05 and better + rope + worse == pytest.approx(1.0)
    assert bayesian_signed_rank(-far, 1.0) == pytest.approx((worse, rope, better))
    near = np.array([0.2, -0.1, 0.15, -0.2, 0.05])
    assert bayesian_signed_rank(near, 1.0)[1] > 0.9
    assert bayesian_signed_rank(np.zeros(5), 1.0) == (0.0, 1.0, 0.0)
    # the suite's 5,000 posterior samples agree with baycomp's default 50,000 within Monte Carlo error
    import baycomp

    mixed = np.array([1.0, 2.0, 0.5, 1.5, -0.3])
    reference = baycomp.SignedRankTest.probs(mixed, np.zeros(5), rope=1.0, random_state=1)
    assert bayesian_signed_rank(mixed, 1.0) == pytest.approx(tuple(map(float, reference)), abs=0.03)
    # in the table: method "a" has a lower Delta_m than hps in every seed (improvements 2..5 pp, ROPE 1)
    tidy = _tidy(
        {
            ("a", "all", DELTA_M): [3.0, -1.0, 2.0, 0.5, 4.0],
            ("hps", "all", DELTA_M): [5.0, 4.0, 6.0, 5.5, 8.0],
            ("stl", "all", DELTA_M): [0.0] * 5,
        }
    )
    row = bootstrap_delta_m(tidy).set_index("method").loc["a"]
    assert row.bayes_better_vs_hps > 0.9 and row.bayes_worse_vs_hps < 0.05


@pytest.mark.parametrize(
    ("gains", "verdict"),
    [
        (([2.0, 3.0, 2.5, 2.2, 2.8], [1.0, 1.5, 1.2, 1.4, 1.1]), "reproduced"),  # better on both tasks
        (([2.0, 3.0, 2.5, 2.2, 2.8], [-1.0, -1.5, -1.2, -1.4, -1.1]), "contradicted"),  # worse on t2
        (([2.0, 3.0, 2.5, 2.2, 2.8], [0.1, -0.1, 0.05, -0.05, 0.0]), "not reproduced"),  # t2 gains less than 1%
        (([2.0, 3.0, 2.5, 2.2, 2.8], [3.0, -2.0, 4.0, -3.0, 1.0]), "inconclusive"),
    ],
)
def test_superiority_on_every_task(gains, verdict):
    """`metric: tasks`: paired one-sided t-tests per task in % of the baseline, Holm across tasks; the row
    reports the least-improved task, whose p-value is checked by hand."""
    base = np.array([0.8, 0.7, 0.9, 0.75, 0.85])
    g1, g2 = (np.array(g) for g in gains)
    tidy = _tidy(
        {
            ("b", "t1", "acc"): list(base),
            ("a", "t1", "acc"): list(base * (1 + g1 / 100)),
            ("b", "t2", "acc"): list(base),
            ("a", "t2", "acc"): list(base * (1 + g2 / 100)),
        }
    )
    claim = Claim(
        id="every",
        claim="A beats B on every task",
        source="test",
        test="superior",
        method="a",
        baseline="b",
        metric="tasks",
    )
    row = evaluate_claims([claim], tidy, _records(["a", "b"])).iloc[0]
    assert row.verdict == verdict and "t2.acc" in row.unit
    assert row.estimate == pytest.approx(g2.mean())
    raw = sorted(st.ttest_1samp(g, 0.0, alternative="greater").pvalue for g in (g1, g2))
    assert row.p == pytest.approx(max(min(1.0, 2 * raw[0]), raw[1]), rel=1e-6)  # Holm's larger adjusted p
