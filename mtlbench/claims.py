"""The papers' claims as data, and a verdict for each from the run's own numbers.

A claim (config/claims.yaml, or a user's file) names a method, a baseline, the datasets and a test:

- `superior`: the method beats the baseline on Delta_m, on one `task.metric`, or on every task's primary metric
  (`metric: tasks`, Holm across the tasks);
- `non_inferior`: on every task's primary metric (`metric: tasks`) or on Delta_m (`metric: delta_m`) the
  method is not worse than the baseline by more than `margin` (% of the baseline's value; percentage points
  for Delta_m), Holm across the tasks;
- `negative_sharing`: the method is significantly worse than the baseline on some task (Holm across tasks);
- `relations`: learned task relations match the dataset's ground truth (Spearman per seed; twins > same group >
  other group);
- `fewer_parameters`: fewer parameters at inference than the baseline;
- `cheaper_step`: less time per training step than the baseline (paired by seed).

Per-seed differences are signed so that positive favours the method; tests are paired t-tests by seed. Verdicts:
`reproduced` (the claim holds significantly), `contradicted` (its opposite holds significantly),
`not reproduced` (the run rules out the claimed effect: for superiority, the whole 95% CI lies below `margin`;
for safety, a task is significantly worse than the baseline, though within the margin), `inconclusive`
(neither, with the smallest effect that n seeds could have detected at 80% power).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from mtlbench.aggregate import DELTA_M
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord

TESTS = ("superior", "non_inferior", "negative_sharing", "relations", "fewer_parameters", "cheaper_step")
VERDICTS = ("reproduced", "not reproduced", "contradicted", "inconclusive")
COLUMNS = [
    "id",
    "claim",
    "source",
    "dataset",
    "method",
    "baseline",
    "test",
    "estimate",
    "ci95_low",
    "ci95_high",
    "unit",
    "n",
    "p",
    "verdict",
    "note",
]


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    test: str
    method: str
    baseline: str = ""
    datasets: tuple[str, ...] = ("all",)
    metric: str = DELTA_M
    margin: float = 1.0

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise MtlbenchError(f"claim {self.id!r}: unknown test {self.test!r}; valid: {', '.join(TESTS)}")
        if self.test not in ("relations",) and not self.baseline:
            raise MtlbenchError(f"claim {self.id!r}: test {self.test!r} needs a baseline")


def load_claims(path: Path) -> list[Claim]:
    """Claims from a YAML list; unknown keys or tests end in one message naming the claim."""
    try:
        entries = yaml.safe_load(Path(path).read_text()) or []
    except (OSError, yaml.YAMLError) as exc:
        raise MtlbenchError(f"cannot read the claims file {path}: {exc}") from None
    valid = {f.name for f in fields(Claim)}
    claims = []
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            raise MtlbenchError(f"{path}: every claim is a mapping with an `id`; got {entry!r:.80}")
        unknown = sorted(set(entry) - valid)
        if unknown:
            raise MtlbenchError(f"{path}: claim {entry['id']!r} has unknown keys {unknown}; valid: {sorted(valid)}")
        datasets = entry.get("datasets", ["all"])
        claims.append(Claim(**{**entry, "datasets": tuple([datasets] if isinstance(datasets, str) else datasets)}))
    return claims


# --- small statistics -----------------------------------------------------------------------------------------
def mean_ci(d: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    n = len(d)
    if n < 2:
        return float(d.mean()) if n else np.nan, np.nan, np.nan
    half = st.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def one_sided_p(d: np.ndarray, shift: float = 0.0) -> float:
    """p of H0: mean(d) <= shift against mean(d) > shift (paired t on the per-seed differences)."""
    if len(d) < 2:
        return np.nan
    if np.all(d == d[0]):
        return 0.0 if d[0] > shift else 1.0
    return float(st.ttest_1samp(d, shift, alternative="greater").pvalue)


def detectable_effect(d: np.ndarray, alpha: float, power: float = 0.8) -> float:
    """The smallest mean difference n seeds detect with a one-sided paired t-test at `alpha` and `power`."""
    n = len(d)
    if n < 2:
        return np.nan
    return float((st.t.ppf(1 - alpha, n - 1) + st.t.ppf(power, n - 1)) * d.std(ddof=1) / np.sqrt(n))


# --- per-seed differences -------------------------------------------------------------------------------------
def paired_differences(
    tidy: pd.DataFrame, dataset: str, method: str, baseline: str, task: str, metric: str
) -> np.ndarray:
    """Per seed, signed so that positive favours `method`: Delta_m in percentage points (baseline - method),
    a task metric in % of the baseline's value."""
    data = tidy[
        (tidy.dataset == dataset)
        & (tidy.split == "test")
        & (tidy.status == "ok")
        & (tidy.task == task)
        & (tidy.metric == metric)
    ]
    a = data[data.method == method].set_index("seed").value
    b = data[data.method == baseline].set_index("seed").value
    seeds = a.index.intersection(b.index)
    a, b = a[seeds].to_numpy(float), b[seeds].to_numpy(float)
    if metric == DELTA_M:
        return b - a
    higher = bool(data.higher_is_better.iloc[0]) if len(data) else True
    return (1 if higher else -1) * (a - b) / np.abs(b) * 100


