"""Report tables from the summary: CSV, Markdown and LaTeX (booktabs, best per column in bold).

Every number comes from the run records through `aggregate.summarize`; nothing is typed in by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _fmt(mean: float, std: float, digits: int) -> str:
    if np.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if not np.isnan(std) else f"{mean:.{digits}f}"


def _fmt_significant(mean: float, std: float, digits: int = 3) -> str:
    """A printed table's cell: the mean to `digits` significant digits, its std to two."""
    if np.isnan(mean):
        return "—"
    return f"{_significant(mean, digits)} ± {_significant(std, 2)}" if not np.isnan(std) else _significant(mean, digits)


def _significant(x: float, digits: int) -> str:
    """`x` to `digits` significant digits, positional (1,700 and 0.0019, never 1.7e+03)."""
    text = np.format_float_positional(x, precision=digits, unique=False, fractional=False, trim="-")
    whole, dot, fraction = text.partition(".")
    return f"{int(whole):,}{dot}{fraction}" if whole.lstrip("-").isdigit() and len(whole.lstrip("-")) > 3 else text


def wide_table(
    summary: pd.DataFrame, dataset: str, digits: int = 4, significant: bool = False
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Methods x (task/metric) cells "mean ± std" for one dataset, and the best method per column.
    Each task's primary metric and Delta_m only; summary.csv keeps every metric."""
    data = summary[(summary.dataset == dataset) & summary.metric.notna() & (summary.primary == True)]  # noqa: E712
    cells: dict[str, dict[str, str]] = {}
    best: dict[str, str] = {}
    for (task, metric), grp in data.groupby(["task", "metric"], sort=False):
        column = "delta_m %" if metric == "delta_m" else f"{task} {metric}"
        higher = bool(grp.higher_is_better.iloc[0])
        ranked = grp.sort_values("mean", ascending=not higher)
        best[column] = ranked.method.iloc[0]
        for row in grp.itertuples():
            cell = _fmt_significant(row.mean, row.std) if significant else _fmt(row.mean, row.std, digits)
            cells.setdefault(row.method, {})[column] = cell
    table = pd.DataFrame.from_dict(cells, orient="index")
    diverged = summary[summary.dataset == dataset].groupby("method").n_diverged.max()
    if diverged.any():
        table["diverged runs"] = diverged.reindex(table.index).fillna(0).astype(int).astype(str)
        for method in diverged[diverged > 0].index.difference(table.index):
            table.loc[method] = "—"
            table.loc[method, "diverged runs"] = str(diverged[method])
    table.index.name = "method"
    return table.sort_index(), best


def write_summary_tables(summary: pd.DataFrame, out_dir: Path, excluded: pd.DataFrame | None = None) -> None:
    """`excluded`: the task metrics left out of Delta_m (dataset, task, metric, reason), named under each table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    md, tex = [], []
    for dataset in sorted(summary.dataset.dropna().unique()):
        table, best = wide_table(summary, dataset)
        marked = table.copy()
        for column, method in best.items():
            if method in marked.index:
                marked.loc[method, column] = f"**{marked.loc[method, column]}**"
        md += [
            f"## {dataset}",
            "",
            "Test metrics, mean ± std over seeds (best per column in bold; delta_m: lower is better, STL = 0).",
            "",
            marked.to_markdown(),
            "",
        ]
        left_out = excluded[excluded.dataset == dataset] if excluded is not None else pd.DataFrame()
        if len(left_out):
            md += [
                "Left out of delta_m for every method: "
                + "; ".join(f"{r.task}.{r.metric} ({r.reason})" for r in left_out.itertuples())
                + ".",
                "",
            ]
        tex.append(_latex(*wide_table(summary, dataset, significant=True), dataset))
    (out_dir / "summary.md").write_text("\n".join(md) + "\n")
    (out_dir / "summary.tex").write_text(LATEX_PREAMBLE_NOTE + "\n\n".join(tex) + "\n")


# a table wider than the text is scaled down to it (12 synthetic tasks would be ~1,000 pt wide); others keep
# their natural size
FIT_TO_TEXT = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"
LATEX_PREAMBLE_NOTE = "% mtlbench summary tables: \\input{summary.tex} with \\usepackage{booktabs,graphicx}\n\n"


# columns per printed table: a dataset with more task metrics is split into several tables, so that every cell
# stays at the text's size (12 synthetic tasks in one table were scaled to about 3-point type)
LATEX_COLUMNS = 4


def _latex(table: pd.DataFrame, best: dict[str, str], dataset: str) -> str:
    """One table per LATEX_COLUMNS columns of the dataset's summary (3 significant digits, std to 2)."""
    cols = list(table.columns)
    chunks = [cols[i : i + LATEX_COLUMNS] for i in range(0, len(cols), LATEX_COLUMNS)] or [[]]
    return "\n\n".join(
        _latex_part(table[chunk], best, dataset, f" (part {k + 1} of {len(chunks)})" if len(chunks) > 1 else "")
        for k, chunk in enumerate(chunks)
    )


def _escape(s: str) -> str:
    return s.replace("_", r"\_").replace("±", r"$\pm$").replace("%", r"\%")


def _latex_part(table: pd.DataFrame, best: dict[str, str], dataset: str, part: str) -> str:
    escape = _escape
    cols = list(table.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{Test metrics on {escape(dataset)}{part} (mean $\\pm$ std over seeds; best in bold).}}",
        FIT_TO_TEXT,
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        "method & " + " & ".join(escape(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    for method, row in table.iterrows():
        cells = []
        for c in cols:
            cell = escape(str(row[c]))
            cells.append(rf"\textbf{{{cell}}}" if best.get(c) == method else cell)
        lines.append(escape(str(method)) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "}", r"\end{table}"]
    return "\n".join(lines)


def write_task_averaged(table: pd.DataFrame, out_dir: Path, digits: int = 4) -> None:
    """task_averaged.{csv,md}: per dataset, methods x metrics averaged over the tasks (SRDML's table form)."""
    table.to_csv(out_dir / "task_averaged.csv", index=False)
    md = []
    for dataset, data in table.groupby("dataset", sort=True):
        wide = pd.DataFrame(
            {
                metric: {r.method: _fmt(r.mean, r.std, digits) for r in grp.itertuples()}
                for metric, grp in data.groupby("metric", sort=False)
            }
        )
        wide.index.name = "method"
        md += [
            f"## {dataset}",
            "",
            f"Each metric averaged over the {int(data.n_tasks.iloc[0])} tasks within a seed, "
            "then mean ± std over seeds (test split, epoch selected on validation).",
            "",
            wide.sort_index().to_markdown(),
            "",
        ]
    (out_dir / "task_averaged.md").write_text("\n".join(md) + "\n")
