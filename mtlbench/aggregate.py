"""Run records -> tidy tables. Aggregation reads only run records: it never re-trains or reads MLflow.

A diverged run stays visible: it has a row with status `diverged` (and no metric values) in the tidy table
and is counted in the summary's `n_diverged`, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from mtlbench.record import RunRecord

TIDY_COLUMNS = ["dataset", "method", "seed", "split", "task", "metric", "value", "higher_is_better", "status"]
DELTA_M = "delta_m"


def load_records(paths: Iterable[Path]) -> list[RunRecord]:
    """Run records; a file that is not one ends in one message naming it."""
    return [RunRecord.read(Path(path)) for path in paths]


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_one_config(records: list[RunRecord], paths: list[Path] | None = None) -> None:
    """Records of one (dataset, method) must share their config apart from the seed, and seeds must not repeat:
    a table row is one training budget and one setting, never a silent mix (one clear error otherwise)."""
    from mtlbench.config import config_hash
    from mtlbench.errors import MtlbenchError

    names = [str(p) for p in paths] if paths is not None else [f"record #{i}" for i in range(len(records))]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.dataset, r.method), []).append(i)
    for (dataset, method), idx in groups.items():
        seeds = [records[i].seed for i in idx]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            which = [names[i] for i in idx if records[i].seed in repeated]
            raise MtlbenchError(
                f"{dataset}/{method}: seed(s) {repeated} appear in more than one record "
                f"({', '.join(which)}); keep one record per seed"
            )
        hashes = {i: config_hash({**records[i].config, "seed": None}) for i in idx}
        if len(set(hashes.values())) == 1:
            continue
        first = _flat({k: v for k, v in records[idx[0]].config.items() if k not in ("seed", "tracking")})
        differing = set()
        for i in idx[1:]:
            other = _flat({k: v for k, v in records[i].config.items() if k not in ("seed", "tracking")})
            differing |= {k for k in first.keys() | other.keys() if first.get(k) != other.get(k)}
        by_hash: dict[str, list[str]] = {}
        for i, h in hashes.items():
            by_hash.setdefault(h, []).append(names[i])
        listing = "; ".join(f"config {h}: {', '.join(v)}" for h, v in by_hash.items())
        raise MtlbenchError(
            f"{dataset}/{method}: the records were trained with different configs (differing keys: "
            f"{', '.join(sorted(differing))}) — {listing}. One table row must be one config: delete or retrain the "
            f"odd records, or pass --allow-mixed-configs to aggregate them anyway"
        )


def tidy_metrics(records: list[RunRecord]) -> pd.DataFrame:
    """One row per (dataset, method, seed, split, task, metric); diverged runs get one row with no value."""
    rows = []
    for r in records:
        base = {"dataset": r.dataset, "method": r.method, "seed": r.seed, "status": r.status}
        if not r.ok:
            rows.append(
                {**base, "split": "test", "task": None, "metric": None, "value": np.nan, "higher_is_better": None}
            )
            continue
        for split in ("val", "test"):
            for task, metrics in r.metrics.split(split).items():
                for metric, value in metrics.items():
                    rows.append(
                        {
                            **base,
                            "split": split,
                            "task": task,
                            "metric": metric,
                            "value": value,
                            "higher_is_better": r.directions[task][metric],
                        }
                    )
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def delta_m_metrics(tidy: pd.DataFrame, reference: str, split: str = "test") -> pd.DataFrame:
    """Which task metrics enter Delta_m, per dataset: one row per (dataset, task, metric) with `used` and why not.

    Delta_m divides by the reference value, so a metric whose reference is 0 or not finite in any seed
    (precision or recall on rare positives) has no relative change; and a metric that is not finite in any run
    would make runs average different metric sets. Such a metric is left out of Delta_m for *every* method and
    seed of that dataset, so that all Delta_m of one dataset average the same metrics."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split) & (tidy.metric != DELTA_M)]
    rows = []
    for (dataset, task, metric), grp in ok.groupby(["dataset", "task", "metric"], sort=True):
        ref = grp[grp.method == reference].value.to_numpy(float)
        values = grp.value.to_numpy(float)
        if len(ref) == 0:
            reason = f"no {reference} run"
        elif not np.isfinite(ref).all():
            reason = f"{reference} value not finite in some seed"
        elif (ref == 0).any():
            reason = f"{reference} value is 0 in some seed (no relative change)"
        elif not np.isfinite(values).all():
            bad = sorted(set(grp.method[~np.isfinite(values)]))
            reason = f"not finite in some run of {', '.join(bad)}"
        else:
            reason = ""
        rows.append({"dataset": dataset, "task": task, "metric": metric, "used": not reason, "reason": reason})
    return pd.DataFrame(rows, columns=["dataset", "task", "metric", "used", "reason"])


