"""Significance tests on run records (METHODS.md section 6), with scipy / statsmodels / scikit-posthocs.

Per dataset, every method against hard sharing and against STL, paired by seed, for every task metric and
for Delta_m: paired t-test, Wilcoxon signed-rank (with its smallest attainable p stated, since with n seeds
it is 2 / 2^n and n = 5 can never reach 0.05), Holm correction across the comparisons of a family, and the
paired effect size d_z. Across datasets: Friedman test, Nemenyi post-hoc, mean ranks, critical difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from mtlbench.aggregate import DELTA_M


def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided p-value the exact Wilcoxon signed-rank test can give with n non-zero pairs."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def paired_tests(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired t and Wilcoxon of a - b, and Cohen's d_z (mean difference / std of differences)."""
    diff = a - b
    n = len(diff)
    out = {"n": n, "mean_diff": float(diff.mean()) if n else np.nan}
    if n >= 2 and np.any(diff != diff[0]):
        out["t_stat"], out["t_p"] = (float(x) for x in st.ttest_rel(a, b))
        out["effect_size_dz"] = float(diff.mean() / diff.std(ddof=1))
    else:  # fewer than two pairs, or constant differences: the t statistic is undefined
        out["t_stat"], out["t_p"] = np.nan, (1.0 if n >= 2 and not np.any(diff) else np.nan)
        out["effect_size_dz"] = np.nan
    nonzero = int(np.count_nonzero(diff))
    if nonzero >= 1:
        res = st.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        out["wilcoxon_stat"], out["wilcoxon_p"] = float(res.statistic), float(res.pvalue)
    else:
        out["wilcoxon_stat"], out["wilcoxon_p"] = np.nan, 1.0 if n else np.nan
    out["wilcoxon_min_p"] = wilcoxon_min_p(nonzero)
    return out


def significance(tidy: pd.DataFrame, baselines: tuple[str, ...] = ("hps", "stl"), alpha: float = 0.05,
                 split: str = "test") -> pd.DataFrame:
    """One row per (dataset, baseline, method, task, metric); Holm within each (dataset, baseline) family."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split)]
    rows = []
    for dataset, data in ok.groupby("dataset"):
        for baseline in baselines:
            base = data[data.method == baseline]
            if base.empty:
                continue
            for method in sorted(set(data.method) - {baseline}):
                other = data[data.method == method]
                for (task, metric), grp in other.groupby(["task", "metric"]):
                    ref = base[(base.task == task) & (base.metric == metric)]
                    paired = grp.merge(ref, on="seed", suffixes=("", "_base"))
                    if paired.empty:
                        continue
                    higher = bool(grp.higher_is_better.iloc[0])
                    res = paired_tests(paired.value.to_numpy(float), paired.value_base.to_numpy(float))
                    rows.append({"dataset": dataset, "baseline": baseline, "method": method, "task": task,
                                 "metric": metric, "higher_is_better": higher, **res})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for column in ("t_p", "wilcoxon_p"):
        table[f"{column}_holm"] = np.nan
        for _, idx in table.groupby(["dataset", "baseline"]).groups.items():
            p = table.loc[idx, column]
            valid = p.notna()
            if valid.any():
                table.loc[p[valid].index, f"{column}_holm"] = multipletests(p[valid], method="holm")[1]
    table["better"] = np.where(table.higher_is_better, table.mean_diff > 0, table.mean_diff < 0)
    table["significant"] = table.t_p_holm < alpha
    table["wilcoxon_note"] = np.where(
        table.wilcoxon_min_p > alpha,
        [f"n={n}: Wilcoxon cannot reach p<{alpha} (smallest p {m:.3g})" for n, m in zip(table.n, table.wilcoxon_min_p,
                                                                                       strict=True)],
        "",
    )
    return table


def safeness(sig: pd.DataFrame, reference: str = "stl") -> pd.DataFrame:
    """Per method and dataset: the task metrics significantly worse than STL (Holm-corrected paired t)."""
    if sig.empty:
        return pd.DataFrame(columns=["dataset", "method", "n_worse", "worse", "n_compared"])
    vs = sig[(sig.baseline == reference) & (sig.task != "all")]
    rows = []
    for (dataset, method), grp in vs.groupby(["dataset", "method"]):
        worse = grp[grp.significant & ~grp.better]
        rows.append({"dataset": dataset, "method": method, "n_worse": len(worse),
                     "worse": "; ".join(f"{t}.{m}" for t, m in zip(worse.task, worse.metric, strict=True)),
                     "n_compared": len(grp)})
    return pd.DataFrame(rows)


def ranking_blocks(tidy: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Blocks x methods matrix of seed-averaged primary scores, signed so that higher is better.

    A block is one (dataset, task) with that task's first metric; with few datasets this gives the
    Friedman test enough blocks. Only methods present in every block are ranked."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split) & (tidy.metric != DELTA_M)]
    first = ok.groupby(["dataset", "task"]).metric.first().rename("primary").reset_index()
    prim = ok.merge(first, on=["dataset", "task"])
    prim = prim[prim.metric == prim.primary]
    means = prim.groupby(["dataset", "task", "method"]).agg(value=("value", "mean"), hib=("higher_is_better", "first"))
    means["score"] = np.where(means.hib.astype(bool), means.value, -means.value)
    matrix = means.score.unstack("method")
    return matrix.dropna(axis=1, how="any")


def friedman_nemenyi(tidy: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Friedman test over blocks, Nemenyi post-hoc p-values, mean ranks (1 = best) and the critical difference."""
    matrix = ranking_blocks(tidy)
    k, n = matrix.shape[1], matrix.shape[0]
    result: dict = {"n_blocks": n, "n_methods": k, "blocks": [f"{d}/{t}" for d, t in matrix.index]}
    if k < 3 or n < 2:
        result.update(statistic=np.nan, p=np.nan, mean_ranks={}, critical_difference=np.nan, nemenyi=None,
                      note="Friedman needs at least 3 methods and 2 blocks")
        return result
    stat, p = st.friedmanchisquare(*[matrix[c].to_numpy() for c in matrix.columns])
    ranks = matrix.rank(axis=1, ascending=False).mean()
    q = st.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    result.update(statistic=float(stat), p=float(p), mean_ranks=ranks.sort_values().to_dict(),
                  critical_difference=float(q * np.sqrt(k * (k + 1) / (6 * n))),
                  nemenyi=sp.posthoc_nemenyi_friedman(matrix.to_numpy()).set_axis(matrix.columns, axis=0)
                  .set_axis(matrix.columns, axis=1), note="")
    return result
