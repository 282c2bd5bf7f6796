"""Efficiency from run records (and the benchmark suite's JSON when present), as ratios to hard sharing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtlbench.record import RunRecord

# train_seconds is a run's whole training time, every stage included (DSMTL-AL's search: an extra cost on
# top of the budget every method gets, `epochs_run` says how many epochs that made)
COLUMNS = ["params_total", "params_inference", "seconds_per_step", "seconds_per_epoch", "train_seconds", "epochs_run"]


def efficiency_table(records: list[RunRecord], reference: str, benchmark: Path | None = None) -> pd.DataFrame:
    """Per (dataset, method): parameters and times from the run records, as ratios to `reference`; with the
    benchmark's step_cost.csv, its interleaved step times and the memory each method needs. The records'
    `process_max_rss_mb` is the whole process's resident size (the same ~GB for every method on a CPU), kept
    as information only: no ratio is formed from it."""
    rows = [
        {
            "dataset": r.dataset,
            "method": r.method,
            "seed": r.seed,
            "device": r.device,
            "params_total": r.params.total,
            "params_inference": r.params.inference,
            "seconds_per_step": r.timing.seconds_per_step,
            "seconds_per_epoch": r.timing.seconds_per_epoch,
            "train_seconds": r.timing.train_seconds,
            "epochs_run": r.epochs_completed,
            "process_max_rss_mb": r.peak_memory_mb,
        }
        for r in records
        if r.ok
    ]
    if not rows:
        return pd.DataFrame(columns=["dataset", "method", *COLUMNS])
    runs = pd.DataFrame(rows)
    table = runs.groupby(["dataset", "method"], as_index=False).agg(
        **{c: (c, "mean") for c in [*COLUMNS, "process_max_rss_mb"]}, n=("seed", "count"), device=("device", "first")
    )
    for column in COLUMNS:
        ref = table[table.method == reference].set_index("dataset")[column]
        table[f"{column}_ratio"] = table[column] / table.dataset.map(ref)
    if benchmark is not None and Path(benchmark).is_file():
        bench = pd.read_csv(benchmark).rename(
            columns={
                "median_s": "bench_step_s",
                "ratio_to_hps": "bench_step_ratio",
                "memory_mb": "bench_memory_mb",
                "memory_ratio_to_hps": "bench_memory_ratio",
            }
        )
        keep = [
            c
            for c in ("method", "bench_step_s", "bench_step_ratio", "bench_memory_mb", "bench_memory_ratio")
            if c in bench
        ]
        table = table.merge(bench[keep], on="method", how="left")
    return table


def pipeline_profile(records: list[RunRecord], cores: int) -> pd.DataFrame:
    """Where a pipeline's time went, from its run records' `timing.breakdown`.

    Core-time is wall time x cores, the wall time spanning from the first training process's start to the last
    record. Each training process (one per job, holding one or more seeds) adds its start-up, data, model
    building, training, validation, checkpoint, tracking and finalising seconds; what remains of the core-time
    is `outside training jobs` (Snakemake's scheduling, aggregation, idle cores). With `cores` 0 (a cluster:
    no fixed core count) the core-time is the training processes' own (their spans times their threads).
    Records without a breakdown (written by an older version) are left out."""
    timed = [
        (r.timing, r.timing.process, r.timing.ended_at)
        for r in records
        if r.timing.breakdown and r.timing.process is not None and r.timing.ended_at is not None
    ]
    if not timed:
        return pd.DataFrame(columns=["kind", "core_seconds", "share_of_core_time", "wall_seconds", "cores", "runs"])
    wall = max(ended for _, _, ended in timed) - min(process.started_at for _, process, _ in timed)
    spans: dict[tuple, float] = {}
    for _, process, ended in timed:
        key = (process.pid, process.started_at)
        spans[key] = max(spans.get(key, 0.0), (ended - process.started_at) * process.threads)
    total = wall * cores if cores > 0 else sum(spans.values())
    kinds: dict[str, float] = {}
    for timing, process, _ in timed:
        for kind, seconds in timing.breakdown.items():
            kinds[kind] = kinds.get(kind, 0.0) + seconds * process.threads
    kinds["outside training jobs" if cores > 0 else "unaccounted in jobs"] = max(0.0, total - sum(kinds.values()))
    rows = [
        {"kind": k, "core_seconds": v, "share_of_core_time": v / total if total else float("nan")}
        for k, v in kinds.items()
    ]
    table = pd.DataFrame(rows)
    table["wall_seconds"], table["cores"], table["runs"] = wall, cores, len(timed)
    return table


def profile_line(table: pd.DataFrame) -> str:
    """One sentence for the report and the terminal."""
    if table.empty:
        return "no run record has a time breakdown"
    share = table.set_index("kind").share_of_core_time
    work = share.get("training", 0.0) + share.get("validation", 0.0)
    rest = ", ".join(
        f"{k} {v:.0%}"
        for k, v in share.drop(["training", "validation"], errors="ignore").sort_values(ascending=False).items()
        if v >= 0.005
    )
    cores = table.cores.iloc[0]
    where = f"{cores} cores" if cores > 0 else "cluster jobs (core-time: the jobs' own)"
    return (
        f"{table.wall_seconds.iloc[0]:.0f} s wall on {where} for {table.runs.iloc[0]} runs: "
        f"{work:.0%} of the core-time trains and validates; the rest: {rest}"
    )
