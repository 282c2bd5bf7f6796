"""The tables a researcher reads first, as HTML for Snakemake's report: the claims, one leaderboard per
dataset (methods ranked by mean Delta_m with its bootstrap CI, the probability of improving on each baseline,
safeness and the verdicts of the claims about the method), then the detail tables.

Snakemake's report opens HTML items inline (an iframe) but offers CSV and Markdown items only as `data:`
downloads, which browsers block; so every table of the report is rendered here from the pipeline's CSVs.
The front page (workflow/report/workflow.rst) includes `front.html`: the claims and the leaderboards."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.claims import GENERALISATION, INTERVAL_NOTE, VERDICT_DEFINITIONS, VERDICTS, claims_display, scope_of
from mtlbench.tables import wide_table

# autoescaped: every text from a table, a claims file or a config is escaped; markup comes from the templates
TEMPLATES = Environment(loader=PackageLoader("mtlbench", "templates"), autoescape=True, keep_trailing_newline=True)


def render(template: str, **values: object) -> Markup:
    return Markup(TEMPLATES.get_template(template).render(**values))


STYLE = render("style.html.j2")


def leaderboard(
    bootstrap: pd.DataFrame,
    safeness: pd.DataFrame | None = None,
    claims: pd.DataFrame | None = None,
    convergence: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (dataset, method), ranked within the dataset by mean Delta_m (lower is better; the
    reference method is 0): its 95% bootstrap CI, P(improvement) over each baseline, the tasks on which it is
    significantly worse than the reference (safeness.csv) and the verdicts of the claims about it."""
    if bootstrap.empty:  # no Delta_m at all (no reference runs): no leaderboard rows
        return pd.DataFrame(
            columns=["dataset", "rank", "method", "mean_delta_m", "boot_ci95_low", "boot_ci95_high", "n"]
        )
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


def leaderboard_markdown(board: pd.DataFrame, reference: str) -> str:
    """leaderboard.md: one table per dataset, as the report shows it."""
    parts = [
        f"## {d}\n\n" + _shown_leaderboard(rows, reference).to_markdown(index=False)
        for d, rows in board.groupby("dataset")
    ]
    return "# Leaderboards\n\n" + "\n\n".join(parts) + "\n"


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


def table_data(
    table: pd.DataFrame, index: bool = False, verdict_columns: frozenset[str] = frozenset({"verdict"})
) -> dict[str, object]:
    """A table as the templates' `table` macro takes it: column titles, and per row its cells' texts with a
    verdict cell's classes (its verdict, coloured; `generalisation` for a row outside the claim's scope) in the
    `verdict_columns`."""
    head = ([table.index.name or ""] if index else []) + [str(c) for c in table.columns]
    rows = []
    for label, row in table.iterrows():
        texts = {column: _cell_text(value) for column, value in row.items()}
        cells = [(text, _verdict_class(text) if column in verdict_columns else "") for column, text in texts.items()]
        rows.append({"label": str(label), "cells": cells})
    return {"head": head, "rows": rows, "index": index}


def _cell_text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def html_table(table: pd.DataFrame, index: bool = False) -> str:
    """A table with escaped cells; a `verdict` column's cells carry their verdict as a class (coloured)."""
    macros = TEMPLATES.get_template("table.html.j2").module
    return str(macros.table(table_data(table, index)))  # type: ignore[attr-defined]


def _verdict_class(text: str) -> str:
    verdict = text.removesuffix(f" ({GENERALISATION})")
    if verdict not in VERDICTS:
        return ""
    return verdict.replace(" ", "-") + (" generalisation" if verdict != text else "")


def _page(title: str, body: Markup) -> str:
    return render("page.html.j2", title=title, style=STYLE, body=body)


