"""Efficiency from run records (and the benchmark suite's JSON when present), as ratios to hard sharing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["params_total", "params_inference", "seconds_per_step", "seconds_per_epoch", "peak_memory_mb"]


def efficiency_table(records: list[dict], reference: str = "hps", benchmark_json: Path | None = None) -> pd.DataFrame:
    rows = [{"dataset": r["dataset"], "method": r["method"], "seed": r["seed"], "device": r["device"],
             "params_total": r["params"]["total"], "params_inference": r["params"]["inference"],
             "seconds_per_step": r["timing"]["seconds_per_step"], "seconds_per_epoch": r["timing"]["seconds_per_epoch"],
             "peak_memory_mb": r["peak_memory_mb"]} for r in records if r["status"] == "ok"]
    if not rows:
        return pd.DataFrame(columns=["dataset", "method", *COLUMNS])
    runs = pd.DataFrame(rows)
    table = runs.groupby(["dataset", "method"], as_index=False).agg(
        **{c: (c, "mean") for c in COLUMNS}, n=("seed", "count"), device=("device", "first"))
    for column in COLUMNS:
        ref = table[table.method == reference].set_index("dataset")[column]
        table[f"{column}_ratio"] = table[column] / table.dataset.map(ref)
    if benchmark_json is not None and Path(benchmark_json).exists():
        bench = benchmark_steps(Path(benchmark_json))
        table = table.merge(bench, on="method", how="left")
    return table


def benchmark_steps(path: Path) -> pd.DataFrame:
    """Median step times from `pytest tests/benchmarks --benchmark-json PATH` (multimnist, batch 256)."""
    data = json.loads(path.read_text())
    rows = [{"method": b["param"] if b.get("param") else b["name"].split("[")[-1].rstrip("]"),
             "bench_step_ms": b["stats"]["median"] * 1e3} for b in data.get("benchmarks", [])]
    bench = pd.DataFrame(rows)
    if not bench.empty and "hps" in set(bench.method):
        hps = float(bench.loc[bench.method == "hps", "bench_step_ms"].iloc[0])
        bench["bench_step_ratio"] = bench.bench_step_ms / hps
    return bench


def pipeline_profile(records: list[dict], cores: int) -> pd.DataFrame:
    """Where a pipeline's time went, from its run records' `timing.breakdown`.

    Core-time is wall time x cores, the wall time spanning from the first training process's start to the last
    record. Each training process (one per job, holding one or more seeds) adds its start-up, data, model
    building, training, validation, checkpoint, tracking and finalising seconds; what remains of the core-time
    is `outside training jobs` (Snakemake's scheduling, aggregation, idle cores). Records without a breakdown
    (written by an older version) are left out and counted."""
    timed = [r for r in records if "breakdown" in r.get("timing", {})]
    if not timed:
        return pd.DataFrame(columns=["kind", "core_seconds", "share_of_core_time", "wall_seconds", "cores", "runs"])
    starts = [r["timing"]["process"]["started_at"] for r in timed]
    wall = max(r["timing"]["ended_at"] for r in timed) - min(starts)
    total = wall * cores
    kinds: dict[str, float] = {}
    for r in timed:
        threads = r["timing"]["process"].get("threads", 1)
        for kind, seconds in r["timing"]["breakdown"].items():
            kinds[kind] = kinds.get(kind, 0.0) + seconds * threads
    kinds["outside training jobs"] = max(0.0, total - sum(kinds.values()))
    rows = [{"kind": k, "core_seconds": v, "share_of_core_time": v / total if total else float("nan")}
            for k, v in kinds.items()]
    table = pd.DataFrame(rows)
    table["wall_seconds"], table["cores"], table["runs"] = wall, cores, len(timed)
    return table


def profile_line(table: pd.DataFrame) -> str:
    """One sentence for the report and the terminal."""
    if table.empty:
        return "no run record has a time breakdown"
    share = table.set_index("kind").share_of_core_time
    work = share.get("training", 0.0) + share.get("validation", 0.0)
    rest = ", ".join(f"{k} {v:.0%}" for k, v in share.drop(["training", "validation"], errors="ignore")
                     .sort_values(ascending=False).items() if v >= 0.005)
    return (f"{table.wall_seconds.iloc[0]:.0f} s wall on {table.cores.iloc[0]} cores for {table.runs.iloc[0]} runs: "
            f"{work:.0%} of the core-time trains and validates; the rest: {rest}")
