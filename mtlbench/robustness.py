"""Every claim under each protocol and at each value of the choices that touch it (issue 23).

The claims table's verdicts come from the config's own runs: the `fair` protocol. The pipeline also trains
(mtlbench/protocols.py) each protocol of `robustness.protocols` (the paper's `published` experiment) and each
value of the choices of `robustness.sensitivity`. Here every claim row is judged again, by the same test
(mtlbench.claims), on

- each protocol's runs of its dataset, or a reason why the protocol does not apply (it declares nothing there,
  it does not train the claim's methods, this config did not run it, a step cost is measured only once);
- each value of each choice swept on its dataset that touches its method or baseline: the runs of those methods
  replaced by the value's, every other run the protocol's own.

A claim is `robust` when every value of every choice gives it the verdict the protocol's own runs give, else it
`depends on` the choices that moved it, with the verdict per value. It `holds everywhere` when, besides, every
protocol that applies gives the fair verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mtlbench.aggregate import tidy_metrics, with_delta_m
from mtlbench.claims import ESTIMATE_COLUMNS, Claim, evaluate_claims
from mtlbench.official import official_result
from mtlbench.protocols import FAIR
from mtlbench.record import Metrics, RunRecord

COLUMNS = ["id", "claim", "dataset", "protocol", "choice", "value", "verdict", *ESTIMATE_COLUMNS, "note"]
ROBUST, DEPENDS = "robust", "depends on"
NOT_APPLICABLE = "does not apply"
OFFICIAL = "official code"  # the official code's own result (one run, a count): shown, not a protocol of the suite


@dataclass(frozen=True)
class Judge:
    """Judges claims on a set of records, with the analysis's settings."""

    claims: dict[str, Claim]
    reference: str
    alpha: float

    def verdict(self, claim_id: str, dataset: str, records: list[RunRecord]) -> dict[str, Any] | None:
        """The claim's row on `records` of `dataset`; None when they lack its method or baseline."""
        claim = self.claims[claim_id]
        runs = [r for r in records if r.dataset == dataset]
        present = {r.method for r in runs}
        if any(m and m not in present for m in (claim.method, claim.baseline)):
            return None
        metrics = with_delta_m(tidy_metrics(runs), self.reference)
        rows = evaluate_claims([replace(claim, datasets=(dataset,))], metrics, runs, self.alpha)
        return rows.iloc[0].to_dict() if len(rows) else None


def reported(records: list[RunRecord], report: str) -> list[RunRecord]:
    """The records as a protocol reports them: `last` puts the last epoch's test metrics in place of the
    selected epoch's (a script that prints its final iterate)."""
    if report != "last":
        return records
    return [
        replace(r, metrics=Metrics(val=r.metrics.val, test=r.metrics.test_last, test_last=r.metrics.test_last))
        for r in records
    ]


def substituted(base: list[RunRecord], value: list[RunRecord], methods: list[str]) -> list[RunRecord]:
    """`base` with the runs of `methods` replaced by a choice value's."""
    return [r for r in base if r.method not in methods] + [r for r in value if r.method in methods]


@dataclass
class Runs:
    """The records of every protocol and every variant, by name ('' = fair), as each protocol reports them."""

    fair: list[RunRecord]
    variants: dict[str, list[RunRecord]]
    reports: dict[str, str]

    def of(self, variant: str) -> list[RunRecord]:
        if not variant:
            return self.fair
        return reported(self.variants.get(variant, []), self.reports.get(variant, "selected"))


def _applies(plan: dict[str, Any], claim: Claim, dataset: str) -> str:
    """'' when the protocol's runs can judge the claim on the dataset, else why not."""
    spec = plan["datasets"].get(dataset)
    name = plan["name"]
    if claim.test == "cheaper_step":
        return "a step cost is measured once, by the interleaved benchmark at the suite's settings"
    if spec is None:
        return f"the {name} protocol declares no experiment on {dataset}"
    missing = [m for m in (claim.method, claim.baseline) if m and m not in spec["methods"]]
    if missing:
        return f"the {name} experiment on {dataset} trains {', '.join(spec['methods'])}, not {', '.join(missing)}"
    if not spec["run"]:
        return f"not run by this config (robustness.protocols.{dataset}; config/sensitivity.yaml runs it)"
    return ""


