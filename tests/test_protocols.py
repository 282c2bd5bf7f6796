"""Issue 23: protocols and reconstruction choices as data, every claim under each, and the published protocol
against the official code's outputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mtlbench.aggregate import tidy_metrics, with_delta_m
from mtlbench.claims import Claim, evaluate_claims
from mtlbench.config import resolve_config
from mtlbench.errors import MtlbenchError
from mtlbench.protocols import load_robustness, plan
from mtlbench.robustness import robustness_grid, robustness_table, summary_columns
from tests.conftest import ROOT, scored_records

PROTOCOLS = ROOT / "config" / "protocols.yaml"
OFFICIAL = ROOT / "official"


def _plan(config: dict, datasets=("synthetic_relations", "multimnist"), methods=("stl", "hps", "srdml", "mgda")):
    return plan(load_robustness(PROTOCOLS), config, list(datasets), list(methods), lambda d, m: {})


# --- protocols resolve to what they declare ----------------------------------------------------------------------
def test_a_protocol_resolves_to_the_settings_it_declares():
    declared = yaml.safe_load(PROTOCOLS.read_text())["protocols"]["published"]["datasets"]["synthetic_relations"]
    made = _plan({"protocols": {"synthetic_relations": ["published"]}})
    runs = {v.method: v for v in made.variants}
    assert set(runs) == {"stl", "srdml"}  # the protocol's methods that the config trains; hps and mgda are not in it
    for variant in runs.values():
        assert variant.name == "published" and variant.report == declared["report"] == "last"
        cfg = resolve_config("synthetic_relations", variant.method, 0, variant.settings)
        for key, value in declared["settings"].items():
            section, _, name = key.partition(".")
            assert cfg[section][name] == value
    (protocol,) = made.to_json()["protocols"]
    assert protocol["datasets"]["synthetic_relations"]["run"] and not protocol["datasets"]["multimnist"]["run"]


def test_a_choice_scales_each_runs_own_value_and_a_value_equal_to_the_run_is_the_run():
    made = _plan({"sensitivity": {"synthetic_relations": ["srdml_lambda", "budget"]}})
    sweeps = {s.choice: s for s in made.sweeps}
    own = resolve_config("synthetic_relations", "srdml", 0)
    lam = {v.name: v.settings["rule.lam"] for v in made.variants if v.method == "srdml" and "rule.lam" in v.settings}
    assert lam == pytest.approx(
        {"srdml_lambda=x0.1": own["rule"]["lam"] * 0.1, "srdml_lambda=x0.01": own["rule"]["lam"] * 0.01}
    )
    assert sweeps["srdml_lambda"].values[0] == {"label": "x1", "variant": ""}  # x1 is the fair run: not trained again
    assert sweeps["srdml_lambda"].methods == ["srdml"]  # srdml_pcgrad is not trained by this config
    epochs = {v.method: v.settings["train.epochs"] for v in made.variants if v.name == "budget=x2"}
    assert epochs == {
        m: 2 * resolve_config("synthetic_relations", m, 0)["train"]["epochs"] for m in ("stl", "hps", "srdml", "mgda")
    }
    assert all(isinstance(e, int) for e in epochs.values())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "protocols.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_unknown_key_is_refused_with_one_message(tmp_path):
    data = yaml.safe_load(PROTOCOLS.read_text())
    data["protocols"]["published"]["datasets"]["synthetic_relations"]["setings"] = {"train.lr": 1}
    data["choices"]["budget"]["factor"] = [1, 2]
    with pytest.raises(MtlbenchError) as caught:
        load_robustness(_write(tmp_path, data))
    message = str(caught.value)
    assert "2 problem(s)" in message and "'setings'" in message and "'factor'" in message
    assert "protocols.published.datasets.synthetic_relations" in message and "choices.budget" in message


def test_an_unknown_setting_or_name_is_refused_before_any_run(tmp_path):
    data = yaml.safe_load(PROTOCOLS.read_text())
    data["protocols"]["published"]["datasets"]["synthetic_relations"]["settings"]["rule.lamda"] = 1
    file = load_robustness(_write(tmp_path, data))
    with pytest.raises(MtlbenchError, match="lamda"):
        plan(
            file,
            {"protocols": {"synthetic_relations": ["published"]}},
            ["synthetic_relations"],
            ["srdml"],
            lambda d, m: {},
        )
    with pytest.raises(MtlbenchError, match="'lambda_typo'.*declared: budget"):
        _plan({"sensitivity": {"synthetic_relations": ["lambda_typo"]}})
    with pytest.raises(MtlbenchError, match="no dataset is named 'synthetic'"):
        _plan({"protocols": {"synthetic": ["published"]}})


def test_the_protocols_file_is_data_never_code(tmp_path):
    path = tmp_path / "protocols.yaml"
    path.write_text("protocols: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(MtlbenchError, match="not valid YAML"):
        load_robustness(path)


# --- verdicts per value: depends on / robust (hand-built records) ------------------------------------------------
CLAIM = Claim(
    id="a_beats_b", claim="a beats b", source="s", test="superior", method="a", baseline="b", metric="t1.score"
)


def _table(values: dict[str, float]):
    """Fair: a is 0.2 better than b. Each choice value moves a by its shift."""
    fair = scored_records({"a": 0.2, "b": 0.0})
    variants = {
        name: [replace(r, config={**r.config, "variant": name}) for r in scored_records({"a": shift})]
        for name, shift in values.items()
    }
    claims = evaluate_claims([CLAIM], with_delta_m(tidy_metrics(fair), "b"), fair, 0.05)
    sweeps = [
        {
            "choice": "moves",
            "protocol": "fair",
            "dataset": "d",
            "methods": ["a"],
            "values": [{"label": "off", "variant": ""}, {"label": "on", "variant": "moves=on"}],
        },
        {
            "choice": "steady",
            "protocol": "fair",
            "dataset": "d",
            "methods": ["a"],
            "values": [{"label": "1", "variant": ""}, {"label": "2", "variant": "steady=2"}],
        },
    ]
    table = robustness_table(claims, [CLAIM], {"protocols": [], "sweeps": sweeps}, fair, variants, "b", 0.05)
    return claims, table


def test_a_sweep_whose_verdict_changes_depends_on_its_choice_and_one_that_does_not_is_robust():
    claims, table = _table({"moves=on": -0.2, "steady=2": 0.25})
    verdicts = {
        (c, v): verdict
        for c, v, verdict in zip(table.choice.fillna(""), table.value.fillna(""), table.verdict, strict=True)
    }
    assert verdicts == {
        ("", ""): "reproduced",
        ("moves", "off"): "reproduced",
        ("moves", "on"): "contradicted",
        ("steady", "1"): "reproduced",
        ("steady", "2"): "reproduced",
    }
    (row,) = summary_columns(claims, table).to_dict("records")
    assert row["sensitivity"] == "depends on moves (off: reproduced, on: contradicted); robust to steady"
    assert row["holds_everywhere"] is False and row["settings_tried"] == 4
    grid = robustness_grid(table)
    assert list(grid.columns) == ["claim", "dataset", "fair", "moves=off", "moves=on", "steady=1", "steady=2"]


def test_a_claim_that_no_value_moves_holds_everywhere():
    claims, table = _table({"moves=on": 0.3, "steady=2": 0.25})
    (row,) = summary_columns(claims, table).to_dict("records")
    assert row["sensitivity"] == "robust to moves, steady" and row["holds_everywhere"] is True


def test_a_protocol_that_does_not_train_the_claims_methods_says_why():
    fair = scored_records({"a": 0.2, "b": 0.0})
    claims = evaluate_claims([CLAIM], with_delta_m(tidy_metrics(fair), "b"), fair, 0.05)
    protocols = [
        {"name": "published", "datasets": {"d": {"methods": ["a", "c"], "run": True, "report": "selected"}}},
        {"name": "other", "datasets": {}},
    ]
    table = robustness_table(claims, [CLAIM], {"protocols": protocols, "sweeps": []}, fair, {}, "b", 0.05)
    notes = dict(zip(table.protocol, table.note.fillna(""), strict=True))
    assert table.set_index("protocol").verdict.to_dict() == {
        "fair": "reproduced",
        "published": "does not apply",
        "other": "does not apply",
    }
    assert notes["published"] == "the published experiment on d trains a, c, not b"
    assert notes["other"] == "the other protocol declares no experiment on d"
    (row,) = summary_columns(claims, table).to_dict("records")
    assert "published: does not apply (the published experiment on d trains a, c, not b)" in row["protocols"]


# --- the published protocol against the official code -------------------------------------------------------------
def _official(name: str) -> dict:
    return json.loads((OFFICIAL / name).read_text())


@pytest.fixture(scope="module")
def published_runs(tmp_path_factory):
    """SRDML and STL on the synthetic experiment under the published protocol, 4 seeds (seconds each)."""
    from mtlbench.training import train

    made = plan(
        load_robustness(PROTOCOLS),
        {"protocols": {"synthetic_relations": ["published"]}},
        ["synthetic_relations"],
        ["stl", "srdml"],
        lambda d, m: {},
    )
    out, records = tmp_path_factory.mktemp("published"), {}
    for variant in made.variants:
        settings = {**variant.settings, "tracking.enabled": False}
        records[variant.method] = [
            train(
                resolve_config("synthetic_relations", variant.method, seed, settings), out / f"{variant.method}{seed}"
            )
            for seed in range(4)
        ]
    return records


def test_the_published_srdml_run_learns_the_official_relation_pattern(published_runs):
    """official/README.md: with the per-sample loss the learned relations match the paper's heat-map, twins about
    1.7, the same group 1.0-1.6, across groups about 0."""
    truth = np.array(published_runs["srdml"][0].task_info["ground_truth_relation"])
    i, j = np.triu_indices(len(truth), 1)
    means = {
        level: np.mean(
            [np.array(r.method_state["relation"])[i, j][truth[i, j] == level].mean() for r in published_runs["srdml"]]
        )
        for level in (2.0, 1.0, 0.0)
    }
    assert means[2.0] > means[1.0] > means[0.0]
    assert 1.3 < means[2.0] < 2.1 and 0.9 < means[1.0] < 1.7 and means[0.0] < 0.1


def test_the_published_srdml_run_is_worse_than_stl_per_task_as_the_official_code(published_runs):
    """official/README.md: with the per-sample loss SRDML is worse than STL on 12 of 12 tasks (20 seeds). The
    protocol reports the last iteration's test error, as the official script prints it."""

    def mean_rmse(method):
        return pd.DataFrame(
            [{t: np.sqrt(m["mse"]) for t, m in r.metrics.test_last.items()} for r in published_runs[method]]
        ).mean()

    worse = (mean_rmse("srdml") > mean_rmse("stl")).sum()
    assert worse >= 11, worse
    assert published_runs["srdml"][0].epochs_completed == 150


