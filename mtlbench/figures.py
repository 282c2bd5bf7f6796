"""Figures for the report, drawn from the tables and run records (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mtlbench.convergence import still_improving_counts
from mtlbench.record import RunRecord  # noqa: E402


def _save(fig, path: Path, rect: tuple[float, float, float, float] | None = None) -> None:
    """`rect`: the part of the figure the axes may fill (room left for a figure legend)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _method_colours(methods: list[str]) -> dict[str, Any]:
    """One colour per method, the same rule in every figure."""
    return dict(zip(methods, plt.get_cmap("tab20")(np.linspace(0, 1, max(len(methods), 2))), strict=False))


def primary_panels(summary: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """(dataset, task) -> the rows of each task's primary metric (the one the tables and Delta_m use)."""
    data = summary[summary.metric.notna() & (summary.task != "all")]
    return list(data[data.primary.astype(bool)].groupby(["dataset", "task"]))


def _placeholder(path: Path, text: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(fig, path)


def metrics_with_ci(summary: pd.DataFrame, path: Path, reference: str) -> None:
    """Per dataset and task, each method's primary test metric (the one Delta_m and the tables use) with its 95%
    CI, the reference method as a dashed line, and the better direction in the axis label. The y-range is set
    by the middle of the methods (a method far outside it, e.g. MGDA on unnormalised regression tasks, is drawn
    as an arrow at the edge with its value), so one outlier cannot flatten the others."""
    panels = primary_panels(summary)
    if not panels:
        return _placeholder(path, "no successful runs")
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, ((dataset, task), grp) in zip(axes.flat, panels, strict=False):
        grp = grp.sort_values("method").reset_index(drop=True)
        x = np.arange(len(grp))
        q1, q3 = np.nanpercentile(grp["mean"], [25, 75])
        fence = 3 * max(q3 - q1, 1e-9 * max(abs(q1), abs(q3), 1.0))
        inside = grp["mean"].between(q1 - fence, q3 + fence)  # outliers: beyond 3 IQR of the methods' means
        shown = grp[inside]
        lo = np.nanmin(np.fmin(shown.ci95_low, shown["mean"]))
        hi = np.nanmax(np.fmax(shown.ci95_high, shown["mean"]))
        pad = 0.08 * ((hi - lo) or abs(hi) or 1.0)
        lo, hi = lo - pad, hi + pad
        inside = grp["mean"].between(lo, hi)  # drawn as points; the rest as arrows at the edge
        err = np.vstack([grp["mean"] - grp.ci95_low, grp.ci95_high - grp["mean"]])
        ax.errorbar(x[inside], grp["mean"][inside], yerr=np.nan_to_num(err[:, inside]), fmt="o", ms=4, capsize=3)
        for i in np.flatnonzero(~inside):
            edge = hi if grp["mean"][i] > hi else lo
            ax.annotate(
                f"{grp['mean'][i]:.3g}",
                (x[i], edge),
                xytext=(0, -6 if edge == hi else 6),
                textcoords="offset points",
                rotation=90,
                ha="center",
                va="top" if edge == hi else "bottom",
                fontsize=6,
                color="tab:red",
            )
            ax.plot(x[i], edge, marker="^" if edge == hi else "v", color="tab:red", ms=6)
        ref = grp[grp.method == reference]
        if len(ref):
            ax.axhline(float(ref["mean"].iloc[0]), color="grey", ls="--", lw=0.8, label=reference)
            ax.legend(fontsize=6, loc="best")
        ax.set_ylim(lo, hi)
        ax.set_xticks(x, grp.method, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{dataset}: {task}", fontsize=8)
        better = "higher" if bool(grp.higher_is_better.iloc[0]) else "lower"
        ax.set_ylabel(f"{grp.metric.iloc[0]} ({better} is better)", fontsize=8)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    _save(fig, path)


def relation_matrices(records: list[RunRecord], path: Path) -> None:
    """SRDML's learned relation matrix (mean over seeds) beside the ground truth, where one is known."""
    panels = []
    for dataset in sorted({r.dataset for r in records}):
        runs = [r for r in records if r.dataset == dataset and r.ok and "relation" in r.method_state]
        if not runs or len(runs[0].method_state["relation"]) < 3:  # with two tasks omega is trivially 1
            continue
        names = runs[0].method_state.get("relation_tasks") or list(runs[0].directions)
        for method in sorted({r.method for r in runs}):
            mats = [np.array(r.method_state["relation"]) for r in runs if r.method == method]
            panels.append((f"{dataset}: {method} (mean of {len(mats)} seeds)", np.mean(mats, axis=0), names))
        truth = runs[0].task_info.get("ground_truth_relation")
        if truth is not None:
            panels.append((f"{dataset}: ground truth", np.array(truth), names))
    if not panels:
        return _placeholder(path, "no SRDML runs")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (title, mat, names) in zip(axes.flat, panels, strict=True):
        im = ax.imshow(mat, cmap="viridis")
        ax.set_title(title, fontsize=8)
        ticks = np.arange(len(mat))
        ax.set_xticks(ticks, names, rotation=90, fontsize=6)
        ax.set_yticks(ticks, names, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def gate_values(records: list[RunRecord], path: Path) -> None:
    """DSMTL's public-encoder weight per task (mean over seeds; per stage for DSMTL-AL)."""
    rows = []
    for r in records:
        gates = r.method_state.get("gates") if r.ok else None
        for task, value in (gates or {}).items():
            values = [value["public"]] if isinstance(value, dict) else list(value)
            for stage, v in enumerate(values):
                label = r.method if len(values) == 1 else f"{r.method} stage {stage + 1}"
                rows.append({"dataset": r.dataset, "label": label, "task": task, "public": v})
    if not rows:
        return _placeholder(path, "no DSMTL runs")
    data = pd.DataFrame(rows).groupby(["dataset", "label", "task"], as_index=False).public.mean()
    datasets = sorted(data.dataset.unique())
    colours = _method_colours(sorted(data.label.unique()))  # a method (and stage) keeps its colour in every panel
    fig, axes = plt.subplots(len(datasets), 1, figsize=(9, 2.8 * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets, strict=True):
        pivot = data[data.dataset == dataset].pivot(index="task", columns="label", values="public")
        pivot.plot.bar(ax=ax, width=0.8, fontsize=7, color=[colours[c] for c in pivot.columns])
        ax.set_ylim(0, 1)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_ylabel("public weight a_t")
        ax.set_title(dataset, fontsize=9)
        ax.legend(fontsize=6, ncol=3)
    _save(fig, path)


def critical_difference(rankings: dict[str, dict], path: Path) -> None:
    """One critical-difference panel per ranking (per dataset when the blocks are tasks: the tasks of
    different datasets are not pooled), each titled with its blocks, Friedman's p and the CD."""
    import scikit_posthocs as sp

    drawable = {k: r for k, r in rankings.items() if r.get("mean_ranks") and r.get("nemenyi") is not None}
    if not drawable:
        notes = "; ".join(f"{k}: {r.get('note')}" for k, r in rankings.items())
        return _placeholder(path, notes or "not enough methods or blocks for a CD diagram")
    fig, axes = plt.subplots(len(drawable), 1, figsize=(8, 2.8 * len(drawable)), squeeze=False)
    for ax, (name, ranking) in zip(axes[:, 0], drawable.items(), strict=True):
        sp.critical_difference_diagram(pd.Series(ranking["mean_ranks"]), ranking["nemenyi"], ax=ax)
        caveat = "" if ranking["block_kind"] == "datasets" else " (tasks of one dataset: p is optimistic)"
        ax.set_title(
            f"{name}: mean ranks over {ranking['n_blocks']} {ranking['block_kind']}; Friedman p = {ranking['p']:.3g}, "
            f"CD = {ranking['critical_difference']:.2f}{caveat}",
            fontsize=8,
        )
    _save(fig, path)


SYMLOG_LINTHRESH = 10.0  # Delta_m in %: linear within +-10, logarithmic beyond


def _readable_axes(ax, delta_m: np.ndarray) -> None:
    """Round ticks: the log x axis at 1, 1.5, 2, 3, 5 and 7 times the powers of ten (a 13-60 ms range
    is labelled 15, 20, 30, 50); Delta_m linear with a few round steps, symlog only when a method lies far beyond
    the rest (more than 10x the linear threshold), so that the axis is never labelled at its limits alone."""
    ticker = matplotlib.ticker
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    finite = delta_m[np.isfinite(delta_m)]
    if finite.size and np.abs(finite).max() > 10 * SYMLOG_LINTHRESH:
        ax.set_yscale("symlog", linthresh=SYMLOG_LINTHRESH)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))


def time_vs_delta_m(efficiency: pd.DataFrame, summary: pd.DataFrame, path: Path, reference: str) -> None:
    """Cost against benefit per dataset: ms per training step (log scale) against mean Delta_m, one marker and
    colour per method named in the legend (no labels on the points, so nothing overlaps); lower-left is
    cheaper and better. Delta_m's axis is symlog so that a far-off method does not flatten the rest."""
    dm = summary[summary.metric == "delta_m"][["dataset", "method", "mean"]]
    data = efficiency.merge(dm, on=["dataset", "method"])
    if data.empty:
        return _placeholder(path, "no delta_m (needs STL runs)")
    data = data[data.seconds_per_step > 0]  # a log axis: runs without step times (records without timings) left out
    if data.empty:
        return _placeholder(path, "no step times in the run records")
    datasets = sorted(data.dataset.unique())
    methods = sorted(data.method.unique())
    colours = _method_colours(methods)
    markers = "osD^vP*Xhp<>8"
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.8 * len(datasets) + 1.6, 3.6), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets, strict=True):
        d = data[data.dataset == dataset]
        for k, method in enumerate(methods):
            row = d[d.method == method]
            if len(row):
                ax.scatter(
                    row.seconds_per_step * 1e3,
                    row["mean"],
                    color=colours[method],
                    marker=markers[k % len(markers)],
                    s=40,
                    label=method,
                    edgecolors="black",
                    linewidths=0.4,
                )
        ax.axhline(0, color="grey", ls="--", lw=0.8)
        _readable_axes(ax, d["mean"].to_numpy(float))
        ax.set_xlabel("ms per training step (log)")
        ax.set_ylabel(f"Delta_m % vs {reference} (lower is better)")
        ax.set_title(dataset, fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    _save(fig, path, rect=(0, 0, 1 - 1.5 / (4.8 * len(datasets) + 1.6), 1))


def learning_curves(records: list[RunRecord], path: Path) -> None:
    """Per dataset, each method's summed validation loss per epoch: the median over seeds with the band from
    the lowest to the highest seed, on a log scale; a dot marks each seed's selected epoch. A dashed curve and
    its legend entry mark a method with runs still improving at the end of the budget (mtlbench.convergence's
    rule: the fitted fall over the last tenth is beyond the epochs' own scatter and at least 0.1% of the loss)."""
    datasets = sorted({r.dataset for r in records if r.history})
    if not datasets:
        return _placeholder(path, "no run has a training history")
    fig, axes = plt.subplots(len(datasets), 1, figsize=(8, 3.4 * len(datasets)), squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets, strict=True):
        runs = [r for r in records if r.dataset == dataset and r.history]
        for method, colour in _method_colours(sorted({r.method for r in runs})).items():
            curves = [[sum(e["val_loss"]) for e in r.history] for r in runs if r.method == method]
            length = min(len(c) for c in curves)
            values = np.array([c[:length] for c in curves], dtype=float)
            epochs = np.arange(1, length + 1)
            improving, judged = still_improving_counts(runs, dataset, method)
            label = method + (f" (still improving: {improving} of {judged})" if improving else "")
            style = "--" if improving else "-"
            ax.plot(epochs, np.median(values, axis=0), color=colour, lw=1.2, ls=style, label=label)
            ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.15, lw=0)
            selected = [r.selected_epoch for r in runs if r.method == method and r.selected_epoch is not None]
            chosen = [e for e in selected if e < length]
            ax.scatter(np.array(chosen) + 1, np.median(values, axis=0)[chosen], color=colour, s=10, zorder=3)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss (sum over tasks)")
        ax.set_title(
            f"{dataset}: validation loss per epoch (median and range over seeds; dots: selected epochs; "
            "dashed: runs still improving at the end)",
            fontsize=9,
        )
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    _save(fig, path)