def delta_m(tidy: pd.DataFrame, reference: str, split: str = "test") -> pd.DataFrame:
    """Delta_m% per run against the reference (STL) run of the same dataset and seed; lower is better:
    (1/K) sum_k (-1)^{h_k} (M_k - M_k^ref) / M_k^ref * 100 over the K task metrics that `delta_m_metrics`
    admits for the dataset (the same K for every run of it; `n_metrics` says how many)."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split) & (tidy.metric != DELTA_M)]
    used = delta_m_metrics(tidy, reference, split)
    used = used.loc[used.used.astype(bool), ["dataset", "task", "metric"]]
    ok = ok.merge(used, on=["dataset", "task", "metric"], how="inner")
    ref = ok[ok.method == reference][["dataset", "seed", "task", "metric", "value"]].rename(columns={"value": "ref"})
    merged = ok.merge(ref, on=["dataset", "seed", "task", "metric"], how="inner")
    sign = np.where(merged.higher_is_better.astype(bool), -1.0, 1.0)
    merged["rel"] = sign * (merged.value - merged.ref) / merged.ref.abs() * 100
    if merged.empty:
        return pd.DataFrame(columns=["dataset", "method", "seed", DELTA_M, "n_metrics"])
    out = merged.groupby(["dataset", "method", "seed"], as_index=False).agg(
        **{DELTA_M: ("rel", "mean"), "n_metrics": ("rel", "size")}
    )
    return out


def with_delta_m(tidy: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The tidy table plus Delta_m rows (task `all`, metric `delta_m`, lower is better)."""
    dm = delta_m(tidy, reference)
    rows = dm.assign(split="test", task="all", metric=DELTA_M, value=dm[DELTA_M], higher_is_better=False, status="ok")[
        TIDY_COLUMNS
    ]
    return pd.concat([tidy, rows], ignore_index=True) if len(rows) else tidy


def t_interval(values: np.ndarray, quantile: float) -> tuple[float, float]:
    """The suite's one t-interval: mean -+ t_quantile(n - 1) s / sqrt(n) (quantile 0.975: the two-sided 95%
    interval; 1 - a: the interval whose bounds are the one-sided tests at a); NaN below two values."""
    n = len(values)
    if n < 2:
        return (np.nan, np.nan)
    half = st.t.ppf(quantile, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return (values.mean() - half, values.mean() + half)


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    return t_interval(values, 0.5 + level / 2)


def task_averaged(tidy: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per dataset and method: each metric that every task of the dataset has, averaged over the tasks within
    a seed, then mean / std / 95% CI over seeds (the form of SRDML's table: accuracy / AUC / precision /
    recall averaged over tasks), so the suite's numbers can stand beside a paper's."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split) & (tidy.metric != DELTA_M)]
    rows = []
    for dataset, data in ok.groupby("dataset", sort=True):
        n_tasks = data.task.nunique()
        shared = [m for m, tasks in data.groupby("metric", sort=False).task.nunique().items() if tasks == n_tasks]
        for (method, metric), grp in data[data.metric.isin(shared)].groupby(["method", "metric"], sort=True):
            per_seed = grp.groupby("seed").value.mean().to_numpy(float)
            low, high = confidence_interval(per_seed)
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "metric": metric,
                    "n_tasks": n_tasks,
                    "higher_is_better": bool(grp.higher_is_better.iloc[0]),
                    "mean": per_seed.mean(),
                    "std": per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan,
                    "ci95_low": low,
                    "ci95_high": high,
                    "n": len(per_seed),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "dataset",
            "method",
            "metric",
            "n_tasks",
            "higher_is_better",
            "mean",
            "std",
            "ci95_low",
            "ci95_high",
            "n",
        ],
    )