def test_the_official_codes_own_result_is_read_off_its_outputs():
    """official/README.md: the script as published, seed 111, is better than STL on 4 of 12 tasks by test RMSE."""
    from mtlbench.claims import load_claims
    from mtlbench.official import official_result

    claims = {c.id: c for c in load_claims(ROOT / "config" / "claims.yaml")}
    outputs = load_robustness(PROTOCOLS).official["synthetic_relations"]
    said = official_result(claims["srdml_beats_stl_per_task"], "synthetic_relations", outputs, None)
    stl, srdml = _official("srdml_synthetic_seed111_stl.json"), _official("srdml_synthetic_seed111_srdml.json")
    better = int((np.array(srdml["rmse_task"][-1]) < np.array(stl["rmse_task"][-1])).sum())
    assert better == 4 and said.startswith("not reproduced (official code") and "4 of 12 tasks by RMSE" in said
    assert official_result(claims["srdml_beats_hps"], "synthetic_relations", outputs, None) == ""  # no official hps


# --- the pipeline -------------------------------------------------------------------------------------------------
ROBUST_CONFIG = {
    "datasets": ["synthetic_relations"],
    "methods": ["stl", "hps", "srdml"],
    "seeds": [0, 1, 2],
    "overrides": {"common": {"train.epochs": 4}},
    "efficiency": {"benchmark": False},
    "robustness": {
        "file": str(PROTOCOLS),
        "protocols": {"synthetic_relations": ["published"]},
        "sensitivity": {"synthetic_relations": ["srdml_lambda", "budget", "synthetic_loss"]},
    },
}


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    from tests.test_pipeline import snakemake

    workdir = tmp_path_factory.mktemp("robust")
    result = snakemake(workdir, config=ROBUST_CONFIG)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_the_pipeline_gives_every_claim_row_a_verdict_per_protocol_or_the_reason(robust_run):
    tables = robust_run / "results" / "tables"
    claims, table = pd.read_csv(tables / "claims.csv"), pd.read_csv(tables / "robustness.csv")
    for row in claims.itertuples():
        said = dict(p.split(": ", 1) for p in row.protocols.split(" · "))
        assert set(said) >= {"fair", "published"}, row.protocols
        assert said["fair"] == row.verdict
        assert said["published"].split(" (")[0] in {"reproduced", "not reproduced", "contradicted", "inconclusive"} or (
            said["published"].startswith("does not apply (") and said["published"].endswith(")")
        )
    relations = table[(table.id == "srdml_relations") & (table.choice.isna())].set_index("protocol")
    assert relations.loc["published", "verdict"] != "does not apply"
    assert relations.loc["official code", "verdict"] == "reproduced"  # the official seed-111 run's weights
    swept = table[(table.id == "srdml_beats_stl_per_task") & (table.choice == "srdml_lambda")]
    assert list(swept.value) == ["x1", "x0.1", "x0.01"]
    loss = table[(table.id == "srdml_beats_stl_per_task") & (table.choice == "synthetic_loss")]
    assert set(loss.protocol) == {"published"} and list(loss.value) == ["per_sample", "broadcast"]
    # the variants' runs are their own records, kept apart from the config's
    from mtlbench.record import RunRecord

    lam = RunRecord.read(robust_run / "results/variants/srdml_lambda=x0.1/synthetic_relations/srdml/seed0/record.json")
    own = RunRecord.read(robust_run / "results/runs/synthetic_relations/srdml/seed0/record.json")
    assert lam.variant == "srdml_lambda=x0.1" and own.variant == ""
    assert lam.config["rule"]["lam"] == pytest.approx(own.config["rule"]["lam"] / 10)
    assert set(pd.read_csv(tables / "metrics.csv").method) == {"stl", "hps", "srdml"}  # no variant in the tables
    page = (robust_run / "results" / "report" / "claims.html").read_text()
    assert "Under every protocol and setting" in page and 'class="contradicted"' in page
    tracked = json.loads((robust_run / "results" / "mlflow_runs.json").read_text())
    assert any("variants/srdml_lambda=x0.1" in path for path in tracked)  # every run is in MLflow


