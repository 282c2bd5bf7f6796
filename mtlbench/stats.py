"""Significance tests on run records (METHODS.md section 6), with scipy / statsmodels / scikit-posthocs.

Per dataset, every method against hard sharing and against STL, paired by seed, for every task metric and
for Delta_m: paired t-test, Wilcoxon signed-rank (with its smallest attainable p stated, since with n seeds
it is 2 / 2^n and n = 5 can never reach 0.05), Holm correction across the comparisons of a family, and the
paired effect size d_z. Across datasets: Friedman test, Nemenyi post-hoc, mean ranks, critical difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats as st

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


def holm_family(dataset: str, baseline: str, method: str, task: str) -> str:
    """The family a p-value is corrected in (Holm): the task metrics of one method against one baseline on one
    dataset; Delta_m (task `all`) forms its own family per (dataset, baseline), across methods."""
    if task == "all":
        return f"{dataset} | vs {baseline} | delta_m of every method"
    return f"{dataset} | vs {baseline} | {method}: task metrics"


def holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, min(1, max over ranks <= k of (m - k + 1) p_(k)), NaN counted as 1:
    the one Holm of the suite (claims' families and the significance table). NumPy, checked against
    statsmodels' `multipletests(method="holm")`, which spends most of its time in gc.collect()."""
    p = np.nan_to_num(np.asarray(p, float), nan=1.0)
    m, order = len(p), np.argsort(p, kind="stable")
    out = np.empty(m)
    out[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return out


def holm_within_families(table: pd.DataFrame, column: str) -> pd.Series:
    """`column`'s p-values Holm-adjusted within each `holm_family`, over the p-values that exist (NaN stays NaN)."""
    adjusted = pd.Series(np.nan, index=table.index)
    for _, idx in table.groupby("holm_family").groups.items():
        p = table.loc[idx, column].dropna()
        if len(p):
            adjusted[p.index] = holm_adjusted(p.to_numpy(float))
    return adjusted


def significance(tidy: pd.DataFrame, baselines: tuple[str, ...], alpha: float, split: str = "test") -> pd.DataFrame:
    """One row per (dataset, baseline, method, task, metric); Holm within each row's `holm_family`."""
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
                    rows.append(
                        {
                            "dataset": dataset,
                            "baseline": baseline,
                            "method": method,
                            "task": task,
                            "metric": metric,
                            "higher_is_better": higher,
                            **res,
                        }
                    )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["holm_family"] = [
        holm_family(d, b, m, t)
        for d, b, m, t in zip(table.dataset, table.baseline, table.method, table.task, strict=True)
    ]
    for column in ("t_p", "wilcoxon_p"):
        table[f"{column}_holm"] = holm_within_families(table, column)
    table["better"] = np.where(table.higher_is_better, table.mean_diff > 0, table.mean_diff < 0)
    table["significant"] = table.t_p_holm < alpha
    table["wilcoxon_note"] = np.where(
        table.wilcoxon_min_p > alpha,
        [
            f"n={n}: Wilcoxon cannot reach p<{alpha} (smallest p {m:.3g})"
            for n, m in zip(table.n, table.wilcoxon_min_p, strict=True)
        ],
        "",
    )
    return table


def safeness(sig: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per method and dataset: the tasks with a metric significantly worse than STL (Holm-corrected paired t),
    counted as tasks (`n_worse` of `n_compared` tasks; `worse` names the metrics)."""
    if sig.empty:
        return pd.DataFrame(columns=["dataset", "method", "n_worse", "worse", "n_compared"])
    vs = sig[(sig.baseline == reference) & (sig.task != "all")]
    rows = []
    for (dataset, method), grp in vs.groupby(["dataset", "method"]):
        worse = grp[grp.significant & ~grp.better]
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "n_worse": worse.task.nunique(),
                "worse": "; ".join(f"{t}.{m}" for t, m in zip(worse.task, worse.metric, strict=True)),
                "n_compared": grp.task.nunique(),
            }
        )
    return pd.DataFrame(rows)


# Below this many datasets, Friedman over datasets has too few blocks to say anything; ranks then fall back
# to (dataset, task) blocks, and the tables and figure say so.
MIN_DATASET_BLOCKS = 5


def ranking_blocks(
    tidy: pd.DataFrame, split: str = "test", min_datasets: int = MIN_DATASET_BLOCKS
) -> tuple[pd.DataFrame, str, str]:
    """(blocks x methods matrix of seed-averaged scores signed so that higher is better, block kind, note).

    Friedman's blocks must be independent: with at least `min_datasets` datasets the blocks are datasets,
    scored by each method's mean Delta_m. With fewer, the blocks are the (dataset, task) pairs scored by the
    task's primary metric; tasks of one dataset share inputs and models, so they are not independent, and the
    note says what that does to the p-value. Only methods present in every block are ranked."""
    ok = tidy[(tidy.status == "ok") & (tidy.split == split)]
    dm = ok[ok.metric == DELTA_M]
    by_dataset = (-dm.groupby(["dataset", "method"]).value.mean()).unstack("method").dropna(axis=1, how="any")
    if len(by_dataset) >= min_datasets:
        return by_dataset, "datasets", f"blocks are {len(by_dataset)} datasets, scored by mean Delta_m"
    tasks = ok[ok.metric != DELTA_M]
    first = tasks.groupby(["dataset", "task"]).metric.first().rename("primary").reset_index()
    prim = tasks.merge(first, on=["dataset", "task"])
    prim = prim[prim.metric == prim.primary]
    means = prim.groupby(["dataset", "task", "method"]).agg(value=("value", "mean"), hib=("higher_is_better", "first"))
    means["score"] = np.where(means.hib.astype(bool), means.value, -means.value)
    matrix = means.score.unstack("method").dropna(axis=1, how="any")
    n_datasets = matrix.index.get_level_values(0).nunique() if len(matrix) else 0
    note = (
        f"blocks are the {len(matrix)} tasks of {n_datasets} dataset(s), not datasets (fewer than "
        f"{min_datasets} datasets): tasks of one dataset share inputs and a model, so the blocks are not "
        f"independent and the Friedman p-value is optimistic; read the ranks as descriptive"
    )
    return matrix, "tasks", note


def friedman_nemenyi(tidy: pd.DataFrame, alpha: float, min_datasets: int = MIN_DATASET_BLOCKS) -> dict:
    """Friedman test over blocks, Nemenyi post-hoc p-values, mean ranks (1 = best) and the critical difference."""
    matrix, kind, note = ranking_blocks(tidy, min_datasets=min_datasets)
    k, n = matrix.shape[1], matrix.shape[0]
    names = ["/".join(map(str, b)) if isinstance(b, tuple) else str(b) for b in matrix.index]
    result: dict = {"n_blocks": n, "n_methods": k, "blocks": names, "block_kind": kind, "note": note}
    if k < 3 or n < 2:
        result.update(
            statistic=np.nan,
            p=np.nan,
            mean_ranks={},
            critical_difference=np.nan,
            nemenyi=None,
            note=f"Friedman needs at least 3 methods and 2 blocks; {note}",
        )
        return result
    stat, p = st.friedmanchisquare(*[matrix[c].to_numpy() for c in matrix.columns])
    ranks = matrix.rank(axis=1, ascending=False).mean()
    q = st.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    result.update(
        statistic=float(stat),
        p=float(p),
        mean_ranks=ranks.sort_values().to_dict(),
        critical_difference=float(q * np.sqrt(k * (k + 1) / (6 * n))),
        nemenyi=sp.posthoc_nemenyi_friedman(matrix.to_numpy())
        .set_axis(matrix.columns, axis=0)
        .set_axis(matrix.columns, axis=1),
    )
    return result


CD_COLUMNS = ["panel", "method", "mean_rank", "friedman_p", "critical_difference", "n_blocks", "block_kind", "note"]


def write_cd_tables(panels: dict[str, dict], ranks_csv: Path, nemenyi_csv: Path) -> None:
    """The critical-difference panels as two tables: mean ranks and the test per (panel, method), and Nemenyi's
    p-values per (panel, method, other) in long form (read back by `read_cd_tables`)."""
    ranks, pairs = [], []
    for panel, r in panels.items():
        test = [r["p"], r["critical_difference"], r["n_blocks"], r["block_kind"], r["note"]]
        ranks += [[panel, m, rank, *test] for m, rank in (r["mean_ranks"] or {"": np.nan}).items()]
        if r["nemenyi"] is not None:
            long = r["nemenyi"].rename_axis(index="method", columns="other").stack().rename("p").reset_index()
            pairs += [[panel, *row] for row in long.itertuples(index=False)]
    pd.DataFrame(ranks, columns=CD_COLUMNS).to_csv(ranks_csv, index=False)
    pd.DataFrame(pairs, columns=["panel", "method", "other", "p"]).to_csv(nemenyi_csv, index=False)


def read_cd_tables(ranks_csv: Path, nemenyi_csv: Path) -> dict[str, dict]:
    """The panels `write_cd_tables` wrote, as the figure draws them."""
    ranks = pd.read_csv(ranks_csv, keep_default_na=False, na_values=[""])
    pairs = pd.read_csv(nemenyi_csv)
    panels = {}
    for panel, rows in ranks.groupby("panel", sort=False):
        first = rows.iloc[0]
        square = pairs[pairs.panel == panel].pivot(index="method", columns="other", values="p")
        ranked = rows.dropna(subset=["mean_rank"])
        panels[str(panel)] = {
            "mean_ranks": dict(zip(ranked.method, ranked.mean_rank, strict=True)),
            "nemenyi": square if len(square) else None,
            "p": first.friedman_p,
            "critical_difference": first.critical_difference,
            "n_blocks": int(first.n_blocks),
            "block_kind": first.block_kind,
            "note": "" if pd.isna(first.note) else first.note,
        }
    return panels
