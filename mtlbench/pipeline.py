"""The pipeline's stages as plain functions of paths; Snakemake rules call them through the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtlbench import figures
from mtlbench.aggregate import (
    bootstrap_delta_m,
    check_one_config,
    delta_m,
    delta_m_metrics,
    load_records,
    summarize,
    task_averaged,
    tidy_metrics,
    with_delta_m,
)
from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.convergence import convergence_table
from mtlbench.efficiency import efficiency_table, pipeline_profile, profile_line
from mtlbench.published import published_comparison, published_markdown
from mtlbench.stats import friedman_nemenyi, safeness, significance
from mtlbench.tables import write_summary_tables, write_task_averaged


def aggregate(
    records: list[Path], out_dir: Path, settings: AnalysisSettings, allow_mixed_configs: bool = False
) -> None:
    """metrics.csv (tidy, Delta_m rows included), delta_m.csv (per run), delta_m_metrics.csv (which metrics
    Delta_m averages, and why others are left out), convergence.csv (per run: still improving at the end of its
    budget, by mtlbench.convergence's rule), summary.{csv,md,tex}, task_averaged.{csv,md} and
    published.{csv,md} (the papers' numbers beside the suite's, for the datasets of the run that have them)."""
    runs = load_records(records)
    if not allow_mixed_configs:
        check_one_config(runs, list(records))
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy, reference = tidy_metrics(runs), settings.reference
    full = with_delta_m(tidy, reference)
    full.to_csv(out_dir / "metrics.csv", index=False)
    delta_m(tidy, reference).to_csv(out_dir / "delta_m.csv", index=False)
    used = delta_m_metrics(tidy, reference)
    used.to_csv(out_dir / "delta_m_metrics.csv", index=False)
    summary = summarize(full)
    write_summary_tables(summary, out_dir, excluded=used[~used.used.astype(bool)])
    averaged = task_averaged(tidy)
    write_task_averaged(averaged, out_dir)
    beside = published_comparison(averaged, summary)
    beside.to_csv(out_dir / "published.csv", index=False)
    (out_dir / "published.md").write_text(published_markdown(beside))
    bootstrap_delta_m(full, settings.baselines, settings.rope).to_csv(out_dir / "delta_m_bootstrap.csv", index=False)
    convergence_table(runs).to_csv(out_dir / "convergence.csv", index=False)


def statistics(metrics_csv: Path, out_dir: Path, settings: AnalysisSettings) -> None:
    """significance.csv, safeness.csv, ranking.csv (Friedman, mean ranks, CD) and nemenyi.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy = pd.read_csv(metrics_csv)
    sig = significance(tidy, settings.baselines, settings.alpha)
    sig.to_csv(out_dir / "significance.csv", index=False)
    safeness(sig, settings.reference).to_csv(out_dir / "safeness.csv", index=False)
    rank = friedman_nemenyi(tidy, settings.alpha)
    pd.DataFrame(
        [
            {
                "method": m,
                "mean_rank": r,
                "friedman_statistic": rank["statistic"],
                "friedman_p": rank["p"],
                "critical_difference": rank["critical_difference"],
                "n_blocks": rank["n_blocks"],
                "block_kind": rank["block_kind"],
                "n_methods": rank["n_methods"],
                "note": rank["note"],
            }
            for m, r in (rank["mean_ranks"] or {"": float("nan")}).items()
        ]
    ).to_csv(out_dir / "ranking.csv", index=False)
    nemenyi = rank["nemenyi"] if rank["nemenyi"] is not None else pd.DataFrame()
    nemenyi.to_csv(out_dir / "nemenyi.csv")


def profile_markdown(table: pd.DataFrame, line: str) -> str:
    """The profile as read: the constants (wall time, cores, runs) once in the heading, then per kind its
    core-seconds rounded to a tenth and its share in %."""
    if table.empty:
        return f"Pipeline profile: {line}.\n"
    first = table.iloc[0]
    shown = pd.DataFrame(
        {
            "kind": table.kind,
            "core-seconds": [f"{v:,.1f}" for v in table.core_seconds],
            "share of core-time": [f"{v:.1%}" for v in table.share_of_core_time],
        }
    )
    heading = (
        f"Pipeline profile: {line}.\n\nWall time {first.wall_seconds:,.0f} s on {int(first.cores)} core(s), "
        f"{int(first.runs)} runs; core-time = wall time x cores.\n\n"
    )
    return heading + shown.to_markdown(index=False, colalign=("left", "right", "right"), disable_numparse=True) + "\n"


def claims(
    claims_file: Path,
    metrics_csv: Path,
    records: list[Path],
    out_dir: Path,
    settings: AnalysisSettings,
    step_rounds: Path | None = None,
) -> str:
    """claims.{csv,md}: a verdict per declared claim and dataset (step-cost claims from the interleaved
    benchmark's `step_rounds` table, when there is one); returns a one-line count of the verdicts."""
    from mtlbench.claims import claims_markdown, evaluate_claims, load_claims

    rounds = pd.read_csv(step_rounds) if step_rounds is not None else None
    claims = load_claims(claims_file)
    table = evaluate_claims(claims, pd.read_csv(metrics_csv), load_records(records), settings.alpha, rounds)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "claims.csv", index=False)
    (out_dir / "claims.md").write_text(claims_markdown(table))
    return claims_headline(table)[0]