def _cell(
    row: pd.Series, protocol: str, choice: str, value: str, judged: dict[str, Any] | None, reason: str = ""
) -> dict[str, Any]:
    base = {
        "id": row["id"],
        "claim": row["claim"],
        "dataset": row["dataset"],
        "protocol": protocol,
        "choice": choice,
        "value": value,
    }
    if judged is None:
        return {**base, "verdict": NOT_APPLICABLE, "note": reason or "the runs lack the claim's method or baseline"}
    return {**base, **{k: judged[k] for k in COLUMNS if k not in base}}


def _protocol_cells(row: pd.Series, plan: dict[str, Any], runs: Runs, judge: Judge) -> list[dict[str, Any]]:
    cells = [_cell(row, FAIR, "", "", row.to_dict())]
    for protocol in plan.get("protocols", []):
        reason = _applies(protocol, judge.claims[row["id"]], row["dataset"])
        judged = None if reason else judge.verdict(row["id"], row["dataset"], runs.of(protocol["name"]))
        cells.append(_cell(row, protocol["name"], "", "", judged, reason))
    return cells + _official_cell(row, plan.get("official", {}), runs, judge)


def _official_cell(row: pd.Series, official: dict[str, dict[str, str]], runs: Runs, judge: Judge) -> list[dict]:
    """The official code's own result on the claim, where its outputs on the dataset are known."""
    outputs = official.get(row["dataset"])
    if not outputs:
        return []
    truths = [r.task_info.get("ground_truth_relation") for r in runs.fair if r.dataset == row["dataset"]]
    truth = next((np.asarray(t, dtype=float) for t in truths if t), None)
    text = official_result(judge.claims[row["id"]], row["dataset"], outputs, truth)
    if not text:
        return []
    base = {"id": row["id"], "claim": row["claim"], "dataset": row["dataset"], "choice": "", "value": ""}
    return [{**base, "protocol": OFFICIAL, "verdict": text.split(" (")[0], "n": 1, "note": text}]


def _sweep_cells(
    row: pd.Series, sweeps: list[dict], protocol_verdict: dict[str, str], runs: Runs, judge: Judge
) -> list[dict[str, Any]]:
    claim = judge.claims[row["id"]]
    cells = []
    for sweep in sweeps:
        touched = [m for m in (claim.method, claim.baseline) if m in sweep["methods"]]
        if sweep["dataset"] != row["dataset"] or not touched or claim.test == "cheaper_step":
            continue
        if protocol_verdict.get(sweep["protocol"], NOT_APPLICABLE) == NOT_APPLICABLE:
            continue  # the protocol it is swept under does not judge this claim
        base = runs.of("" if sweep["protocol"] == FAIR else sweep["protocol"])
        for value in sweep["values"]:
            records = substituted(base, runs.of(value["variant"]), sweep["methods"])
            judged = judge.verdict(row["id"], row["dataset"], records)
            cells.append(_cell(row, sweep["protocol"], sweep["choice"], value["label"], judged))
    return cells


def robustness_table(
    claims: pd.DataFrame,
    claim_list: list[Claim],
    plan: dict[str, Any],
    fair: list[RunRecord],
    variants: dict[str, list[RunRecord]],
    reference: str,
    alpha: float,
) -> pd.DataFrame:
    """One row per (claim row, protocol) and per (claim row, choice, value): the verdict and its estimate, or
    `does not apply` with the reason."""
    judge = Judge({c.id: c for c in claim_list}, reference, alpha)
    runs = Runs(fair, variants, dict(plan.get("variants", {})))
    rows = []
    for _, row in claims.iterrows():
        if row["id"] not in judge.claims:
            continue
        cells = _protocol_cells(row, plan, runs, judge)
        verdicts = {c["protocol"]: c["verdict"] for c in cells}
        rows += cells + _sweep_cells(row, plan.get("sweeps", []), verdicts, runs, judge)
    return pd.DataFrame(rows, columns=COLUMNS)


# --- per claim row: the summary columns of claims.csv ------------------------------------------------------------
def _sensitivity_text(cells: pd.DataFrame, own: dict[str, str]) -> str:
    """'robust to a, b' or 'depends on a (x1 contradicted, x0.1 reproduced); robust to b'."""
    swept = cells[cells.choice != ""]
    if swept.empty:
        return ""
    moved, steady = [], []
    for (protocol, choice), values in swept.groupby(["protocol", "choice"], sort=False):
        name = choice if protocol == FAIR else f"{choice} [{protocol}]"
        shown = [v for v in values.verdict if v != NOT_APPLICABLE]
        if any(v != own.get(protocol) for v in shown):
            per_value = ", ".join(f"{lab}: {v}" for lab, v in zip(values.value, values.verdict, strict=True))
            moved.append(f"{name} ({per_value})")
        else:
            steady.append(name)
    parts = [f"{DEPENDS} " + "; ".join(moved)] if moved else []
    parts += [f"{ROBUST} to " + ", ".join(steady)] if steady else []
    return "; ".join(parts)


