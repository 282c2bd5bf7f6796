"""The papers' claims as data, and a verdict for each from the run's own numbers.

A claim (config/claims.yaml, or a user's file) names a method, a baseline, the datasets, a test and its
*scope*: the datasets (the experiment) the paper made it on. A row on a dataset outside the scope is a
*generalisation test*: worth showing, never the paper's claim failing. A claim without `scope` is general (every
dataset is in scope), and its rows say so.

Tests (per-seed differences are signed so that positive favours the method; paired one-sided t-tests by seed):

- `superior`: the method beats the baseline on Delta_m, on one `task.metric`, on every task's primary metric
  (`metric: tasks`) or on every listed metric of every task (`metric: tasks:rmse,mae`), Holm across the tasks;
- `non_inferior`: on every task's primary metric (`metric: tasks`) or on Delta_m the method is not worse than the
  baseline by more than `margin` (% of the baseline's value; percentage points for Delta_m), Holm across tasks;
- `negative_sharing`: the method is significantly worse than the baseline on some task (Holm across tasks);
- `relations`: the learned task relations show every part of the claim (Spearman with the ground truth above 0;
  twins above the same group above other groups; the mean weight across groups below `tolerance`), Holm
  across the parts; the note says which part held and which failed;
- `fewer_parameters`: fewer parameters at inference than the baseline (counted, not estimated);
- `cheaper_step`: less time per training step than the baseline, from the interleaved benchmark (one process,
  the order alternating every round; paired by round), never from the step times of jobs that ran beside
  other jobs.

Every row prints the interval its decision uses: the two-sided (1 - 2a') interval of the part shown, whose
bounds are exactly the one-sided tests at a' (a' = alpha for a single test; the Holm level of the part shown
for a family). The verdicts are defined per test in VERDICT_DEFINITIONS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from mtlbench.aggregate import DELTA_M, t_interval
from mtlbench.convergence import still_improving_counts
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord
from mtlbench.stats import holm_adjusted

TESTS = ("superior", "non_inferior", "negative_sharing", "relations", "fewer_parameters", "cheaper_step")
VERDICTS = ("reproduced", "not reproduced", "contradicted", "inconclusive")
IN_SCOPE, GENERALISATION = "paper", "generalisation"
# what a verdict rests on: the estimate, the interval its test uses, the unit, n and p
ESTIMATE_COLUMNS = ["estimate", "ci_low", "ci_high", "ci_level", "unit", "n", "p"]
COLUMNS = [
    "id",
    "claim",
    "source",
    "dataset",
    "scope",
    "scope_note",
    "method",
    "baseline",
    "test",
    *ESTIMATE_COLUMNS,
    "verdict",
    "still_improving",
    "note",
]
# metrics a claim may name that the runs do not log, derived per run from one they do
DERIVED_METRICS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {"rmse": ("mse", np.sqrt)}

VERDICT_DEFINITIONS = {
    "superior": "reproduced: better than the baseline, significantly (one-sided, Holm across tasks where every "
    "task must improve); contradicted: significantly worse (on some task); not reproduced: an improvement of "
    "`margin` or more is ruled out (on some task); inconclusive: none of these, with the smallest improvement "
    "n seeds could detect.",
    "non_inferior": "reproduced: on every task, worse by less than `margin`, significantly (a method may be "
    "significantly worse than the baseline and still safe within the margin: both are shown); contradicted: "
    "worse by more than the margin on some task, significantly; not reproduced: significantly worse on some "
    "task, by an amount the run cannot place beyond or within the margin; inconclusive: none of these.",
    "negative_sharing": "reproduced: significantly worse than the baseline on some task (Holm); contradicted: "
    "non-inferior by `margin` on every task; not reproduced: not used; inconclusive: neither.",
    "relations": "reproduced: every part of the claim holds significantly (Holm across the parts); "
    "contradicted: the learned relations anti-correlate with the ground truth; not reproduced: the opposite of "
    "some part holds significantly (the note names it); inconclusive: none of these.",
    "fewer_parameters": "reproduced: fewer inference parameters than the baseline (counted); contradicted: as "
    "many or more; not reproduced and inconclusive: not used.",
    "cheaper_step": "reproduced: a training step costs less than the baseline's in the interleaved benchmark, "
    "significantly (paired by round); contradicted: it costs more, significantly; not reproduced: not used; "
    "inconclusive: neither.",
}
INTERVAL_NOTE = (
    "Intervals: the two-sided (1 - 2a') interval of the estimate shown (column ci_level), whose bounds are the "
    "one-sided tests the verdict uses at a' = alpha for one test and at the Holm level of the part shown for a "
    "family of tests (tasks, or the parts of the relations claim)."
)


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
    scope: tuple[str, ...] = ("all",)  # the datasets (experiments) the paper made the claim on
    not_in_scope: tuple[str, ...] = ()  # datasets a general scope leaves out (a linear 'encoder', ...)
    scope_note: str = ""  # why the claim applies where it does
    tolerance: float = 0.1  # relations: the mean weight across groups counts as about 0 below it

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise MtlbenchError(f"claim {self.id!r}: unknown test {self.test!r}; valid: {', '.join(TESTS)}")
        if self.test not in ("relations",) and not self.baseline:
            raise MtlbenchError(f"claim {self.id!r}: test {self.test!r} needs a baseline")

    def in_scope(self, dataset: str) -> bool:
        return ("all" in self.scope or dataset in self.scope) and dataset not in self.not_in_scope

    def why_in_scope(self, dataset: str) -> str:
        """The row's `scope_note`: where the paper made the claim, and what that makes of this row."""
        if "all" in self.scope and not self.not_in_scope and not self.scope_note:
            return "no scope declared: a general claim, every dataset in scope"
        where = "every dataset" if "all" in self.scope else ", ".join(self.scope)
        if self.not_in_scope:
            where += f" but {', '.join(self.not_in_scope)}"
        said = f"the paper's scope: {where}" + (f" ({self.scope_note})" if self.scope_note else "")
        return said if self.in_scope(dataset) else f"generalisation test, outside {said}"