def efficiency(records: list[Path], out_csv: Path, benchmark: Path | None = None, reference: str = "hps") -> None:
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    efficiency_table(load_records(records), reference, benchmark).to_csv(out_csv, index=False)


def profile(records: list[Path], out_csv: Path, cores: int) -> str:
    """pipeline_profile.csv: where the pipeline's core-time went; returns its one-line summary."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table = pipeline_profile(load_records(records), cores)
    table.to_csv(out_csv, index=False)
    line = profile_line(table)
    out_csv.with_suffix(".md").write_text(profile_markdown(table, line))
    return line


def cd_rankings(tidy: pd.DataFrame, alpha: float) -> dict[str, dict]:
    """The rankings a critical-difference diagram shows: over datasets when there are enough of them, else one
    per dataset over its own tasks (pooling the tasks of different datasets mixes unrelated blocks)."""
    pooled = friedman_nemenyi(tidy, alpha)
    if pooled["block_kind"] == "datasets":
        return {"all datasets": pooled}
    return {str(d): friedman_nemenyi(tidy[tidy.dataset == d], alpha) for d in sorted(tidy.dataset.unique())}


def draw_figures(records: list[Path], tables: Path, out_dir: Path, settings: AnalysisSettings) -> None:
    """The figures, with the settings' reference (the metric panels' line, Delta_m's axis) and alpha (the CD)."""
    runs = load_records(records)
    summary = pd.read_csv(tables / "summary.csv")
    figures.metrics_with_ci(summary, out_dir / "metrics_ci.png", settings.reference)
    figures.relation_matrices(runs, out_dir / "relations.png")
    figures.gate_values(runs, out_dir / "gates.png")
    figures.learning_curves(runs, out_dir / "learning_curves.png")
    tidy = pd.read_csv(tables / "metrics.csv")
    figures.critical_difference(cd_rankings(tidy, settings.alpha), out_dir / "cd_diagram.png")
    efficiency = pd.read_csv(tables / "efficiency.csv")
    figures.time_vs_delta_m(efficiency, summary, out_dir / "time_vs_delta_m.png", settings.reference)


def reference_train_seconds(reference: Path) -> pd.Series:
    """Measured training seconds per run by (dataset, method): the default run's (`efficiency.csv`), then the
    zoo's (`zoo/efficiency.csv`) for the methods only the zoo trains."""
    paths = [Path(reference) / "efficiency.csv", Path(reference) / "zoo" / "efficiency.csv"]
    tables = [pd.read_csv(p) for p in paths if p.is_file()]
    if not tables:
        return pd.Series(dtype=float)
    table = pd.concat(tables).drop_duplicates(["dataset", "method"], keep="first")
    return table.set_index(["dataset", "method"]).train_seconds