# --- across machines ----------------------------------------------------------------------------------------------
def _on_machine(records, cpu: str, shift: float = 0.0, method: str = "a"):
    """The records as another machine wrote them: its CPU named, `method`'s scores moved by `shift`."""
    from mtlbench.record import Metrics

    def moved(r):
        if r.method != method:
            return r.metrics
        test = {t: {k: v + shift for k, v in m.items()} for t, m in r.metrics.test.items()}
        return Metrics(val=r.metrics.val, test=test, test_last=r.metrics.test_last)

    return [replace(r, host={"cpu": cpu, "cpu_capability": "AVX512", "threads": 1}, metrics=moved(r)) for r in records]


def test_a_verdict_the_other_machine_flips_did_not_hold_on_both_and_rests_within_the_machines_shift(tmp_path):
    from mtlbench.machines import compare_machines

    first = scored_records({"a": 0.06, "b": 0.0}, seeds=6)
    flipped = compare_machines(first, _on_machine(first, "Intel Xeon", -0.3), [CLAIM], tmp_path, "b", 0.05)
    (row,) = flipped.to_dict("records")
    assert row["verdict_a"] == "reproduced" and row["verdict_b"] == "contradicted" and not row["held_on_both"]
    # a's scores fell by 0.3 on b's of about 0.5: the estimate (% of b's value) moved by about 60
    assert row["machine_shift"] == pytest.approx(60, rel=0.15) and row["within_machine_shift"]
    assert row["machine_b"] == "Intel Xeon (AVX512, 1 thread)"
    runs = pd.read_csv(tmp_path / "machine_runs.csv")
    moved = runs[runs.method == "a"]
    assert np.allclose(moved.value_b - moved.value_a, -0.3) and (runs[runs.method == "b"].difference_pct == 0).all()
    (steady,) = compare_machines(first, _on_machine(first, "Intel Xeon", 0.001), [CLAIM], tmp_path, "b", 0.05).to_dict(
        "records"
    )
    assert steady["held_on_both"] and not steady["within_machine_shift"]