def load_claims(path: Path, known_methods: set[str] | None = None) -> list[Claim]:
    """Claims from a YAML list, checked whole (mtlbench.claims_file): every problem in one message, each naming
    its claim. With `known_methods`, a method or baseline must be one of them (or a user's `module:Name`)."""
    from mtlbench.claims_file import read_claims
    from mtlbench.registry import DATASETS
    from mtlbench.tasks import metric_names

    known_metrics = metric_names() | set(DERIVED_METRICS)
    entries = read_claims(Path(path), known_methods, known_metrics, set(DATASETS.names()))
    return [Claim(**entry) for entry in entries]


# --- small statistics -----------------------------------------------------------------------------------------
def one_sided_p(d: np.ndarray, shift: float = 0.0) -> float:
    """p of H0: mean(d) <= shift against mean(d) > shift (paired t on the per-seed differences)."""
    if len(d) < 2:
        return np.nan
    if np.all(d == d[0]):
        return 0.0 if d[0] > shift else 1.0
    return float(st.ttest_1samp(d, shift, alternative="greater").pvalue)


def interval(d: np.ndarray, level_alpha: float) -> tuple[float, float, float]:
    """Mean and the two-sided (1 - 2 a) t-interval: its lower bound exceeds s exactly when the one-sided test
    of mean > s rejects at a (one_sided_p(d, s) < a), its upper bound lies below s exactly when that of mean < s
    does."""
    if len(d) < 2:
        return float(d.mean()) if len(d) else np.nan, np.nan, np.nan
    low, high = t_interval(d, 1 - level_alpha)
    return float(d.mean()), float(low), float(high)


def detectable_effect(d: np.ndarray, alpha: float, power: float = 0.8) -> float:
    """The smallest mean difference n seeds detect with a one-sided paired t-test at `alpha` and `power`."""
    n = len(d)
    if n < 2:
        return np.nan
    return float((st.t.ppf(1 - alpha, n - 1) + st.t.ppf(power, n - 1)) * d.std(ddof=1) / np.sqrt(n))


