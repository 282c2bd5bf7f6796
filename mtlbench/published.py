"""Published numbers beside the suite's own (issue 16.6): `published.yaml` holds them with their source and
protocol; `published_comparison` puts each beside the suite's mean over seeds on the same footing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

PUBLISHED = Path(__file__).with_name("published.yaml")
COLUMNS = [
    "dataset",
    "method",
    "metric",
    "suite_mean",
    "suite_std",
    "n",
    "published",
    "difference",
    "source",
    "protocol",
]


def load_published(path: Path = PUBLISHED) -> pd.DataFrame:
    """One row per (source, dataset, method, metric), values on the suite's scale (fractions, not %)."""
    rows = []
    for entry in yaml.safe_load(Path(path).read_text()) or []:
        scale = float(entry.get("scale", 1))
        for dataset, methods in entry["datasets"].items():
            for method, metrics in methods.items():
                for metric, value in metrics.items():
                    rows.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "metric": metric,
                            "form": entry["form"],
                            "published": float(value) / scale,
                            "source": entry["source"],
                            "protocol": " ".join(str(entry["protocol"]).split()),
                        }
                    )
    return pd.DataFrame(rows, columns=["dataset", "method", "metric", "form", "published", "source", "protocol"])


def published_comparison(
    task_averaged: pd.DataFrame, summary: pd.DataFrame, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """For every published number whose dataset and method the run has: the suite's mean and std over seeds of
    the same quantity (a task-averaged metric, or one `task.metric`), the published value and the difference
    (suite minus published)."""
    published = load_published() if published is None else published
    rows = []
    for p in published.itertuples():
        if p.form == "task_averaged":
            own = task_averaged[
                (task_averaged.dataset == p.dataset)
                & (task_averaged.method == p.method)
                & (task_averaged.metric == p.metric)
            ]
        else:
            task, _, metric = p.metric.partition(".")
            own = summary[
                (summary.dataset == p.dataset)
                & (summary.method == p.method)
                & (summary.task == task)
                & (summary.metric == metric)
            ]
        if own.empty:
            continue
        mean = float(own["mean"].iloc[0])
        rows.append(
            {
                "dataset": p.dataset,
                "method": p.method,
                "metric": p.metric,
                "suite_mean": mean,
                "suite_std": float(own["std"].iloc[0]),
                "n": int(own["n"].iloc[0]),
                "published": p.published,
                "difference": mean - p.published,
                "source": p.source,
                "protocol": p.protocol,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def published_markdown(table: pd.DataFrame) -> str:
    lines = ["# Published numbers beside the suite's", ""]
    if table.empty:
        datasets = ", ".join(sorted(load_published().dataset.unique()))
        return "\n".join(
            lines
            + [f"No dataset of this run has published numbers in mtlbench/published.yaml (it has {datasets}).", ""]
        )
    for (dataset, source), grp in table.groupby(["dataset", "source"], sort=True):
        shown = grp.assign(
            suite=[f"{m:.4f} ± {s:.4f}" for m, s in zip(grp.suite_mean, grp.suite_std, strict=True)],
            published=grp.published.map("{:.4f}".format),
            difference=grp.difference.map("{:+.4f}".format),
        )
        lines += [
            f"## {dataset}: {source}",
            "",
            f"Protocol: {grp.protocol.iloc[0]}.",
            "",
            shown[["method", "metric", "suite", "n", "published", "difference"]].to_markdown(index=False),
            "",
        ]
    return "\n".join(lines)