def test_the_same_runs_on_the_same_machine_give_the_same_numbers_and_verdicts(tmp_path):
    """One CPU kind: a rerun is bit-identical, so every difference is 0 and every verdict holds on both."""
    from tests.conftest import run_cli

    for folder in ("first", "second"):
        for method in ("stl", "hps"):
            out = f"{folder}/runs/synthetic_relations/{method}/seed{{seed}}"
            result = run_cli(
                "train",
                "--dataset",
                "synthetic_relations",
                "--method",
                method,
                "--seed",
                "0",
                "1",
                "2",
                "--epochs",
                "20",
                "--no-tracking",
                "--out",
                out,
                cwd=tmp_path,
            )
            assert result.returncode == 0, result.stderr
    claims = tmp_path / "claims.yaml"
    claims.write_text(
        yaml.safe_dump(
            [
                {
                    "id": "neg",
                    "claim": "negative sharing",
                    "source": "s",
                    "test": "negative_sharing",
                    "method": "hps",
                    "baseline": "stl",
                }
            ]
        )
    )
    result = run_cli("machines", "first", "second", "--claims", str(claims), "--out", "cmp", cwd=tmp_path)
    assert result.returncode == 0 and "1 of 1 claim rows held on both machines" in result.stdout, result.stderr
    runs = pd.read_csv(tmp_path / "cmp" / "machine_runs.csv")
    assert len(runs) == 2 * 3 * 12 * 2 and (runs.difference_pct == 0).all()