@dataclass
class Family:
    """One-sided tests of several parts (tasks, or a claim's parts), Holm across them."""

    p: np.ndarray  # raw one-sided p per part

    @classmethod
    def of(cls, diffs: list[np.ndarray], shift: float = 0.0, sign: int = 1) -> Family:
        """H1 per part: sign * mean(d) > sign * shift."""
        return cls(np.array([one_sided_p(sign * d, sign * shift) for d in diffs], float))

    def adjusted(self) -> np.ndarray:
        """Holm's adjusted p-values (NaN counts as 1)."""
        return holm_adjusted(self.p)

    def all_hold(self, alpha: float) -> bool:
        return bool((self.adjusted() < alpha).all())

    def any_holds(self, alpha: float) -> bool:
        return bool((self.adjusted() < alpha).any())

    def holding(self, alpha: float) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.adjusted() < alpha)]

    def binding(self, alpha: float) -> tuple[int, float]:
        """The part that decides whether every part holds, and its Holm level: rank k (1-based, ascending p)
        is tested at alpha / (m - k + 1), and all hold exactly when the part maximising (m - k + 1) p holds."""
        p = np.nan_to_num(self.p, nan=1.0)
        m, order = len(p), np.argsort(p, kind="stable")
        k = int(np.argmax((m - np.arange(m)) * p[order]))
        return int(order[k]), alpha / (m - k)

    def level_of(self, i: int, alpha: float) -> float:
        """The Holm level part `i` is tested at: alpha / (m - k + 1) for its rank k (1-based, ascending p)."""
        order = np.argsort(np.nan_to_num(self.p, nan=1.0), kind="stable")
        return alpha / (len(self.p) - int(np.flatnonzero(order == i)[0]))

    def first(self, alpha: float) -> tuple[int, float]:
        """The part that decides whether any part holds (the smallest p), and its Holm level alpha / m."""
        return int(np.nanargmin(np.nan_to_num(self.p, nan=1.0))), alpha / len(self.p)


# --- per-seed differences -------------------------------------------------------------------------------------
def _values(data: pd.DataFrame, method: str, metric: str) -> pd.Series:
    rows = data[data.method == method]
    if metric in DERIVED_METRICS and not (rows.metric == metric).any():
        source, derive = DERIVED_METRICS[metric]
        return derive(rows[rows.metric == source].set_index("seed").value.astype(float))
    return rows[rows.metric == metric].set_index("seed").value.astype(float)


def paired_differences(
    tidy: pd.DataFrame, dataset: str, method: str, baseline: str, task: str, metric: str
) -> np.ndarray:
    """Per seed, signed so that positive favours `method`: Delta_m in percentage points (baseline - method),
    a task metric in % of the baseline's value (a derived metric such as rmse from the run's mse)."""
    data = tidy[(tidy.dataset == dataset) & (tidy.split == "test") & (tidy.status == "ok") & (tidy.task == task)]
    a, b = _values(data, method, metric), _values(data, baseline, metric)
    seeds = a.index.intersection(b.index)
    av, bv = a[seeds].to_numpy(float), b[seeds].to_numpy(float)
    if metric == DELTA_M:
        return bv - av
    source = DERIVED_METRICS.get(metric, (metric,))[0]
    higher = data[data.metric == source].higher_is_better
    sign = 1 if (bool(higher.iloc[0]) if len(higher) else True) else -1
    return sign * (av - bv) / np.abs(bv) * 100


def task_metrics(tidy: pd.DataFrame, dataset: str, metric: str) -> list[tuple[str, str]]:
    """(task, metric) pairs a per-task test uses: the listed metrics of every task for `tasks:m1,m2`, else each
    task's primary (first) metric (`tasks`, and the per-task tests of a claim that names no list)."""
    data = tidy[(tidy.dataset == dataset) & (tidy.metric != DELTA_M) & (tidy.split == "test")]
    tasks = list(data.groupby("task", sort=False).metric.first().items())
    if not metric.startswith("tasks:"):
        return tasks
    listed = [m.strip() for m in metric.partition(":")[2].split(",") if m.strip()]
    return [(t, m) for t, _ in tasks for m in listed]


def task_differences(claim: Claim, tidy: pd.DataFrame, dataset: str) -> list[tuple[str, np.ndarray]]:
    """Per task metric (`task.metric`), the per-seed differences of the claim's method to its baseline."""
    return [
        (f"{t}.{m}", paired_differences(tidy, dataset, claim.method, claim.baseline, t, m))
        for t, m in task_metrics(tidy, dataset, claim.metric)
    ]


def is_per_task(metric: str) -> bool:
    return metric == "tasks" or metric.startswith("tasks:")


# --- rows -----------------------------------------------------------------------------------------------------
@dataclass
class Shown:
    """What a row shows: one part's per-seed differences at the level the decision used on it."""

    d: np.ndarray
    level_alpha: float
    unit: str


