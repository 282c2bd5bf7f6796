"""Run records -> tidy tables. Aggregation reads only run records: it never re-trains or reads MLflow.

A diverged run stays visible: it has a row with status `diverged` (and no metric values) in the tidy table
and is counted in the summary's `n_diverged`, never dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

TIDY_COLUMNS = ["dataset", "method", "seed", "split", "task", "metric", "value", "higher_is_better", "status"]
DELTA_M = "delta_m"


def load_records(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def tidy_metrics(records: list[dict]) -> pd.DataFrame:
    """One row per (dataset, method, seed, split, task, metric); diverged runs get one row with no value."""
    rows = []
    for r in records:
        base = {"dataset": r["dataset"], "method": r["method"], "seed": r["seed"], "status": r["status"]}
        if r["status"] != "ok":
            rows.append({**base, "split": "test", "task": None, "metric": None, "value": np.nan,
                         "higher_is_better": None})
            continue
        for split in ("val", "test"):
            for task, metrics in r["metrics"][split].items():
                for metric, value in metrics.items():
                    rows.append({**base, "split": split, "task": task, "metric": metric, "value": value,
                                 "higher_is_better": r["directions"][task][metric]})
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def delta_m(tidy: pd.DataFrame, reference: str = "stl", split: str = "test") -> pd.DataFrame:
    """Delta_m% per run against the reference (STL) run of the same dataset and seed; lower is better:
    (1/K) sum_k (-1)^{h_k} (M_k - M_k^ref) / M_k^ref * 100 over every task metric k."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split)]
    ref = ok[ok.method == reference][["dataset", "seed", "task", "metric", "value"]].rename(columns={"value": "ref"})
    merged = ok.merge(ref, on=["dataset", "seed", "task", "metric"], how="inner")
    sign = np.where(merged.higher_is_better.astype(bool), -1.0, 1.0)
    merged["rel"] = sign * (merged.value - merged.ref) / merged.ref.abs() * 100
    out = merged.groupby(["dataset", "method", "seed"], as_index=False).rel.mean().rename(columns={"rel": DELTA_M})
    return out


def with_delta_m(tidy: pd.DataFrame, reference: str = "stl") -> pd.DataFrame:
    """The tidy table plus Delta_m rows (task `all`, metric `delta_m`, lower is better)."""
    dm = delta_m(tidy, reference)
    rows = dm.assign(split="test", task="all", metric=DELTA_M, value=dm[DELTA_M], higher_is_better=False,
                     status="ok")[TIDY_COLUMNS]
    return pd.concat([tidy, rows], ignore_index=True) if len(rows) else tidy


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    n = len(values)
    if n < 2:
        return (np.nan, np.nan)
    half = st.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return (values.mean() - half, values.mean() + half)


def summarize(tidy: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean, std, 95% CI and n per (dataset, method, task, metric); diverged runs counted per method."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split)]
    # a task's primary metric is the first its spec lists (records keep that order)
    primary = set(ok.groupby(["dataset", "task"], sort=False).metric.first().items())
    rows = []
    for (dataset, method, task, metric), grp in ok.groupby(["dataset", "method", "task", "metric"], sort=True):
        values = grp.value.to_numpy(dtype=float)
        low, high = confidence_interval(values)
        rows.append({"dataset": dataset, "method": method, "task": task, "metric": metric,
                     "primary": ((dataset, task), metric) in primary,
                     "higher_is_better": bool(grp.higher_is_better.iloc[0]), "mean": values.mean(),
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan, "ci95_low": low, "ci95_high": high,
                     "n": len(values)})
    summary = pd.DataFrame(rows)
    diverged = (tidy[tidy.status != "ok"].groupby(["dataset", "method"]).seed.nunique()
                .rename("n_diverged").reset_index())
    if summary.empty:
        summary = diverged.assign(task=None, metric=None)
    else:
        summary = summary.merge(diverged, on=["dataset", "method"], how="outer")
    summary["n_diverged"] = summary["n_diverged"].fillna(0).astype(int)
    return summary
