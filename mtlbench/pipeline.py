"""The pipeline's stages as plain functions of paths; Snakemake rules call them through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mtlbench.aggregate import (
    check_one_config,
    load_records,
)
from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.record import RunRecord


def analyse(
    records: list[Path],
    tables: Path,
    settings: AnalysisSettings,
    allow_mixed_configs: bool,
    claims_file: Path | None = None,
    step_rounds: Path | None = None,
    benchmark: Path | None = None,
    cores: int = 0,
    robustness: Path | None = None,
) -> str:
    """Every table of the output catalogue (mtlbench/outputs.py and any `analyses/` module), computed in one pass
    from the run records and written to `tables`; returns the claims' one-line count. Records of a protocol's or
    a choice value's runs (their `variant`) are kept apart from the config's own, per variant; `robustness` is
    the plan that says what each variant is (the workflow's variants/plan.json)."""
    from mtlbench.catalogue import Analysis, run_pass

    loaded = load_records(records)
    by_variant: dict[str, list[tuple[RunRecord, Path]]] = {}
    for record, path in zip(loaded, records, strict=True):
        by_variant.setdefault(record.variant, []).append((record, Path(path)))
    if not allow_mixed_configs:
        for pairs in by_variant.values():
            check_one_config([r for r, _ in pairs], [p for _, p in pairs])
    own = by_variant.pop("", [])
    plan = json.loads(Path(robustness).read_text()) if robustness is not None else {}
    analysis = Analysis(
        [r for r, _ in own],
        [p for _, p in own],
        settings,
        claims_file,
        step_rounds,
        benchmark,
        cores,
        variants={name: [r for r, _ in pairs] for name, pairs in by_variant.items()},
        robustness=plan,
    )
    done = run_pass(analysis, Path(tables))
    return claims_headline(done["claims"])[0]


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


def draw_figures(records: list[Path], tables: Path, out_dir: Path, settings: AnalysisSettings) -> None:
    """Every figure of the catalogue (mtlbench/outputs.py), from the records and the analysis pass's tables (the
    CD diagram draws its rankings, computed at the configured alpha) with the settings' reference."""
    from mtlbench.catalogue import Drawing, load_figures

    out_dir.mkdir(parents=True, exist_ok=True)
    drawing = Drawing(list(records), Path(tables), settings)
    for fig in load_figures().values():
        fig.draw(drawing, out_dir / fig.file)


def reference_train_seconds(reference: Path) -> pd.Series:
    """Measured training seconds per run by (dataset, method): the default run's (`efficiency.csv`), then the
    zoo's (`zoo/efficiency.csv`) for the methods only the zoo trains."""
    paths = [Path(reference) / "efficiency.csv", Path(reference) / "zoo" / "efficiency.csv"]
    tables = [pd.read_csv(p) for p in paths if p.is_file()]
    if not tables:
        return pd.Series(dtype=float)
    table = pd.concat(tables).drop_duplicates(["dataset", "method"], keep="first")
    return table.set_index(["dataset", "method"]).train_seconds


def time_estimate(planned: list[tuple[str, str, float]], reference: Path, cores: int) -> str:
    """The line a run starts with: how many runs it trains and about how long that takes at the reference
    machine's speed (results/reference: each (dataset, method)'s measured training time per run, scaled by the
    share of the pipeline's core-time that training took there, over `cores`). `planned` holds (dataset,
    method, scale) per run to train: 1 (or True) for the reference run's config, the ratio of the epochs for a
    protocol's or a choice value's run of a method the reference ran, 0 (or False) for a config the reference
    did not run: those are named, not guessed."""
    line = f"{len(planned)} run(s) to train"
    prof = Path(reference) / "pipeline_profile.csv"
    seconds = reference_train_seconds(Path(reference))
    if not planned or cores <= 0 or seconds.empty or not prof.is_file():
        return line
    known = [(d, m, float(scale)) for d, m, scale in planned if scale and (d, m) in seconds.index]
    if not known:
        return line + " (none with the reference config: no time estimate)"
    profile = pd.read_csv(prof).set_index("kind").core_seconds
    overhead = profile.sum() / profile["training"]
    minutes = sum(float(seconds[d, m]) * scale for d, m, scale in known) * overhead / cores / 60
    unknown = len(planned) - len(known)
    which = f" for the {len(known)} the reference ran" if unknown else ""
    scaled = any(scale != 1 for _, _, scale in known)
    return (
        line + f": about {minutes:.0f} min on {cores} core(s){which} at the reference machine's speed "
        f"(measured times: results/reference/"
        + ("; a protocol's or a choice's runs scaled by their epochs" if scaled else "")
        + ")"
        + (f", plus {unknown} run(s) of configs the reference did not run (not estimated)" if unknown else "")
        + "; progress: the 'steps done' lines, each job's output in logs/"
    )


def robust_findings(paper: pd.DataFrame) -> list[str]:
    """The findings first: claims in the papers' scope whose verdict holds under every protocol that applies and at
    every value of every choice swept (claims.csv's `holds_everywhere`), then how many depend on a choice."""
    if "settings_tried" not in paper or not (paper.settings_tried > 0).any():
        return []
    held = paper[paper.holds_everywhere.fillna(False).astype(bool)]
    moved = paper[(paper.settings_tried > 0) & ~paper.holds_everywhere.astype(bool)]
    lines = [
        "Holding under every protocol and setting tried: "
        + ("; ".join(f"{r.id} on {r.dataset}: {r.verdict}" for r in held.itertuples()) if len(held) else "none")
    ]
    if len(moved):
        lines.append(
            f"  {len(moved)} claim x dataset row(s) change verdict with the protocol or a choice "
            "(claims.md, column protocols / sensitivity; robustness.csv)"
        )
    return lines


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
    from mtlbench.claims import GENERALISATION, scope_of

    tables, lines = Path(tables), []
    claims, boot = tables / "claims.csv", tables / "delta_m_bootstrap.csv"
    if claims.is_file():
        table = pd.read_csv(claims)
        in_scope = table[scope_of(table) != GENERALISATION]
        lines += robust_findings(in_scope) + claims_headline(table)
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