def summary_columns(claims: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """claims.csv's robustness columns: `protocols` (the verdict under each protocol, or why it does not apply),
    `sensitivity` (robust / depends on, per choice), `holds_everywhere` (judged in more than the fair runs, and
    the fair verdict under every protocol that applies and every value of every choice) and `settings_tried` (how
    many protocols and choice values judged it beside the fair runs)."""
    protocols, sensitivity, everywhere, tried = [], [], [], []
    for _, row in claims.iterrows():
        cells = table[(table.id == row["id"]) & (table.dataset == row["dataset"])]
        own = cells[cells.choice == ""]
        verdicts = dict(zip(own.protocol, own.verdict, strict=True))
        said = [
            f"{p}: {v}" + (f" ({n})" if v == NOT_APPLICABLE else "")
            for p, v, n in zip(own.protocol, own.verdict, own.note, strict=True)
        ]
        protocols.append(" · ".join(said) if len(said) > 1 else "")
        sensitivity.append(_sensitivity_text(cells, verdicts))
        judged = cells[(cells.verdict != NOT_APPLICABLE) & (cells.protocol != OFFICIAL)]
        everywhere.append(len(judged) > 1 and bool((judged.verdict == row["verdict"]).all()))
        tried.append(len(judged) - 1)
    return claims.assign(
        protocols=protocols, sensitivity=sensitivity, holds_everywhere=everywhere, settings_tried=tried
    )


# --- at a glance ------------------------------------------------------------------------------------------------
def setting_name(protocol: str, choice: str, value: str) -> str:
    """A grid column: the protocol, or `choice=value` (under a protocol other than fair: `protocol: choice=value`)."""
    if not choice:
        return protocol
    return (f"{protocol}: " if protocol != FAIR else "") + f"{choice}={value}"


def robustness_grid(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and dataset, one column per protocol and per choice value (the order of the table):
    the verdict, `does not apply`, or empty where the setting does not touch the claim."""
    if table.empty:
        return pd.DataFrame(columns=["claim", "dataset"])
    filled = table.fillna({"choice": "", "value": ""})
    cells = filled.assign(
        setting=[setting_name(p, c, v) for p, c, v in zip(filled.protocol, filled.choice, filled.value, strict=True)]
    )
    grid = cells.pivot_table(
        index=["claim", "dataset"], columns="setting", values="verdict", aggfunc="first", sort=False
    )
    return grid[list(dict.fromkeys(cells.setting))].fillna("").reset_index()


def protocols_markdown(plan: dict[str, Any]) -> str:
    """claims.md's last section: what each protocol runs where (and which epoch's test metrics it reports), and
    each choice swept with its values; empty without a robustness plan."""
    if not plan.get("protocols") and not plan.get("sweeps"):
        return ""
    reports = {"selected": "the epoch its selection picked", "last": "the last epoch (as the official code prints)"}
    lines = ["", "## Protocols and choices", "", f"- **{FAIR}**: {plan.get('fair_description') or 'the runs'}"]
    for protocol in plan.get("protocols", []):
        lines.append(f"- **{protocol['name']}**: {protocol['description']}")
        for dataset, spec in protocol["datasets"].items():
            ran = "" if spec["run"] else "; not run by this config"
            lines.append(
                f"  - {dataset} ({', '.join(spec['methods'])}; test metrics of {reports[spec['report']]}{ran}): "
                f"{spec['note']}"
            )
    for sweep in plan.get("sweeps", []):
        values = ", ".join(v["label"] for v in sweep["values"])
        under = "" if sweep["protocol"] == FAIR else f", under {sweep['protocol']}"
        lines.append(
            f"- choice **{sweep['choice']}** on {sweep['dataset']} ({sweep['key']}: {values}; "
            f"{', '.join(sweep['methods'])}{under}): {sweep['description']}"
        )
    return "\n".join(lines) + "\n"
