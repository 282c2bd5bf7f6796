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
