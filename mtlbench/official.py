"""The official code's own result on a claim, where its outputs are known (official/, issue 23).

A protocols file may name, per dataset and method, a file of outputs of the paper's official code (the format of
official/README.md: SRDML's synthetic script, its per-iteration test RMSE and MAE per task and its final relation
matrix). For a claim whose method (and baseline) have such outputs on the row's dataset, the official result is
read off them: one run of the official code, so it is a count, not a test, and it says so.

- `superior` on every task (`metric: tasks` or `tasks:rmse,mae`): on how many tasks the method's last-iteration
  error is below the baseline's, per metric; `reproduced` only if on all of them;
- `relations`: the parts of the claim on the final relation weights against the ground truth (Spearman above 0,
  twins above the same group above other groups, the weight across groups below the claim's tolerance).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlbench.claims import Claim, relation_parts, relation_score
from mtlbench.errors import MtlbenchError

OFFICIAL_METRICS = {"rmse": "rmse_task", "mae": "mae_task"}


def read_outputs(path: Path | str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MtlbenchError(f"official outputs {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MtlbenchError(f"official outputs {path}: not a JSON object")
    return data


def _final(data: dict[str, Any], metric: str) -> np.ndarray | None:
    key = OFFICIAL_METRICS.get(metric)
    values = data.get(key) if key else None
    return np.asarray(values, dtype=float)[-1] if values else None


def _per_task(claim: Claim, method: dict[str, Any], baseline: dict[str, Any]) -> tuple[str, str] | None:
    named = claim.metric.partition(":")[2] if claim.metric.startswith("tasks:") else "rmse"
    counts = []
    for metric in [m.strip() for m in named.split(",")]:
        a, b = _final(method, metric), _final(baseline, metric)
        if a is None or b is None or a.shape != b.shape:
            return None
        counts.append((metric, int((a < b).sum()), len(a)))
    verdict = "reproduced" if all(k == n for _, k, n in counts) else "not reproduced"
    said = ", ".join(f"{k} of {n} tasks by {metric.upper()}" for metric, k, n in counts)
    return verdict, f"better on {said}"


def _relation_parts(claim: Claim, method: dict[str, Any], truth: np.ndarray) -> tuple[str, str] | None:
    """The relations claim's parts (mtlbench.claims.relation_parts) on the final weights of one official run."""
    learned = np.asarray(method.get("c_final") or [], dtype=float)
    if learned.shape != truth.shape:
        return None
    parts = relation_parts(pd.DataFrame([relation_score(truth, learned)]), claim.tolerance)
    holds = [bool(values[0] > 0) for _, _, values in parts]
    verdict = "reproduced" if all(holds) else "not reproduced"
    said = "; ".join(
        f"{name} ({numbers}): {'holds' if ok else 'fails'}" for (name, numbers, _), ok in zip(parts, holds, strict=True)
    )
    return verdict, said


def official_result(claim: Claim, dataset: str, outputs: dict[str, str], truth: np.ndarray | None) -> str:
    """'not reproduced (official code, 1 run, no test: better on 4 of 12 tasks by RMSE)', or '' when the official
    outputs cannot speak to the claim (`outputs`: method -> its official outputs file on the dataset)."""
    if claim.method not in outputs or (claim.baseline and claim.baseline not in outputs):
        return ""
    method = read_outputs(outputs[claim.method])
    found = None
    if claim.test == "superior" and claim.metric.startswith("tasks"):
        found = _per_task(claim, method, read_outputs(outputs[claim.baseline]))
    elif claim.test == "relations" and truth is not None:
        found = _relation_parts(claim, method, truth)
    if found is None:
        return ""
    seed = method.get("seed")
    script = ", the script's loss as published" if method.get("fix_broadcast") is False else ""
    run = f"official code{script}, 1 run{f' (seed {seed})' if seed is not None else ''}, no test"
    return f"{found[0]} ({run}: {found[1]})"