def primary_metrics(tidy: pd.DataFrame, dataset: str) -> list[tuple[str, str]]:
    data = tidy[(tidy.dataset == dataset) & (tidy.metric != DELTA_M) & (tidy.split == "test")]
    return list(data.groupby("task", sort=False).metric.first().items())


def task_differences(claim: Claim, tidy: pd.DataFrame, dataset: str) -> list[tuple[str, np.ndarray]]:
    """Per task's primary metric (`task.metric`), the per-seed differences of the claim's method to its baseline."""
    return [
        (f"{t}.{m}", paired_differences(tidy, dataset, claim.method, claim.baseline, t, m))
        for t, m in primary_metrics(tidy, dataset)
    ]


def holm(p: np.ndarray | list[float]) -> np.ndarray:
    return multipletests(np.nan_to_num(np.asarray(p, float), nan=1.0), method="holm")[1]


# --- the tests ------------------------------------------------------------------------------------------------
def _row(claim: Claim, dataset: str, **values: Any) -> dict[str, Any]:
    return {
        "id": claim.id,
        "claim": claim.claim,
        "source": claim.source,
        "dataset": dataset,
        "method": claim.method,
        "baseline": claim.baseline,
        "test": claim.test,
        **values,
    }


def _no_data(
    claim: Claim,
    dataset: str,
    note: str = "no paired task metrics for method and baseline on this dataset",
    unit: str = "",
    n: int = 0,
) -> dict[str, Any]:
    """An inconclusive row without an estimate: what the run lacks to test the claim."""
    nan = np.nan
    return _row(
        claim,
        dataset,
        estimate=nan,
        ci95_low=nan,
        ci95_high=nan,
        unit=unit,
        n=n,
        p=nan,
        verdict="inconclusive",
        note=note,
    )