def claims_section(claims: pd.DataFrame, robustness: pd.DataFrame | None = None) -> Markup:
    """The claims in the papers' scope, then the generalisation tests, then each claim under every protocol and
    setting (coloured like the verdicts), then what each verdict means."""
    in_scope = scope_of(claims) != GENERALISATION
    counts = claims[in_scope].verdict.value_counts()
    general = claims[~in_scope]
    return render(
        "claims.html.j2",
        summary=", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts),
        n_in_scope=int(in_scope.sum()),
        n_general=len(general),
        interval_note=INTERVAL_NOTE,
        in_scope=table_data(claims_display(claims[in_scope])),
        general=table_data(claims_display(general)) if len(general) else None,
        grid=robustness_view(robustness),
        definitions=list(VERDICT_DEFINITIONS.items()),
    )


def robustness_view(robustness: pd.DataFrame | None) -> dict[str, object] | None:
    """The robustness grid as the `table` macro takes it, every setting's cell coloured by its verdict; None when
    no claim was judged under anything but the fair protocol's runs."""
    from mtlbench.robustness import robustness_grid

    if robustness is None or robustness.empty or len(robustness_grid(robustness).columns) <= 3:
        return None
    grid = robustness_grid(robustness)
    return table_data(grid, verdict_columns=frozenset(grid.columns) - {"claim", "dataset"})


def leaderboard_section(board: pd.DataFrame, settings: AnalysisSettings) -> Markup:
    boards = [
        (dataset, table_data(_shown_leaderboard(rows, settings.reference)))
        for dataset, rows in board.groupby("dataset", sort=True)
    ]
    return render("leaderboards.html.j2", reference=settings.reference, rope=f"{settings.rope:g}", boards=boards)


def read_table(path: Path) -> pd.DataFrame | None:
    """A CSV of the pipeline, or None when it is missing or empty (one method: no comparisons to tabulate)."""
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def _csv_page(path: Path, title: str) -> str:
    table = read_table(path)
    shown = [] if table is None or table.empty else [(None, table_data(table.round(4)))]
    return _page(title, render("tables.html.j2", title=title, tables=shown, empty="No rows in this run."))


def write_csv_pages(csvs: dict[str, Path], out: Path) -> list[Path]:
    """One page per CSV (name -> path) that exists: NAME.html, the table as it is, rounded to 4 decimals."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in csvs.items():
        if Path(path).is_file():
            (out / f"{name}.html").write_text(_csv_page(Path(path), name.replace("_", " ")))
            written.append(out / f"{name}.html")
    return written


CUSTOM_PAGES = ("claims", "leaderboard", "summary")  # rendered here; every other page shows its table as it is


def detail_tables() -> list[str]:
    """The tables shown as they are: the output catalogue's with a report category."""
    from mtlbench.catalogue import report_pages

    return [o.name for o in report_pages() if o.name not in CUSTOM_PAGES]


def write_report_tables(tables: Path, out: Path, settings: AnalysisSettings) -> list[Path]:
    """front.html (claims, then the leaderboards: what the report's front page shows), claims.html,
    leaderboard.html, summary.html and a page per detail table of `tables` that exists. Returns the pages
    written."""
    tables, out = Path(tables), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    claims, board = read_table(tables / "claims.csv"), pd.read_csv(tables / "leaderboard.csv")
    robustness = read_table(tables / "robustness.csv")
    claims_part = (
        claims_section(claims, robustness) if claims is not None and len(claims) else render("no_claims.html.j2")
    )
    board_part = leaderboard_section(board, settings)
    pages = {
        "front.html": render("front.html.j2", style=STYLE, claims=claims_part, leaderboards=board_part),
        "claims.html": _page("Claims", claims_part),
        "leaderboard.html": _page("Leaderboards", board_part),
    }
    summary = pd.read_csv(tables / "summary.csv")
    per_dataset = [
        (dataset, table_data(wide_table(summary, dataset)[0], index=True))
        for dataset in sorted(summary.dataset.dropna().unique())
    ]
    title = "Test metrics, mean ± std over seeds (delta_m: lower is better)"
    pages["summary.html"] = _page("Summary", render("tables.html.j2", title=title, tables=per_dataset, empty=""))
    for name, text in pages.items():
        (out / name).write_text(text)
    return [out / name for name in pages] + write_csv_pages({n: tables / f"{n}.csv" for n in detail_tables()}, out)