def time_estimate(planned: list[tuple[str, str, bool]], reference: Path, cores: int) -> str:
    """The line a run starts with: how many runs it trains and about how long that takes at the reference
    machine's speed (results/reference: each (dataset, method)'s measured training time per run, scaled by the
    share of the pipeline's core-time that training took there, over `cores`). `planned` holds (dataset,
    method, same config as the reference run) per run to train; runs of other configs are named, not guessed."""
    line = f"{len(planned)} run(s) to train"
    prof = Path(reference) / "pipeline_profile.csv"
    seconds = reference_train_seconds(Path(reference))
    if not planned or cores <= 0 or seconds.empty or not prof.is_file():
        return line
    known = [(d, m) for d, m, same in planned if same and (d, m) in seconds.index]
    if not known:
        return line + " (none with the reference config: no time estimate)"
    profile = pd.read_csv(prof).set_index("kind").core_seconds
    overhead = profile.sum() / profile["training"]
    minutes = sum(float(seconds[k]) for k in known) * overhead / cores / 60
    unknown = len(planned) - len(known)
    which = f" for the {len(known)} the reference ran" if unknown else ""
    return (
        line + f": about {minutes:.0f} min on {cores} core(s){which} at the reference machine's speed "
        f"(measured times: results/reference/)"
        + (f", plus {unknown} run(s) of configs the reference did not run (not estimated)" if unknown else "")
        + "; progress: the 'steps done' lines, each job's output in logs/"
    )


def claims_headline(table: pd.DataFrame) -> list[str]:
    """The verdicts in the papers' scope per dataset (reproduced and contradicted named, with the claims resting
    on runs still improving), then the generalisation tests, counted and labelled as such."""
    from mtlbench.claims import GENERALISATION, scope_of

    scope = scope_of(table)
    paper, general = table[scope != GENERALISATION], table[scope == GENERALISATION]
    counts = paper.verdict.value_counts()
    lines = [
        "Claims in the papers' scope: "
        + (", ".join(f"{counts[v]} {v}" for v in counts.index) or "none in this run")
        + f" ({len(paper)} claim x dataset rows)"
    ]
    for dataset, rows in paper.groupby("dataset"):
        said = [
            f"{verdict} {', '.join(rows[rows.verdict == verdict].id)}"
            for verdict in ("reproduced", "contradicted")
            if (rows.verdict == verdict).any()
        ]
        flagged = rows[rows.get("still_improving", pd.Series("", index=rows.index)).fillna("") != ""].id.tolist()
        if flagged:
            said.append(f"resting on runs still improving: {', '.join(flagged)}")
        lines.append(f"  {dataset}: " + ("; ".join(said) if said else "no claim reproduced or contradicted"))
    if len(general):
        counts = general.verdict.value_counts()
        lines.append(
            "Generalisation tests (outside the papers' scope; not the papers' claims failing): "
            + ", ".join(f"{counts[v]} {v}" for v in counts.index)
        )
    return lines


def headline(tables: Path, figures_dir: Path, report: str, reference: str) -> str:
    """What a finished pipeline run says in a few lines: the verdicts per claim and dataset, the leading
    methods by mean Delta_m (95% bootstrap CI) per dataset, and where the tables and figures are."""
    tables, lines = Path(tables), []
    claims, boot = tables / "claims.csv", tables / "delta_m_bootstrap.csv"
    if claims.is_file():
        lines += claims_headline(pd.read_csv(claims))
    if boot.is_file():
        table = pd.read_csv(boot)
        for dataset, rows in table.groupby("dataset"):
            best = rows.sort_values("mean_delta_m").head(3)
            ranked = "; ".join(
                f"{r.method} (the reference)"
                if r.method == reference
                else f"{r.method} {r.mean_delta_m:+.1f} (n = {r.n}: no CI)"
                if pd.isna(r.boot_ci95_low)
                else f"{r.method} {r.mean_delta_m:+.1f} [{r.boot_ci95_low:+.1f}, {r.boot_ci95_high:+.1f}]"
                for r in best.itertuples()
            )
            lines.append(f"Best Delta_m % vs {reference} (lower is better), {dataset}: {ranked}")
    lines.append(
        f"Tables: {tables}/ (claims.md, then leaderboard.md); figures: {figures_dir}/; "
        f"HTML report: snakemake --report {report}"
    )
    return "\n".join(lines)