def _superior(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    if claim.metric == "tasks":
        return _superior_on_every_task(claim, tidy, dataset, alpha)
    task, _, metric = ("all", "", DELTA_M) if claim.metric == DELTA_M else claim.metric.partition(".")
    d = paired_differences(tidy, dataset, claim.method, claim.baseline, task, metric)
    mean, low, high = mean_ci(d)
    p, p_worse = one_sided_p(d), one_sided_p(-d)
    unit = "pp of Delta_m" if metric == DELTA_M else f"% of {claim.baseline}'s {task}.{metric}"
    if p < alpha:
        verdict, note = "reproduced", ""
    elif p_worse < alpha:
        verdict, note = "contradicted", f"{claim.method} is significantly worse (one-sided p {p_worse:.3g})"
    elif high < claim.margin:
        verdict, note = "not reproduced", f"the 95% CI excludes an improvement of {claim.margin:g} or more"
    else:
        verdict = "inconclusive"
        note = f"smallest detectable improvement at n={len(d)}: {detectable_effect(d, alpha):.3g}"
    return _row(
        claim,
        dataset,
        estimate=mean,
        ci95_low=low,
        ci95_high=high,
        unit=unit,
        n=len(d),
        p=p,
        verdict=verdict,
        note=note,
    )


def _superior_on_every_task(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    """Better on every task's primary metric: one-sided paired t-tests, Holm across the tasks; the estimate is
    the task where the method gains least."""
    parts = task_differences(claim, tidy, dataset)
    if not parts or min(len(d) for _, d in parts) == 0:
        return _no_data(claim, dataset)
    names, diffs = [name for name, _ in parts], [d for _, d in parts]
    better = holm([one_sided_p(d) for d in diffs])
    worse = holm([one_sided_p(-d) for d in diffs])
    least = int(np.argmin([d.mean() for d in diffs]))
    mean, low, high = mean_ci(diffs[least])
    if (better < alpha).all():
        verdict, note = "reproduced", f"better on every one of {len(diffs)} tasks (Holm)"
    elif (worse < alpha).any():
        bad = [names[i] for i in np.flatnonzero(worse < alpha)]
        verdict, note = "contradicted", f"significantly worse on {', '.join(bad)} (Holm)"
    elif high < claim.margin:
        verdict, note = (
            "not reproduced",
            (f"the 95% CI on {names[least]} excludes an improvement of {claim.margin:g}% or more"),
        )
    else:
        won = [names[i] for i in np.flatnonzero(better < alpha)]
        verdict, note = (
            "inconclusive",
            (
                f"better on {', '.join(won) if won else 'no task'} (Holm); smallest "
                f"detectable improvement on {names[least]} at n={len(diffs[least])}: "
                f"{detectable_effect(diffs[least], alpha):.3g}"
            ),
        )
    return _row(
        claim,
        dataset,
        estimate=mean,
        ci95_low=low,
        ci95_high=high,
        unit=f"% of {claim.baseline}'s value, least-improved task ({names[least]})",
        n=min(len(d) for d in diffs),
        p=float(better.max()),
        verdict=verdict,
        note=note,
    )


def _non_inferior(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    if claim.metric == DELTA_M:
        parts = [(DELTA_M, paired_differences(tidy, dataset, claim.method, claim.baseline, "all", DELTA_M))]
        unit = "pp of Delta_m"
    else:
        parts = task_differences(claim, tidy, dataset)
        unit = f"% of {claim.baseline}'s value, worst task"
    if not parts or min(len(d) for _, d in parts) == 0:
        return _no_data(claim, dataset)
    names = [name for name, _ in parts]
    diffs = [d for _, d in parts]
    p_ni = np.array([one_sided_p(d, -claim.margin) for d in diffs])  # H0: worse by the margin or more
    p_beyond = np.array([one_sided_p(-d, claim.margin) for d in diffs])  # H1: worse by more than the margin
    p_worse = np.array([one_sided_p(-d) for d in diffs])  # H1: worse at all
    ni, beyond, worse = holm(p_ni), holm(p_beyond), holm(p_worse)
    worst = int(np.argmin([d.mean() if len(d) else np.inf for d in diffs]))
    mean, low, high = mean_ci(diffs[worst])
    n = min(len(d) for d in diffs)
    if (ni < alpha).all():
        verdict, note = "reproduced", f"every one of {len(diffs)} non-inferior by {claim.margin:g} (Holm)"
    elif (beyond < alpha).any():
        bad = [names[i] for i in np.flatnonzero(beyond < alpha)]
        verdict, note = "contradicted", f"worse than the margin on {', '.join(bad)} (Holm)"
    elif (worse < alpha).any():
        bad = [names[i] for i in np.flatnonzero(worse < alpha)]
        verdict, note = "not reproduced", f"significantly worse on {', '.join(bad)}, within the margin (Holm)"
    else:
        verdict, note = (
            "inconclusive",
            (
                f"margin {claim.margin:g}; smallest detectable shift at n={n}: "
                f"{detectable_effect(diffs[worst], alpha):.3g}"
            ),
        )
    return _row(
        claim,
        dataset,
        estimate=mean,
        ci95_low=low,
        ci95_high=high,
        unit=f"{unit} ({names[worst]})",
        n=n,
        p=float(ni.max()),
        verdict=verdict,
        note=note,
    )


def _negative_sharing(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    parts = task_differences(claim, tidy, dataset)
    if not parts or min(len(d) for _, d in parts) == 0:
        return _no_data(claim, dataset)
    diffs = [d for _, d in parts]
    worse = holm([one_sided_p(-d) for d in diffs])
    ni = holm([one_sided_p(d, -claim.margin) for d in diffs])
    worst = int(np.argmin([d.mean() for d in diffs]))
    mean, low, high = mean_ci(diffs[worst])
    if (worse < alpha).any():
        verdict = "reproduced"
        note = "worse on " + ", ".join(parts[i][0] for i in np.flatnonzero(worse < alpha)) + " (Holm)"
    elif (ni < alpha).all():
        verdict, note = "contradicted", f"non-inferior on every task by {claim.margin:g} (Holm)"
    else:
        verdict, note = (
            "inconclusive",
            (f"smallest detectable shift at n={len(diffs[worst])}: {detectable_effect(diffs[worst], alpha):.3g}"),
        )
    return _row(
        claim,
        dataset,
        estimate=mean,
        ci95_low=low,
        ci95_high=high,
        unit=f"% of {claim.baseline}'s value ({parts[worst][0]})",
        n=len(diffs[worst]),
        p=float(worse.min()),
        verdict=verdict,
        note=note,
    )


def relation_scores(records: list[RunRecord], dataset: str, method: str) -> pd.DataFrame:
    """Per seed: Spearman of the learned relation with the ground truth, and mean learned weight of each level."""
    rows = []
    for r in records:
        if r.dataset != dataset or r.method != method or not r.ok:
            continue
        truth = np.array(r.task_info.get("ground_truth_relation") or [])
        learned = np.array(r.method_state.get("relation") or [])
        if truth.size == 0 or learned.shape != truth.shape:
            continue
        i, j = np.triu_indices(len(truth), 1)
        t, w = truth[i, j], learned[i, j]
        levels = sorted(set(t), reverse=True)
        rows.append(
            {
                "seed": r.seed,
                "spearman": st.spearmanr(w, t).statistic,
                **{f"level{k}": float(w[t == level].mean()) for k, level in enumerate(levels)},
            }
        )
    return pd.DataFrame(rows)


def _relations(claim: Claim, records: list[RunRecord], dataset: str, alpha: float) -> dict[str, Any]:
    scores = relation_scores(records, dataset, claim.method)
    if scores.empty or len(scores) < 2:
        return _no_data(
            claim, dataset, "no learned relation with a ground truth in at least 2 seeds", "Spearman rho", len(scores)
        )
    rho = scores.spearman.to_numpy(float)
    levels = [c for c in scores.columns if c.startswith("level")]
    steps = [scores[a].to_numpy(float) - scores[b].to_numpy(float) for a, b in zip(levels, levels[1:], strict=False)]
    p = multipletests([one_sided_p(rho), *[one_sided_p(s) for s in steps]], method="holm")[1]
    mean, low, high = mean_ci(rho)
    ordering = " > ".join(f"{scores[c].mean():.3g}" for c in levels)
    if (p < alpha).all():
        verdict, note = "reproduced", f"mean weight by level (highest truth first): {ordering}"
    elif one_sided_p(-rho) < alpha:
        verdict, note = "contradicted", "learned relations anti-correlate with the ground truth"
    else:
        verdict, note = "inconclusive", f"levels {ordering}; Holm p {', '.join(f'{x:.3g}' for x in p)}"
    return _row(
        claim,
        dataset,
        estimate=mean,
        ci95_low=low,
        ci95_high=high,
        unit="Spearman rho",
        n=len(rho),
        p=float(p.max()),
        verdict=verdict,
        note=note,
    )


def _by_method(
    records: list[RunRecord], dataset: str, method: str, value: Callable[[RunRecord], float | None]
) -> pd.Series:
    return pd.Series(
        {r.seed: value(r) for r in records if r.dataset == dataset and r.method == method and r.ok},
        dtype=float,
    )


def _fewer_parameters(claim: Claim, records: list[RunRecord], dataset: str, alpha: float) -> dict[str, Any]:
    a = _by_method(records, dataset, claim.method, lambda r: r.params.inference)
    b = _by_method(records, dataset, claim.baseline, lambda r: r.params.inference)
    if a.empty or b.empty:
        return _no_data(claim, dataset, "method or baseline not in this run", "ratio")
    ratio = float(a.mean() / b.mean())
    verdict = "reproduced" if ratio < 1 else "contradicted"
    return _row(
        claim,
        dataset,
        estimate=ratio,
        ci95_low=np.nan,
        ci95_high=np.nan,
        unit="inference parameters, ratio of means to baseline",
        n=len(a),
        p=np.nan,
        verdict=verdict,
        note=f"mean {a.mean():.0f} vs {b.mean():.0f} parameters, per seed {a.min():.0f}..{a.max():.0f} "
        f"(counted, not estimated)",
    )


def _cheaper_step(claim: Claim, records: list[RunRecord], dataset: str, alpha: float) -> dict[str, Any]:
    a = _by_method(records, dataset, claim.method, lambda r: r.timing.seconds_per_step)
    b = _by_method(records, dataset, claim.baseline, lambda r: r.timing.seconds_per_step)
    seeds = a.index.intersection(b.index)
    d = np.log(b[seeds].to_numpy(float) / a[seeds].to_numpy(float))  # > 0: the method is cheaper
    mean, low, high = mean_ci(d)
    p, p_worse = one_sided_p(d), one_sided_p(-d)
    verdict = "reproduced" if p < alpha else "contradicted" if p_worse < alpha else "inconclusive"
    return _row(
        claim,
        dataset,
        estimate=float(np.exp(-mean)),
        ci95_low=float(np.exp(-high)),
        ci95_high=float(np.exp(-low)),
        unit="step time, ratio to baseline (geometric mean)",
        n=len(d),
        p=p,
        verdict=verdict,
        note="same machine and run; the benchmark's interleaved ratios are in efficiency.csv",
    )


def evaluate_claims(
    claims: list[Claim], tidy: pd.DataFrame, records: list[RunRecord], alpha: float = 0.05
) -> pd.DataFrame:
    """One row per (claim, dataset) with the estimate, its 95% CI, n, p and the verdict."""
    present = {(r.dataset, r.method) for r in records}
    datasets_run = sorted({r.dataset for r in records})
    rows = []
    for claim in claims:
        datasets = datasets_run if "all" in claim.datasets else list(claim.datasets)
        for dataset in datasets:
            missing = [m for m in (claim.method, claim.baseline) if m and (dataset, m) not in present]
            if missing:
                if "all" not in claim.datasets:
                    rows.append(_no_data(claim, dataset, f"{', '.join(missing)} not run on {dataset}"))
                continue
            if claim.test == "relations":
                if not any(r.dataset == dataset and r.task_info.get("ground_truth_relation") for r in records):
                    continue  # a dataset without a known relation structure has nothing to compare with
                rows.append(_relations(claim, records, dataset, alpha))
            elif claim.test in ("fewer_parameters", "cheaper_step"):
                on_records = _fewer_parameters if claim.test == "fewer_parameters" else _cheaper_step
                rows.append(on_records(claim, records, dataset, alpha))
            else:
                on_metrics = {
                    "superior": _superior,
                    "non_inferior": _non_inferior,
                    "negative_sharing": _negative_sharing,
                }[claim.test]
                rows.append(on_metrics(claim, tidy, dataset, alpha))
    return pd.DataFrame(rows, columns=COLUMNS)


def claims_display(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table as it is shown (Markdown and the HTML report): estimates with their CI, rounded p."""
    shown = table.assign(
        estimate=[
            "—" if pd.isna(e) else f"{e:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if pd.notna(lo) else "")
            for e, lo, hi in zip(table.estimate, table.ci95_low, table.ci95_high, strict=True)
        ],
        p=[f"{p:.3g}" if pd.notna(p) else "—" for p in table.p],
    )
    return shown[["verdict", "claim", "dataset", "test", "estimate", "unit", "n", "p", "note", "source"]]


def claims_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# Claims",
        "",
        "One row per claim and dataset: the estimate favours the method when positive (for "
        "ratios: below 1); paired by seed; verdicts as defined in mtlbench/claims.py.",
        "",
    ]
    return "\n".join(lines) + claims_display(table).to_markdown(index=False) + "\n"
