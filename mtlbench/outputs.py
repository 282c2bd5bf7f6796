"""The suite's own tables, declared in the output catalogue (mtlbench/catalogue.py): each is one function of the
outputs it needs, with its files and its report caption. `mtlbench aggregate` computes them all in one pass."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtlbench import figures
from mtlbench.aggregate import (
    bootstrap_delta_m,
    delta_m,
    delta_m_metrics,
    summarize,
    task_averaged,
    tidy_metrics,
    with_delta_m,
)
from mtlbench.catalogue import Analysis, Drawing, figure, table
from mtlbench.convergence import convergence_table
from mtlbench.efficiency import efficiency_table, pipeline_profile, profile_line
from mtlbench.published import published_comparison, published_markdown
from mtlbench.stats import friedman_nemenyi, read_cd_tables, safeness, significance, write_cd_tables
from mtlbench.tables import write_summary_tables, write_task_averaged

EFFICIENCY_REFERENCE = "hps"  # efficiency.csv's ratios are to hard sharing, the cheapest shared model


@table("tidy", files=(), caption="Every run's metrics, one row per (run, split, task, metric), before Delta_m.")
def _tidy(a: Analysis) -> pd.DataFrame:
    return tidy_metrics(a.records)


@table(
    "metrics",
    needs=["tidy"],
    caption="Tidy: dataset, method, seed, split, task, metric, value, direction, status; Delta_m rows included.",
)
def _metrics(a: Analysis) -> pd.DataFrame:
    return with_delta_m(a["tidy"], a.settings.reference)


@table("delta_m", needs=["tidy"], caption="Delta_m % of every run against the reference method's run of its seed.")
def _delta_m(a: Analysis) -> pd.DataFrame:
    return delta_m(a["tidy"], a.settings.reference)


@table(
    "delta_m_metrics", needs=["tidy"], caption="Which task metrics Delta_m averages per dataset, and why not others."
)
def _delta_m_metrics(a: Analysis) -> pd.DataFrame:
    return delta_m_metrics(a["tidy"], a.settings.reference)


def _write_summary(summary: pd.DataFrame, path: Path, a: Analysis) -> None:
    used = a["delta_m_metrics"]
    write_summary_tables(summary, path.parent, excluded=used[~used.used.astype(bool)])


@table(
    "summary",
    needs=["metrics", "delta_m_metrics"],
    files=("summary.csv", "summary.md", "summary.tex"),
    write=_write_summary,
    category="3 Tables",
    caption="Test metrics per dataset, mean ± std over seeds; each task's primary metric and Delta_m (lower is "
    "better, the reference = 0). The best value per column is bold.",
)
def _summary(a: Analysis) -> pd.DataFrame:
    return summarize(a["metrics"])


@table(
    "task_averaged",
    needs=["tidy"],
    files=("task_averaged.csv", "task_averaged.md"),
    write=lambda value, path, a: write_task_averaged(value, path.parent),
    category="3 Tables",
    caption="Each metric that every task of a dataset has (for binary tasks: accuracy, AUC, precision, recall), "
    "averaged over the tasks within a seed, then mean ± std over seeds: the form of SRDML's result table, to set "
    "beside the paper's numbers (the paper selected epochs on the test set; the suite selects on validation).",
)
def _task_averaged(a: Analysis) -> pd.DataFrame:
    return task_averaged(a["tidy"])


def _write_published(value: pd.DataFrame, path: Path, a: Analysis) -> None:
    value.to_csv(path, index=False)
    path.with_suffix(".md").write_text(published_markdown(value))


@table(
    "published",
    needs=["task_averaged", "summary"],
    files=("published.csv", "published.md"),
    write=_write_published,
    category="3 Tables",
    caption="The papers' published numbers (mtlbench/published.yaml, with their sources) beside the suite's own, "
    "for every dataset of this run that has them: SRDML's table (accuracy / AUC / precision / recall averaged over "
    "the tasks on CIFAR-MTL and CelebA) and a NYUv2 hard-sharing result. The protocols differ: the official SRDML "
    "code reports each metric's best epoch on the test set, the suite one epoch per run selected on validation.",
)
def _published(a: Analysis) -> pd.DataFrame:
    return published_comparison(a["task_averaged"], a["summary"])


@table(
    "delta_m_bootstrap",
    needs=["metrics"],
    caption="Per (dataset, method): mean Delta_m with a bootstrap 95% CI, the probability of improving on each "
    "baseline and the Bayesian signed-rank test against it.",
)
def _bootstrap(a: Analysis) -> pd.DataFrame:
    return bootstrap_delta_m(a["metrics"], a.settings.baselines, a.settings.rope)


@table("convergence", caption="Per run: the selected epoch, and whether it was still improving at the end.")
def _convergence(a: Analysis) -> pd.DataFrame:
    return convergence_table(a.records)


@table(
    "significance",
    needs=["metrics"],
    category="4 Significance tests",
    caption="Paired t-test and Wilcoxon signed-rank by seed, each method against each baseline, Holm-corrected per "
    "dataset, baseline, method and task; effect size d_z. With n seeds Wilcoxon cannot go below 2/2^n: "
    "wilcoxon_note says when it cannot reach the level.",
)
def _significance(a: Analysis) -> pd.DataFrame:
    return significance(a["metrics"], a.settings.baselines, a.settings.alpha)


@table(
    "safeness",
    needs=["significance"],
    category="4 Significance tests",
    caption="Safeness: per method and dataset, the tasks with a metric significantly worse than the reference "
    "method (Holm-corrected paired t-test).",
)
def _safeness(a: Analysis) -> pd.DataFrame:
    return safeness(a["significance"], a.settings.reference)


@table("friedman", needs=["metrics"], files=(), caption="The Friedman test and Nemenyi's post-hoc test.")
def _friedman(a: Analysis) -> dict:
    return friedman_nemenyi(a["metrics"], a.settings.alpha)


@table(
    "ranking",
    needs=["friedman"],
    category="4 Significance tests",
    caption="Friedman test across dataset/task blocks, mean ranks (1 = best) and the Nemenyi critical difference.",
)
def _ranking(a: Analysis) -> pd.DataFrame:
    rank = a["friedman"]
    header = ("statistic", "p", "critical_difference", "n_blocks", "block_kind", "n_methods", "note")
    names = {"statistic": "friedman_statistic", "p": "friedman_p"}
    return pd.DataFrame(
        [
            {"method": m, "mean_rank": r, **{names.get(k, k): rank[k] for k in header}}
            for m, r in (rank["mean_ranks"] or {"": float("nan")}).items()
        ]
    )


@table(
    "nemenyi",
    needs=["friedman"],
    write=lambda value, path, a: value.to_csv(path),
    caption="Nemenyi's post-hoc p-values between every pair of methods.",
)
def _nemenyi(a: Analysis) -> pd.DataFrame:
    nemenyi = a["friedman"]["nemenyi"]
    return nemenyi if nemenyi is not None else pd.DataFrame()


@table(
    "cd_ranks",
    needs=["metrics", "friedman"],
    files=("cd_ranks.csv", "cd_nemenyi.csv"),
    write=lambda panels, path, a: write_cd_tables(panels, path, path.with_name("cd_nemenyi.csv")),
    caption="What the critical-difference diagram shows, per panel: over datasets when there are enough of them, "
    "else per dataset over its tasks (mean ranks, Friedman's p, the critical difference, Nemenyi's p-values).",
)
def _cd_ranks(a: Analysis) -> dict[str, dict]:
    pooled = a["friedman"]
    if pooled["block_kind"] == "datasets":
        return {"all datasets": pooled}
    metrics = a["metrics"]
    return {
        str(d): friedman_nemenyi(metrics[metrics.dataset == d], a.settings.alpha)
        for d in sorted(metrics.dataset.unique())
    }


def _write_claims(value: pd.DataFrame, path: Path, a: Analysis) -> None:
    from mtlbench.claims import claims_markdown
    from mtlbench.robustness import protocols_markdown

    value.to_csv(path, index=False)
    path.with_suffix(".md").write_text(claims_markdown(value) + protocols_markdown(a.robustness))


@table("claim_verdicts", needs=["metrics"], files=(), caption="Each claim's verdict on the config's own runs.")
def _claim_verdicts(a: Analysis) -> pd.DataFrame:
    from mtlbench.claims import evaluate_claims

    rounds = pd.read_csv(a.step_rounds) if a.step_rounds is not None else None
    return evaluate_claims(_claim_list(a), a["metrics"], a.records, a.settings.alpha, rounds)


def _claim_list(a: Analysis) -> list:
    from mtlbench.claims import load_claims

    return load_claims(a.claims_file) if a.claims_file is not None else []


@table(
    "robustness",
    needs=["claim_verdicts"],
    category="1 Claims",
    caption="Every claim under each protocol (fair: the suite's runs; published: the paper's experiment as its "
    "official code runs it) and at each value of each reconstruction choice that touches its method or baseline "
    "(config/protocols.yaml; the runs the config's `robustness` block trains): the verdict by the claim's own "
    "test, or why a protocol does not apply. A claim that keeps its verdict at every value is robust, else it "
    "depends on the choices that moved it.",
)
def _robustness(a: Analysis) -> pd.DataFrame:
    from mtlbench.robustness import robustness_table

    return robustness_table(
        a["claim_verdicts"], _claim_list(a), a.robustness, a.records, a.variants, a.settings.reference, a.settings.alpha
    )


@table(
    "claims",
    needs=["claim_verdicts", "robustness"],
    files=("claims.csv", "claims.md"),
    write=_write_claims,
    category="1 Claims",
    caption="The papers' claims, one row per claim and dataset: the estimate with the interval its test uses "
    "(positive favours the method; ratios below 1), n seeds, the p-value and a verdict: reproduced, not "
    "reproduced, contradicted or inconclusive (with the smallest effect the run could have detected). Claims are "
    "declared in config/claims.yaml; the tests and verdict rules are in mtlbench/claims.py. Beside the verdict "
    "on the suite's runs (the fair protocol): the verdict under each other protocol, whether the verdict is "
    "robust to the reconstruction choices swept or depends on them, and whether it holds everywhere (robustness "
    "table).",
)
def _claims(a: Analysis) -> pd.DataFrame:
    from mtlbench.robustness import summary_columns

    return summary_columns(a["claim_verdicts"], a["robustness"])


def _write_leaderboard(board: pd.DataFrame, path: Path, a: Analysis) -> None:
    from mtlbench.report_tables import leaderboard_markdown

    board.to_csv(path, index=False)
    path.with_suffix(".md").write_text(leaderboard_markdown(board, a.settings.reference))


@table(
    "leaderboard",
    needs=["delta_m_bootstrap", "safeness", "claims", "convergence"],
    files=("leaderboard.csv", "leaderboard.md"),
    write=_write_leaderboard,
    category="2 Leaderboards",
    caption="One leaderboard per dataset: methods ranked by mean Delta_m (% against the reference method, lower is "
    "better) with its 95% bootstrap CI over seeds; the probability that a seed of the method beats a seed of each "
    "baseline; the Bayesian signed-rank test against each baseline (posterior probabilities of better / practically "
    "equivalent / worse, paired by seed); the tasks on which the method is significantly worse than the reference "
    "(safeness), and the verdicts of the claims about the method (the claims table says why).",
)
def _leaderboard(a: Analysis) -> pd.DataFrame:
    from mtlbench.report_tables import leaderboard

    return leaderboard(a["delta_m_bootstrap"], a["safeness"], a["claims"], a["convergence"])


@table(
    "efficiency",
    category="6 Efficiency",
    caption="Parameters (total and at inference), seconds per step and per epoch, peak memory, means over seeds, "
    "each as a ratio to hard sharing; with the interleaved benchmark, its step times and the memory each method "
    "needs. All runs of one pipeline on one machine.",
)
def _efficiency(a: Analysis) -> pd.DataFrame:
    return efficiency_table(a.records, EFFICIENCY_REFERENCE, a.benchmark)


def _write_profile(table: pd.DataFrame, path: Path, a: Analysis) -> None:
    from mtlbench.pipeline import profile_markdown

    table.to_csv(path, index=False)
    path.with_suffix(".md").write_text(profile_markdown(table, profile_line(table)))


@table(
    "pipeline_profile",
    files=("pipeline_profile.csv", "pipeline_profile.md"),
    write=_write_profile,
    category="6 Efficiency",
    caption="Where the pipeline's core-time went (wall time x cores, from the first training process to the last "
    "record): training and validation, and the rest by kind — start-up, building data and models, checkpoints, "
    "tracking, finalising, and what happened outside the training jobs.",
)
def _profile(a: Analysis) -> pd.DataFrame:
    return pipeline_profile(a.all_records, a.cores)


# --- figures: drawn after the pass, from its tables and the records (`mtlbench figures`) -------------------------
@figure(
    "metrics_ci",
    caption="Each task's primary test metric (the one the tables and Delta_m use: accuracy on MultiMNIST, MSE on "
    "the synthetic tasks), mean over seeds with its 95% CI, per method; the axis label says which direction is "
    "better and the dashed line is the reference method. Look for methods on the better side of the line. The "
    "y-range follows the bulk of the methods: a method far outside it (MGDA on the unnormalised synthetic "
    "regression tasks) is an arrow at the edge, labelled with its mean.",
)
def _metrics_ci(d: Drawing, path: Path) -> None:
    figures.metrics_with_ci(d.table("summary"), path, d.settings.reference)


@figure(
    "learning_curves",
    caption="Learning curves: each method's validation loss (summed over tasks) per epoch, median over seeds with "
    "the band from the lowest to the highest seed, log scale; dots mark the epochs selected on validation, and "
    "dashed curves the methods with runs still improving at the end of their budget. Staged methods show their "
    "stages: SRDML's warm-up (hard sharing), DSMTL-IL's stage 1 and DSMTL-AL's search before the derived network "
    "is retrained from its initialisation (its curve is longer: the search is an extra cost on top of the budget).",
)
def _learning_curves(d: Drawing, path: Path) -> None:
    figures.learning_curves(d.records, path)


@figure(
    "relations",
    caption="SRDML's learned task relations (relation weights omega, symmetric, mean over seeds) beside the ground "
    "truth where the dataset has one (synthetic_relations: 2 for twins, 1 for the same group, 0 across groups). A "
    "reproduction shows the same block structure: bright twin pairs on the off-diagonal, two bright 6 x 6 groups.",
)
def _relations(d: Drawing, path: Path) -> None:
    figures.relation_matrices(d.records, path)


@figure(
    "gates",
    caption="DSMTL's gate values: the weight of the public encoder per task (per stage for DSMTL-AL), mean over seeds.",
)
def _gates(d: Drawing, path: Path) -> None:
    figures.gate_values(d.records, path)


@figure(
    "cd_diagram",
    caption="Critical-difference diagram: mean ranks with the Nemenyi critical difference (at the configured "
    "alpha; from cd_ranks.csv and cd_nemenyi.csv); methods joined by a bar do not differ significantly.",
)
def _cd_diagram(d: Drawing, path: Path) -> None:
    figures.critical_difference(read_cd_tables(d.tables / "cd_ranks.csv", d.tables / "cd_nemenyi.csv"), path)


@figure(
    "time_vs_delta_m",
    caption="Cost against benefit: each method's time per training step (this machine, log scale) against its mean "
    "Delta_m versus the reference method (symlog scale; below the dashed line is better than it). The lower-left "
    "corner is cheaper and better; a method up and to the right pays more for less.",
)
def _time_vs_delta_m(d: Drawing, path: Path) -> None:
    figures.time_vs_delta_m(d.table("efficiency"), d.table("summary"), path, d.settings.reference)
