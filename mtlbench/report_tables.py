"""The tables a researcher reads first, as HTML for Snakemake's report: the claims, one leaderboard per
dataset (methods ranked by mean Delta_m with its bootstrap CI, the probability of improving on each baseline,
safeness and the verdicts of the claims about the method), then the detail tables.

Snakemake's report opens HTML items inline (an iframe) but offers CSV and Markdown items only as `data:`
downloads, which browsers block; so every table of the report is rendered here from the pipeline's CSVs.
The front page (workflow/report/workflow.rst) includes `front.html`: the claims and the leaderboards."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.claims import GENERALISATION, INTERVAL_NOTE, VERDICT_DEFINITIONS, VERDICTS, claims_display, scope_of
from mtlbench.tables import wide_table

STYLE = """<style>
.mtlbench-table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; font-size: 0.85em; }
.mtlbench-table th, .mtlbench-table td { border: 1px solid #bbb; padding: 2px 6px; text-align: left;
  vertical-align: top; }
.mtlbench-table th { background: #eee; }
.mtlbench-table td.reproduced { background: #d8f0d8; }
.mtlbench-table td.contradicted { background: #f5d0d0; }
.mtlbench-table td.not-reproduced { background: #f3e6c8; }
.mtlbench-table td.inconclusive { background: #e6e6e6; }
.mtlbench-table td.generalisation { font-style: italic; background-image: repeating-linear-gradient(45deg,
  transparent, transparent 6px, rgba(255, 255, 255, 0.5) 6px, rgba(255, 255, 255, 0.5) 12px); }
/* the report's front page puts its text in a narrow column beside the rule graph: give the tables the width */
div.prose:has(.mtlbench-front) { max-width: none; }
div.flex:has(> div > div.prose .mtlbench-front) { flex-wrap: wrap; }
/* the page centres its content vertically: a front page taller than the window would lose its top */
div.items-center:has(.mtlbench-front) { align-items: flex-start; }
h2.mtlbench, h3.mtlbench { font-weight: bold; margin-top: 1em; }
h2.mtlbench { font-size: 1.25em; } h3.mtlbench { font-size: 1.1em; }
</style>
"""


def leaderboard(
    bootstrap: pd.DataFrame,
    safeness: pd.DataFrame | None = None,
    claims: pd.DataFrame | None = None,
    convergence: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (dataset, method), ranked within the dataset by mean Delta_m (lower is better; the
    reference method is 0): its 95% bootstrap CI, P(improvement) over each baseline, the tasks on which it is
    significantly worse than the reference (safeness.csv) and the verdicts of the claims about it."""
    board = bootstrap.copy()
    board["rank"] = board.groupby("dataset").mean_delta_m.rank(method="min").astype(int)
    if safeness is not None and len(safeness):
        worse = safeness.set_index(["dataset", "method"])
        keys = list(zip(board.dataset, board.method, strict=True))
        board["tasks_worse_than_reference"] = [
            (
                f"{int(worse.loc[k, 'n_worse'])} of {int(worse.loc[k, 'n_compared'])}"
                + (f" ({worse.loc[k, 'worse']})" if int(worse.loc[k, "n_worse"]) else "")
            )
            if k in worse.index
            else ""
            for k in keys
        ]
    if convergence is not None and len(convergence):
        board["still_improving"] = _still_improving(board, convergence)
    if claims is not None and len(claims):
        said = claims.groupby(["dataset", "method"]).apply(
            lambda rows: "; ".join(
                f"{r.id}: {r.verdict}" + (f" ({GENERALISATION})" if getattr(r, "scope", "") == GENERALISATION else "")
                for r in rows.itertuples()
            ),
            include_groups=False,
        )
        board["claims"] = [said.get((d, m), "") for d, m in zip(board.dataset, board.method, strict=True)]
    columns = [
        "dataset",
        "rank",
        "method",
        "mean_delta_m",
        "boot_ci95_low",
        "boot_ci95_high",
        "n",
        *[c for c in board.columns if c.startswith(("p_improve_vs_", "bayes_"))],
        *[c for c in ("tasks_worse_than_reference", "still_improving", "claims") if c in board.columns],
    ]
    return board.sort_values(["dataset", "rank", "method"])[columns].reset_index(drop=True)


def _still_improving(board: pd.DataFrame, convergence: pd.DataFrame) -> list[str]:
    """Per (dataset, method): 'k of n' runs still improving at the end of their budget (mtlbench.convergence)."""
    judged = convergence.dropna(subset=["still_improving"])
    counts = judged.groupby(["dataset", "method"]).still_improving.agg(lambda v: (int(v.astype(bool).sum()), len(v)))
    return [
        f"{counts[k][0]} of {counts[k][1]}" if k in counts.index else ""
        for k in zip(board.dataset, board.method, strict=True)
    ]


def _shown_leaderboard(rows: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The leaderboard as read: a method against itself shows a dash, not P = 0.5."""
    shown = pd.DataFrame({"rank": rows["rank"], "method": rows.method})
    shown["Delta_m % [95% CI]"] = [
        f"{m:+.2f}" + (" (the reference)" if method == reference or pd.isna(lo) else f" [{lo:+.2f}, {hi:+.2f}]")
        for method, m, lo, hi in zip(
            rows.method, rows.mean_delta_m, rows.boot_ci95_low, rows.boot_ci95_high, strict=True
        )
    ]
    shown["n"] = rows.n
    for baseline in [c.removeprefix("p_improve_vs_") for c in rows.columns if c.startswith("p_improve_vs_")]:
        shown[f"P(better than {baseline})"] = [
            "—" if method == baseline or pd.isna(p) else f"{p:.2f}"
            for method, p in zip(rows.method, rows[f"p_improve_vs_{baseline}"], strict=True)
        ]
        if f"bayes_better_vs_{baseline}" in rows:
            shown[f"Bayes vs {baseline}: better / equivalent / worse"] = [
                "—" if method == baseline or pd.isna(b) else f"{b:.2f} / {r:.2f} / {w:.2f}"
                for method, b, r, w in zip(
                    rows.method,
                    rows[f"bayes_better_vs_{baseline}"],
                    rows[f"bayes_rope_vs_{baseline}"],
                    rows[f"bayes_worse_vs_{baseline}"],
                    strict=True,
                )
            ]
    for column, title in (
        ("tasks_worse_than_reference", f"tasks significantly worse than {reference}"),
        ("still_improving", "runs still improving at the end of the budget"),
        ("claims", "claims about it"),
    ):
        if column in rows:
            shown[title] = rows[column].fillna("")
    return shown


def html_table(table: pd.DataFrame, index: bool = False) -> str:
    """A table with escaped cells; a `verdict` column's cells carry their verdict as a class (coloured)."""
    head = ([table.index.name or ""] if index else []) + [str(c) for c in table.columns]
    lines = [
        '<table class="mtlbench-table">',
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for label, row in table.iterrows():
        cells = [f"<th>{html.escape(str(label))}</th>"] if index else []
        for column, value in row.items():
            text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
            css = _verdict_class(text) if column == "verdict" else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</tbody>", "</table>"])


def _verdict_class(text: str) -> str:
    """A verdict cell's classes: its verdict (coloured), and `generalisation` for a row outside the claim's scope."""
    verdict = text.removesuffix(f" ({GENERALISATION})")
    if verdict not in VERDICTS:
        return ""
    return f' class="{verdict.replace(" ", "-")}' + (" generalisation" if verdict != text else "") + '"'


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        + html.escape(title)
        + "</title>"
        + STYLE
        + "</head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _heading(level: int, text: str) -> str:
    return f'<h{level} class="mtlbench">{html.escape(text)}</h{level}>'


def claims_section(claims: pd.DataFrame) -> list[str]:
    """The claims in the papers' scope, then the generalisation tests, then what each verdict means."""
    in_scope = scope_of(claims) != GENERALISATION
    counts = claims[in_scope].verdict.value_counts()
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts)
    general = claims[~in_scope]
    return [
        _heading(2, "Claims"),
        f"<p>In the scope the papers made them in: {html.escape(summary or 'no row')} "
        f"({int(in_scope.sum())} claim x dataset rows; {len(general)} generalisation tests below). The estimate "
        "favours the method when positive (ratios: below 1); paired by seed. "
        f"{html.escape(INTERVAL_NOTE)}</p>",
        html_table(claims_display(claims[in_scope])),
        _heading(3, "Generalisation tests"),
        "<p>Claims scored on datasets outside the experiment the paper made them on: what the run shows there, "
        "never the paper's claim failing.</p>",
        html_table(claims_display(general)) if len(general) else "<p>None in this run.</p>",
        _heading(3, "What the verdicts mean"),
        "<ul>"
        + "".join(f"<li><b>{html.escape(t)}</b>: {html.escape(d)}</li>" for t, d in VERDICT_DEFINITIONS.items())
        + "</ul>",
    ]


def leaderboard_section(board: pd.DataFrame, settings: AnalysisSettings) -> list[str]:
    reference = settings.reference
    body = [
        _heading(2, "Leaderboards"),
        f"<p>Per dataset, methods ranked by mean Delta_m (% against {reference}; "
        "lower is better) with its 95% bootstrap CI over seeds, the probability that a seed of the method "
        "beats a seed of each baseline, the Bayesian signed-rank test against it (paired by seed, region of "
        f"practical equivalence {settings.rope:g} pp), and the tasks on which it is significantly worse than "
        f"{reference}."
        "</p>",
    ]
    for dataset, rows in board.groupby("dataset", sort=True):
        body += [_heading(3, f"Leaderboard: {dataset}"), html_table(_shown_leaderboard(rows, reference))]
    return body


def read_table(path: Path) -> pd.DataFrame | None:
    """A CSV of the pipeline, or None when it is missing or empty (one method: no comparisons to tabulate)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def _csv_page(path: Path, title: str) -> str:
    table = read_table(path)
    if table is None or table.empty:
        return _page(title, [_heading(2, title), "<p>No rows in this run.</p>"])
    return _page(title, [_heading(2, title), html_table(table.round(4))])


def write_csv_pages(csvs: dict[str, Path], out: Path) -> list[Path]:
    """One page per CSV (name -> path) that exists: NAME.html, the table as it is, rounded to 4 decimals."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in csvs.items():
        if Path(path).is_file():
            (out / f"{name}.html").write_text(_csv_page(Path(path), name.replace("_", " ")))
            written.append(out / f"{name}.html")
    return written


DETAIL_TABLES = ("task_averaged", "published", "significance", "safeness", "ranking", "efficiency", "pipeline_profile")


def write_report_tables(tables: Path, out: Path, settings: AnalysisSettings) -> list[Path]:
    """front.html (claims, then the leaderboards: what the report's front page shows), claims.html,
    leaderboard.html, summary.html and a page per detail table of `tables` that exists; leaderboard.{csv,md}
    beside the other tables. Returns the pages written."""
    tables, out = Path(tables), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    claims, safe = read_table(tables / "claims.csv"), read_table(tables / "safeness.csv")
    board = leaderboard(
        pd.read_csv(tables / "delta_m_bootstrap.csv"), safe, claims, read_table(tables / "convergence.csv")
    )
    board.to_csv(tables / "leaderboard.csv", index=False)
    (tables / "leaderboard.md").write_text(
        "# Leaderboards\n\n"
        + "\n\n".join(
            f"## {d}\n\n" + _shown_leaderboard(rows, settings.reference).to_markdown(index=False)
            for d, rows in board.groupby("dataset")
        )
        + "\n"
    )
    claims_part = (
        claims_section(claims)
        if claims is not None and len(claims)
        else [_heading(2, "Claims"), "<p>No claim applies to the methods and datasets of this run.</p>"]
    )
    board_part = leaderboard_section(board, settings)
    pages = {
        "front.html": STYLE + '<div class="mtlbench-front">\n' + "\n".join(claims_part + board_part) + "\n</div>\n",
        "claims.html": _page("Claims", claims_part),
        "leaderboard.html": _page("Leaderboards", board_part),
    }
    summary = pd.read_csv(tables / "summary.csv")
    body = [_heading(2, "Test metrics, mean ± std over seeds (delta_m: lower is better)")]
    for dataset in sorted(summary.dataset.dropna().unique()):
        body += [_heading(3, dataset), html_table(wide_table(summary, dataset)[0], index=True)]
    pages["summary.html"] = _page("Summary", body)
    for name, text in pages.items():
        (out / name).write_text(text)
    return [out / name for name in pages] + write_csv_pages({n: tables / f"{n}.csv" for n in DETAIL_TABLES}, out)