def summarize(tidy: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean, std, 95% CI and n per (dataset, method, task, metric); diverged runs counted per method."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split)]
    # a task's primary metric is the first its spec lists (records keep that order)
    primary = set(ok.groupby(["dataset", "task"], sort=False).metric.first().items())
    rows = []
    for (dataset, method, task, metric), grp in ok.groupby(["dataset", "method", "task", "metric"], sort=True):
        values = grp.value.to_numpy(dtype=float)
        low, high = confidence_interval(values)
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "task": task,
                "metric": metric,
                "primary": ((dataset, task), metric) in primary,
                "higher_is_better": bool(grp.higher_is_better.iloc[0]),
                "mean": values.mean(),
                "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                "ci95_low": low,
                "ci95_high": high,
                "n": len(values),
            }
        )
    summary = pd.DataFrame(rows)
    diverged = (
        tidy[tidy.status != "ok"].groupby(["dataset", "method"]).seed.nunique().rename("n_diverged").reset_index()
    )
    if summary.empty:
        summary = diverged.assign(task=None, metric=None)
    else:
        summary = summary.merge(diverged, on=["dataset", "method"], how="outer")
    summary["n_diverged"] = summary["n_diverged"].fillna(0).astype(int)
    return summary


def bootstrap_delta_m(
    tidy: pd.DataFrame,
    baselines: tuple[str, ...],
    rope_pp: float,
    resamples: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (dataset, method): mean Delta_m over seeds with a percentile bootstrap 95% CI (scipy.stats.bootstrap),
    the probability of improvement over each baseline (the share of (method run, baseline run) pairs in which
    the method's Delta_m is lower, ties count half), and the Bayesian signed-rank test against each baseline
    paired by seed, with a region of practical equivalence of `rope_pp` percentage points of Delta_m."""
    dm = tidy[(tidy.metric == DELTA_M) & (tidy.status == "ok")]
    rows = []
    for (dataset, method), grp in dm.groupby(["dataset", "method"], sort=True):
        values = grp.value.to_numpy(float)
        low = high = np.nan
        if len(values) >= 2 and np.ptp(values) == 0:  # every seed the same (STL against itself): no spread
            low = high = float(values[0])
        elif len(values) >= 2:
            res = st.bootstrap(
                (values,),
                np.mean,
                n_resamples=resamples,
                confidence_level=0.95,
                method="percentile",
                random_state=np.random.default_rng(seed),
            )
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        row = {
            "dataset": dataset,
            "method": method,
            "mean_delta_m": values.mean(),
            "boot_ci95_low": low,
            "boot_ci95_high": high,
            "n": len(values),
        }
        for baseline in baselines:
            other = dm[(dm.dataset == dataset) & (dm.method == baseline)]
            row[f"p_improve_vs_{baseline}"] = probability_of_improvement(values, other.value.to_numpy(float))
            paired = (
                grp.set_index("seed").value.to_frame("m").join(other.set_index("seed").value.rename("b"), how="inner")
            )
            better, rope, worse = bayesian_signed_rank(
                paired.b.to_numpy(float) - paired.m.to_numpy(float), rope_pp, seed
            )
            row |= {
                f"bayes_better_vs_{baseline}": better,
                f"bayes_rope_vs_{baseline}": rope,
                f"bayes_worse_vs_{baseline}": worse,
            }
        rows.append(row)
    return pd.DataFrame(rows)


BAYES_SAMPLES = 5000


def bayesian_signed_rank(improvement: np.ndarray, rope: float, seed: int = 0) -> tuple[float, float, float]:
    """Benavoli et al.'s Bayesian signed-rank test (baycomp) on per-seed improvements (baseline's Delta_m minus
    the method's, percentage points): the posterior probabilities that the method is better by more than
    `rope`, practically equivalent (within +-rope), or worse by more than `rope`. No differences at all (a
    method against itself) are equivalent with certainty; fewer than two pairs say nothing (NaN)."""
    if len(improvement) < 2:
        return np.nan, np.nan, np.nan
    if np.all(improvement == 0):
        return 0.0, 1.0, 0.0
    import baycomp

    # 5,000 posterior samples (baycomp's default 50,000 cost ~1 s per comparison, 40 s per pipeline run): each
    # probability is then within about +-0.014 (two standard errors at p = 0.5) of its exact value
    better, within, worse = baycomp.SignedRankTest.probs(
        improvement, np.zeros_like(improvement), rope=rope, random_state=seed, nsamples=BAYES_SAMPLES
    )
    return float(better), float(within), float(worse)


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> float:
    """P(a < b) over all pairs (lower is better), ties half: the Mann-Whitney U of b over a divided by |a||b|."""
    if len(a) == 0 or len(b) == 0:
        return np.nan
    return float(((a[:, None] < b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean())