def _row(claim: Claim, dataset: str, verdict: str, note: str, shown: Shown | None, p: float) -> dict[str, Any]:
    d = shown.d if shown is not None else np.array([])
    mean, low, high = interval(d, shown.level_alpha) if shown is not None else (np.nan, np.nan, np.nan)
    return {
        "id": claim.id,
        "claim": claim.claim,
        "source": claim.source,
        "dataset": dataset,
        "method": claim.method,
        "baseline": claim.baseline,
        "test": claim.test,
        "estimate": mean,
        "ci_low": low,
        "ci_high": high,
        "ci_level": 1 - 2 * shown.level_alpha if shown is not None and len(d) > 1 else np.nan,
        "unit": shown.unit if shown is not None else "",
        "n": len(d),
        "p": p,
        "verdict": verdict,
        "note": note,
    }


def _no_data(claim: Claim, dataset: str, note: str = "no paired task metrics for method and baseline here"):
    """An inconclusive row without an estimate: what the run lacks to test the claim."""
    return _row(claim, dataset, "inconclusive", note, None, np.nan)


def _superior(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    if is_per_task(claim.metric):
        return _superior_on_every_task(claim, tidy, dataset, alpha)
    task, _, metric = ("all", "", DELTA_M) if claim.metric == DELTA_M else claim.metric.partition(".")
    d = paired_differences(tidy, dataset, claim.method, claim.baseline, task, metric)
    if len(d) == 0:
        return _no_data(claim, dataset)
    unit = "pp of Delta_m" if metric == DELTA_M else f"% of {claim.baseline}'s {task}.{metric}"
    p, p_worse, p_small = one_sided_p(d), one_sided_p(-d), one_sided_p(claim.margin - d)
    if p < alpha:
        verdict, note = "reproduced", ""
    elif p_worse < alpha:
        verdict, note = "contradicted", f"{claim.method} is significantly worse (one-sided p {p_worse:.3g})"
    elif p_small < alpha:
        verdict, note = "not reproduced", f"an improvement of {claim.margin:g} or more is ruled out"
    else:
        verdict = "inconclusive"
        note = f"smallest detectable improvement at n={len(d)}: {detectable_effect(d, alpha):.3g}"
    return _row(claim, dataset, verdict, note, Shown(d, alpha, unit), p)


def _parts(claim: Claim, tidy: pd.DataFrame, dataset: str) -> tuple[list[str], list[np.ndarray]] | None:
    parts = task_differences(claim, tidy, dataset)
    if not parts or min(len(d) for _, d in parts) < 2:
        return None
    return [name for name, _ in parts], [d for _, d in parts]


def _superior_on_every_task(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    """Better on every task metric: one-sided paired t-tests, Holm across them; the row shows the part that
    decided the verdict at its Holm level."""
    parts = _parts(claim, tidy, dataset)
    if parts is None:
        return _no_data(claim, dataset)
    names, diffs = parts
    better, worse = Family.of(diffs), Family.of(diffs, sign=-1)
    small = Family.of(diffs, claim.margin, sign=-1)  # H1: the improvement is below the margin
    unit = f"% of {claim.baseline}'s value"
    if better.all_hold(alpha):
        family, (i, level), verdict = better, better.binding(alpha), "reproduced"
        note = f"better on every one of {len(diffs)} task metrics (Holm)"
    elif worse.any_holds(alpha):
        family, (i, level), verdict = worse, worse.first(alpha), "contradicted"
        note = f"significantly worse on {', '.join(names[j] for j in worse.holding(alpha))} (Holm)"
    elif small.any_holds(alpha):
        family, (i, level), verdict = small, small.first(alpha), "not reproduced"
        note = f"an improvement of {claim.margin:g}% or more is ruled out on {names[small.first(alpha)[0]]}"
    else:
        family, (i, level), verdict = better, better.binding(alpha), "inconclusive"
        won = [names[j] for j in better.holding(alpha)]
        note = (
            f"better on {', '.join(won) if won else 'no task'} (Holm); smallest detectable improvement on "
            f"{names[i]} at n={len(diffs[i])}: {detectable_effect(diffs[i], alpha):.3g}"
        )
    shown = Shown(diffs[i], level, f"{unit} ({names[i]})")
    return _row(claim, dataset, verdict, note, shown, family.adjusted()[i])


def _non_inferior(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    if claim.metric == DELTA_M:
        d = paired_differences(tidy, dataset, claim.method, claim.baseline, "all", DELTA_M)
        parts, unit = (([DELTA_M], [d]) if len(d) > 1 else None), "pp of Delta_m"
    else:
        parts, unit = _parts(claim, tidy, dataset), f"% of {claim.baseline}'s value"
    if parts is None:
        return _no_data(claim, dataset)
    names, diffs = parts
    ni = Family.of(diffs, -claim.margin)  # H1: worse by less than the margin
    beyond = Family.of(diffs, -claim.margin, sign=-1)  # H1: worse by more than the margin
    worse = Family.of(diffs, sign=-1)  # H1: worse at all
    family = ni  # the family whose part is shown, unless a verdict below says otherwise
    if ni.all_hold(alpha):
        (i, level), verdict = ni.binding(alpha), "reproduced"
        note = f"every one of {len(diffs)} non-inferior by {claim.margin:g} (Holm)"
        if worse.any_holds(alpha):
            note += f"; significantly worse on {', '.join(names[j] for j in worse.holding(alpha))}, within it"
    elif beyond.any_holds(alpha):
        family, (i, level), verdict = beyond, beyond.first(alpha), "contradicted"
        note = f"worse than the margin on {', '.join(names[j] for j in beyond.holding(alpha))} (Holm)"
    elif worse.any_holds(alpha):  # shown: the task that kept non-inferiority from holding, at its level
        (i, level), verdict = ni.binding(alpha), "not reproduced"
        bad = ", ".join(names[j] for j in worse.holding(alpha))
        note = f"significantly worse on {bad}, neither within nor beyond the margin shown (Holm)"
    else:
        (i, level), verdict = ni.binding(alpha), "inconclusive"
        note = f"margin {claim.margin:g}; smallest detectable shift at n={len(diffs[i])}: "
        note += f"{detectable_effect(diffs[i], alpha):.3g}"
    shown = Shown(diffs[i], level, f"{unit} ({names[i]})")
    return _row(claim, dataset, verdict, note, shown, family.adjusted()[i])


def _negative_sharing(claim: Claim, tidy: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    parts = _parts(claim, tidy, dataset)
    if parts is None:
        return _no_data(claim, dataset)
    names, diffs = parts
    worse, ni = Family.of(diffs, sign=-1), Family.of(diffs, -claim.margin)
    family = worse
    if worse.any_holds(alpha):
        (i, level), verdict = worse.first(alpha), "reproduced"
        note = "worse on " + ", ".join(names[j] for j in worse.holding(alpha)) + " (Holm)"
    elif ni.all_hold(alpha):
        family, (i, level), verdict = ni, ni.binding(alpha), "contradicted"
        note = f"non-inferior on every task by {claim.margin:g} (Holm)"
    else:
        (i, level), verdict = worse.first(alpha), "inconclusive"
        note = f"smallest detectable shift at n={len(diffs[i])}: {detectable_effect(diffs[i], alpha):.3g}"
    unit = f"% of {claim.baseline}'s value ({names[i]})"
    return _row(claim, dataset, verdict, note, Shown(diffs[i], level, unit), family.adjusted()[i])


# --- relations ------------------------------------------------------------------------------------------------
def relation_scores(records: list[RunRecord], dataset: str, method: str) -> pd.DataFrame:
    """Per seed: Spearman of the learned relation with the ground truth, and the mean learned weight of the pairs
    of each ground-truth value (columns `truth=<value>`, highest first)."""
    rows = []
    for r in records:
        if r.dataset != dataset or r.method != method or not r.ok:
            continue
        truth = np.array(r.task_info.get("ground_truth_relation") or [])
        learned = np.array(r.method_state.get("relation") or [])
        if truth.size == 0 or learned.shape != truth.shape:
            continue
        rows.append({"seed": r.seed, **relation_score(truth, learned)})
    return pd.DataFrame(rows)


def relation_score(truth: np.ndarray, learned: np.ndarray) -> dict[str, float]:
    """One learned relation matrix against the ground truth (pairs u < v): Spearman, and the mean learned weight
    of the pairs of each ground-truth value (`truth=<value>`, highest first)."""
    i, j = np.triu_indices(len(truth), 1)
    t, w = truth[i, j], learned[i, j]
    levels = sorted(set(t), reverse=True)
    return {
        "spearman": st.spearmanr(w, t).statistic,
        **{f"truth={level:g}": float(w[t == level].mean()) for level in levels},
    }


# synthetic_relations' ground truth: 2 twins, 1 the same group, 0 across groups
LEVEL_NAMES = {2.0: "twins", 1.0: "same group", 0.0: "across groups"}


def relation_parts(scores: pd.DataFrame, tolerance: float) -> list[tuple[str, str, np.ndarray]]:
    """The claim's parts as (name, what it says in numbers, per-seed values that are positive when it holds):
    Spearman above 0, each truth level's weight above the next lower one's, and, where the truth has a 0 level,
    its weight below `tolerance`."""
    levels = [c for c in scores.columns if c.startswith("truth=")]
    values = [float(c.removeprefix("truth=")) for c in levels]
    known = set(values) <= set(LEVEL_NAMES)
    names = [LEVEL_NAMES[v] if known else f"truth {v:g}" for v in values]
    mean = {c: scores[c].mean() for c in levels}
    parts = [("Spearman > 0", f"rho {scores.spearman.mean():.3g}", scores.spearman.to_numpy(float))]
    for k in range(len(levels) - 1):
        (a, na), (b, nb) = (levels[k], names[k]), (levels[k + 1], names[k + 1])
        said = f"{mean[a]:.3g} > {mean[b]:.3g}"
        parts.append((f"{na} > {nb}", said, scores[a].to_numpy(float) - scores[b].to_numpy(float)))
    if values and values[-1] == 0:
        said = f"{mean[levels[-1]]:.3g} < {tolerance:g}"
        parts.append((f"{names[-1]} about 0", said, tolerance - scores[levels[-1]].to_numpy(float)))
    return parts


def _relations(claim: Claim, records: list[RunRecord], dataset: str, alpha: float) -> dict[str, Any]:
    scores = relation_scores(records, dataset, claim.method)
    if scores.empty or len(scores) < 2:
        return _no_data(claim, dataset, "no learned relation with a ground truth in at least 2 seeds")
    parts = relation_parts(scores, claim.tolerance)
    diffs = [d for _, _, d in parts]
    holds, opposite = Family.of(diffs), Family.of(diffs, sign=-1)
    held, failed = set(holds.holding(alpha)), set(opposite.holding(alpha))
    state = ["holds" if k in held else "fails" if k in failed else "not shown" for k in range(len(parts))]
    note = "; ".join(f"{name} ({said}): {s}" for (name, said, _), s in zip(parts, state, strict=True))
    family = holds
    if holds.all_hold(alpha):
        (i, level), verdict = holds.binding(alpha), "reproduced"
    elif 0 in failed:
        family, (i, level), verdict = opposite, (0, opposite.level_of(0, alpha)), "contradicted"
    elif failed:
        family, (i, level), verdict = opposite, opposite.first(alpha), "not reproduced"
    else:
        (i, level), verdict = holds.binding(alpha), "inconclusive"
    unit = f"part shown: {parts[i][0]} (positive: it holds" + (
        f"; tolerance {claim.tolerance:g} minus the weight)" if parts[i][0].endswith("about 0") else ")"
    )
    return _row(claim, dataset, verdict, note + " (Holm)", Shown(diffs[i], level, unit), family.adjusted()[i])


# --- counted and timed ----------------------------------------------------------------------------------------
def _by_method(
    records: list[RunRecord], dataset: str, method: str, value: Callable[[RunRecord], float | None]
) -> pd.Series:
    return pd.Series(
        {r.seed: value(r) for r in records if r.dataset == dataset and r.method == method and r.ok},
        dtype=float,
    )


def _fewer_parameters(claim: Claim, records: list[RunRecord], dataset: str) -> dict[str, Any]:
    a = _by_method(records, dataset, claim.method, lambda r: r.params.inference)
    b = _by_method(records, dataset, claim.baseline, lambda r: r.params.inference)
    if a.empty or b.empty:
        return _no_data(claim, dataset, "method or baseline not in this run")
    ratio = float(a.mean() / b.mean())
    row = _row(
        claim,
        dataset,
        "reproduced" if ratio < 1 else "contradicted",
        f"mean {a.mean():.0f} vs {b.mean():.0f} parameters, per seed {a.min():.0f}..{a.max():.0f} "
        "(counted, not estimated)",
        None,
        np.nan,
    )
    return {**row, "estimate": ratio, "unit": "inference parameters, ratio of means to baseline", "n": len(a)}


def _cheaper_step(claim: Claim, rounds: pd.DataFrame, dataset: str, alpha: float) -> dict[str, Any]:
    """From the interleaved benchmark: per round, log(baseline step / method step), > 0 when the method is
    cheaper; the row shows the ratio method / baseline (geometric mean) and its interval."""
    data = rounds[rounds.dataset == dataset].pivot_table(index="round", columns="method", values="seconds")
    if claim.method not in data or claim.baseline not in data:
        return _no_data(claim, dataset, "method or baseline not in the interleaved benchmark")
    data = data[[claim.method, claim.baseline]].dropna()  # a round that timed only one of them pairs nothing
    d = np.log(data[claim.baseline].to_numpy(float) / data[claim.method].to_numpy(float))
    p, p_worse = one_sided_p(d), one_sided_p(-d)
    verdict = "reproduced" if p < alpha else "contradicted" if p_worse < alpha else "inconclusive"
    note = "interleaved benchmark (results/benchmarks/step_rounds.csv: one process, order alternating per round)"
    row = _row(claim, dataset, verdict, note, Shown(d, alpha, "step time, ratio to baseline (geometric mean)"), p)
    ratio = {"estimate": np.exp(-row["estimate"]), "ci_low": np.exp(-row["ci_high"]), "ci_high": np.exp(-row["ci_low"])}
    return {**row, **ratio}


# --- the table ------------------------------------------------------------------------------------------------
@dataclass
class Evidence:
    """What the verdicts are computed from: the tidy metrics, the run records and the benchmark's rounds."""

    tidy: pd.DataFrame
    records: list[RunRecord]
    step_rounds: pd.DataFrame | None = None

    def datasets_for(self, claim: Claim) -> list[str]:
        if claim.test == "cheaper_step":
            have = [] if self.step_rounds is None else sorted(set(self.step_rounds.dataset))
        elif claim.test == "relations":
            have = sorted({r.dataset for r in self.records if r.task_info.get("ground_truth_relation")})
        else:
            have = sorted({r.dataset for r in self.records})
        return have if "all" in claim.datasets else list(claim.datasets)

    def missing(self, claim: Claim, dataset: str) -> list[str]:
        present = {(r.dataset, r.method) for r in self.records}
        if claim.test == "cheaper_step":
            return [
                m
                for m in (claim.method, claim.baseline)
                if self.step_rounds is None
                or m not in set(self.step_rounds[self.step_rounds.dataset == dataset].method)
            ]
        return [m for m in (claim.method, claim.baseline) if m and (dataset, m) not in present]


def _verdict_row(claim: Claim, evidence: Evidence, dataset: str, alpha: float) -> dict[str, Any]:
    if claim.test == "relations":
        return _relations(claim, evidence.records, dataset, alpha)
    if claim.test == "fewer_parameters":
        return _fewer_parameters(claim, evidence.records, dataset)
    if claim.test == "cheaper_step":
        assert evidence.step_rounds is not None
        return _cheaper_step(claim, evidence.step_rounds, dataset, alpha)
    on_metrics = {"superior": _superior, "non_inferior": _non_inferior, "negative_sharing": _negative_sharing}
    return on_metrics[claim.test](claim, evidence.tidy, dataset, alpha)


def _convergence_flag(claim: Claim, records: list[RunRecord], dataset: str) -> str:
    """'method k/n, baseline k/n' runs still improving at the end of their budget, for tests on trained metrics."""
    if claim.test in ("fewer_parameters", "cheaper_step"):
        return ""
    counts = [(m, *still_improving_counts(records, dataset, m)) for m in (claim.method, claim.baseline) if m]
    return ", ".join(f"{m} {k}/{n}" for m, k, n in counts if k)


def _scoped(claim: Claim, dataset: str, row: dict[str, Any], flag: str) -> dict[str, Any]:
    note = row["note"]
    if flag:
        note = (note + "; " if note else "") + f"rests on runs still improving at the end of the budget: {flag}"
    scope = IN_SCOPE if claim.in_scope(dataset) else GENERALISATION
    return {**row, "scope": scope, "scope_note": claim.why_in_scope(dataset), "still_improving": flag, "note": note}


def evaluate_claims(
    claims: list[Claim],
    tidy: pd.DataFrame,
    records: list[RunRecord],
    alpha: float,
    step_rounds: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (claim, dataset): the estimate, the interval its decision uses, n, p, the verdict, whether the
    dataset is in the claim's scope (else a generalisation test) and how many runs were still improving."""
    evidence = Evidence(tidy, records, step_rounds)
    rows = []
    for claim in claims:
        for dataset in evidence.datasets_for(claim):
            missing = evidence.missing(claim, dataset)
            if missing and "all" in claim.datasets:
                continue
            row = (
                _no_data(claim, dataset, f"{', '.join(missing)} not run on {dataset}")
                if missing
                else _verdict_row(claim, evidence, dataset, alpha)
            )
            rows.append(_scoped(claim, dataset, row, _convergence_flag(claim, records, dataset)))
    return pd.DataFrame(rows, columns=COLUMNS)


# --- display --------------------------------------------------------------------------------------------------
def scope_of(table: pd.DataFrame) -> pd.Series:
    """Each row's scope; a claims table written before scopes existed is all in the papers' scope."""
    return table.scope if "scope" in table else pd.Series(IN_SCOPE, index=table.index)


def _estimate_text(e: float, lo: float, hi: float, level: float) -> str:
    if pd.isna(e):
        return "—"
    return f"{e:.3g}" + (f" [{lo:.3g}, {hi:.3g}] ({level:.3g})" if pd.notna(lo) else "")


def claims_display(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table as it is shown (Markdown and the HTML report): a generalisation test's verdict is
    labelled as such, estimates come with the interval the decision used and its level, p rounded."""
    scope = scope_of(table)
    shown = table.assign(
        verdict=[v if s == IN_SCOPE else f"{v} (generalisation)" for v, s in zip(table.verdict, scope, strict=True)],
        estimate=[
            _estimate_text(e, lo, hi, lvl)
            for e, lo, hi, lvl in zip(table.estimate, table.ci_low, table.ci_high, table.ci_level, strict=True)
        ],
        p=[f"{p:.3g}" if pd.notna(p) else "—" for p in table.p],
        still_improving=table.get("still_improving", pd.Series([""] * len(table), index=table.index)).fillna(""),
    )
    columns = ["verdict", "claim", "dataset", "test", "estimate", "unit", "n", "p", "still_improving", "note"]
    robustness = [c for c in ("protocols", "sensitivity") if c in shown and shown[c].fillna("").astype(str).any()]
    shown = shown.fillna({c: "" for c in robustness})
    return shown[columns + robustness + [c for c in ("scope_note", "source") if c in shown]].rename(
        columns={
            "estimate": "estimate [interval] (level)",
            "still_improving": "runs still improving",
            "scope_note": "scope",
        }
    )


def verdict_definitions_markdown() -> str:
    return "\n".join(f"- **{test}**: {text}" for test, text in VERDICT_DEFINITIONS.items())


def claims_markdown(table: pd.DataFrame) -> str:
    scope = scope_of(table)
    paper, general = table[scope == IN_SCOPE], table[scope != IN_SCOPE]
    lines = [
        "# Claims",
        "",
        "One row per claim and dataset: the estimate favours the method when positive (for ratios: below 1), "
        "paired by seed (the step cost: by benchmark round). " + INTERVAL_NOTE,
        "",
        "## In the scope the paper made the claim in",
        "",
        claims_display(paper).to_markdown(index=False) if len(paper) else "No row.",
        "",
        "## Generalisation tests",
        "",
        "The claim scored on a dataset outside the experiment the paper made it on: what the run shows there, "
        "never the paper's claim failing.",
        "",
        claims_display(general).to_markdown(index=False) if len(general) else "No row.",
        "",
        "## What the verdicts mean",
        "",
        verdict_definitions_markdown(),
        "",
    ]
    return "\n".join(lines)


def _other_protocols(said: Any) -> str:
    """' · published: contradicted · official code: not reproduced' from a row's `protocols` text: the verdicts
    under the protocols other than fair that judged it (one that does not apply is left out)."""
    if not isinstance(said, str) or not said:
        return ""
    parts = [p.split(" (")[0] for p in said.split(" · ")[1:] if "does not apply" not in p]
    return "".join(f" · {p}" for p in parts)


def verdict_grid(table: pd.DataFrame) -> str:
    """One row per claim, one column per dataset: the verdict under the suite's (fair) protocol, '(generalisation)'
    outside the claim's scope, '*' where it rests on runs still improving, '†' where it depends on a
    reconstruction choice, then the verdict under each other protocol that judged it and the official code's
    (README's table is this, written from the reference claims.csv)."""
    scope = scope_of(table)
    blank = pd.Series("", index=table.index)
    flag = table.get("still_improving", blank).fillna("")
    depends = table.get("sensitivity", blank).fillna("").astype(str).str.startswith("depends on")
    others = table.get("protocols", blank).map(_other_protocols)
    cells = table.assign(
        cell=[
            v + (" (generalisation)" if s == GENERALISATION else "") + (" *" if f else "") + (" †" if d else "") + o
            for v, s, f, d, o in zip(table.verdict, scope, flag, depends, others, strict=True)
        ]
    )
    grid = cells.pivot_table(index="claim", columns="dataset", values="cell", aggfunc="first", sort=False)
    return grid.fillna("—").reset_index().to_markdown(index=False)
