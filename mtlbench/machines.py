"""The same runs on two kinds of machine: which verdicts held on both, and which rest on an effect smaller than
the difference the machines make (issue 23.4).

On one kind of CPU every rerun is bit-identical; on another, float32 sums are ordered differently and training
drifts apart (results/reference/README.md). `mtlbench machines` takes the run records of the same config and
seeds from two machines (two results folders), pairs them by (dataset, method, seed, variant) and config hash,
and writes

- `machine_runs.csv`: per paired run and test metric, both values and their difference in % of the first's
  (each machine's CPU kind named);
- `machine_claims.csv`: per claim row, the verdict and estimate on each machine, whether the verdict held on
  both, the shift of the estimate between the machines and `within_machine_shift`: the estimate on the first
  machine is no larger than that shift, so the verdict rests on an effect the machine alone can move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mtlbench.aggregate import tidy_metrics, with_delta_m
from mtlbench.claims import Claim, evaluate_claims
from mtlbench.config import config_hash
from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord

Key = tuple[str, str, int, str]


def cpu_kind(records: list[RunRecord]) -> str:
    """'AMD EPYC (AVX2, 1 thread)', or the kinds joined when the records come from more than one."""
    kinds = {
        f"{r.host.get('cpu', '?')} ({r.host.get('cpu_capability', '?')}, {r.host.get('threads', '?')} thread)"
        for r in records
    }
    return " + ".join(sorted(kinds)) or "unknown"


def paired(a: list[RunRecord], b: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """The runs both machines trained with the same config, in a's order; none in common is an error."""

    def key(r: RunRecord) -> Key:
        return (r.dataset, r.method, r.seed, r.variant)

    by_key = {key(r): r for r in b}
    pairs = [(r, by_key[key(r)]) for r in a if key(r) in by_key]
    same = [
        (x, y) for x, y in pairs if config_hash({**x.config, "seed": None}) == config_hash({**y.config, "seed": None})
    ]
    if not same:
        raise MtlbenchError("the two sets of records share no run of the same dataset, method, seed and config")
    return same


def run_differences(pairs: list[tuple[RunRecord, RunRecord]]) -> pd.DataFrame:
    """Per paired run and test metric: both values and the difference in % of the first machine's value."""
    rows = []
    for a, b in pairs:
        for task, metrics in a.metrics.test.items():
            for metric, value in metrics.items():
                other = b.metrics.test.get(task, {}).get(metric, np.nan)
                rows.append(
                    {
                        "dataset": a.dataset,
                        "method": a.method,
                        "seed": a.seed,
                        "variant": a.variant,
                        "task": task,
                        "metric": metric,
                        "value_a": value,
                        "value_b": other,
                        "difference_pct": 100 * (other - value) / abs(value) if value else np.nan,
                    }
                )
    return pd.DataFrame(rows)


def _verdicts(claims: list[Claim], records: list[RunRecord], reference: str, alpha: float) -> pd.DataFrame:
    table = evaluate_claims(claims, with_delta_m(tidy_metrics(records), reference), records, alpha)
    return table.set_index(["id", "dataset"])[["verdict", "estimate", "unit"]]


def claim_differences(
    claims: list[Claim], pairs: list[tuple[RunRecord, RunRecord]], reference: str, alpha: float
) -> pd.DataFrame:
    """Per claim row: the verdict and estimate on each machine (on the runs both trained), whether the verdict held
    on both, the estimate's shift between the machines and whether the first machine's estimate is within it."""
    a = _verdicts(claims, [x for x, _ in pairs], reference, alpha)
    b = _verdicts(claims, [y for _, y in pairs], reference, alpha)
    both = a.join(b, lsuffix="_a", rsuffix="_b", how="inner").reset_index()
    shift = (both.estimate_b - both.estimate_a).abs()
    return (
        both.assign(
            held_on_both=both.verdict_a == both.verdict_b,
            machine_shift=shift,
            within_machine_shift=both.estimate_a.abs() <= shift,
        )
        .drop(columns=["unit_b"])
        .rename(columns={"unit_a": "unit"})
    )


def compare_machines(
    a: list[RunRecord], b: list[RunRecord], claims: list[Claim], out: Path, reference: str, alpha: float
) -> pd.DataFrame:
    """Writes machine_runs.csv and machine_claims.csv to `out` (each row naming both CPU kinds); returns the
    claims table."""
    pairs = paired(a, b)
    kinds = {"machine_a": cpu_kind([x for x, _ in pairs]), "machine_b": cpu_kind([y for _, y in pairs])}
    out.mkdir(parents=True, exist_ok=True)
    run_differences(pairs).assign(**kinds).to_csv(out / "machine_runs.csv", index=False)
    table = claim_differences(claims, pairs, reference, alpha).assign(**kinds)
    table.to_csv(out / "machine_claims.csv", index=False)
    return table
