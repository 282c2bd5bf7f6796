"""The run record: one typed, versioned layout, written and read by mtlbench.record alone."""

from __future__ import annotations

import json

import pytest

from mtlbench.errors import MtlbenchError
from mtlbench.record import RECORD_VERSION, Metrics, Params, Process, RunRecord, Schedule, Timing


def _record() -> RunRecord:
    return RunRecord(
        "multimnist",
        "srdml",
        3,
        "ok",
        config={"train": {"epochs": 4}},
        metrics=Metrics(val={"left": {"accuracy": 0.5}}, test={"left": {"accuracy": 0.25}}),
        directions={"left": {"accuracy": True}},
        timing=Timing(train_seconds=1.5, epoch_seconds=[0.5, 1.0], process=Process(7, 100.0, threads=2)),
        params=Params(total=10, inference=8),
        method_state={"relation": [[0.0, 1.0], [1.0, 0.0]], "relation_tasks": ["left", "right"]},
        history=[{"epoch": 0, "train_loss": [1.0], "val": {"left": {"accuracy": 0.5}}, "val_loss": [0.9]}],
        schedule=Schedule(6, 2, {"warm-up": 2, "regularised": 4}),
    )


def test_a_written_record_reads_back_equal_with_its_nested_parts_typed(tmp_path):
    record = _record()
    text = record.write(tmp_path / "record.json")
    assert (tmp_path / "record.json").read_text() == text
    back = RunRecord.read(tmp_path / "record.json")
    assert back == record
    assert isinstance(back.timing.process, Process) and back.timing.process.threads == 2
    assert isinstance(back.schedule, Schedule) and back.epochs_planned == 6
    assert json.loads(text)["record_version"] == RECORD_VERSION == next(iter(json.loads(text).values()))


def test_epochs_planned_falls_back_to_the_budget_without_a_schedule():
    assert RunRecord("d", "m", 0, "ok", config={"train": {"epochs": 9}}).epochs_planned == 9


def test_a_record_from_before_the_version_field_reads_as_the_first_layout(tmp_path):
    data = _record().to_json()
    del data["record_version"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert RunRecord.read(tmp_path / "old.json") == _record()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"record_version": RECORD_VERSION + 1}, "newer than this mtlbench reads"),
        ({"surprise": 1}, "unknown field(s) surprise"),
        ({"timing": {"train_seconds": 1.0, "wall": 2.0}}, "unknown field(s) wall in Timing"),
        ({"params": [1, 2]}, "RunRecord.params is list, not an object"),
        ({"metrics": {"test": {"left": 0.5}}}, "Metrics.test is dict, not dict[str, dict[str, float]]"),
        ({"directions": []}, "RunRecord.directions is list"),
        ({"seed": "zero"}, "RunRecord.seed is str, not int"),
        ({"status": 3}, "RunRecord.status is int, not str"),
        ({"record_version": "1"}, "record_version '1', not a version number"),
        ({"record_version": 0}, "record_version 0, not a version number"),
        ({"timing": None}, "RunRecord.timing is NoneType"),
    ],
)
def test_a_record_this_version_cannot_read_is_one_error_naming_the_file(tmp_path, change, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**_record().to_json(), **change}))
    with pytest.raises(MtlbenchError) as err:
        RunRecord.read(path)
    assert message in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"dataset": "d", "method": "m"}'])
def test_what_is_not_a_record_is_one_error(tmp_path, text):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(MtlbenchError, match="delete it and rerun"):
        RunRecord.read(path)


def test_split_names_are_checked():
    assert _record().metrics.split("test") == {"left": {"accuracy": 0.25}}
    with pytest.raises(KeyError, match="no split 'train'"):
        _record().metrics.split("train")


def _ok_record(test_metrics, directions):
    return {
        "dataset": "d",
        "method": "m",
        "seed": 0,
        "status": "ok",
        "metrics": {"val": {}, "test": test_metrics, "test_last": {}},
        "directions": directions,
    }


@pytest.mark.parametrize(
    ("metrics", "directions", "message"),
    [
        ({"t": {"acc": float("nan")}}, {"t": {"acc": True}}, "non-finite metric test.t.acc = nan"),
        ({"t": {"mse": float("inf")}}, {"t": {"mse": False}}, "non-finite metric test.t.mse = inf"),
        ({"t": {"acc": 0.9}}, {"t": {}}, "metric test.t.acc has no direction"),
    ],
)
def test_metrics_that_cannot_be_aggregated_are_refused_by_name(tmp_path, metrics, directions, message):
    """Issue 26.7: a NaN metric under status ok was aggregated silently and changed other seeds' Delta_m."""
    path = tmp_path / "record.json"
    path.write_text(json.dumps(_ok_record(metrics, directions)))
    with pytest.raises(MtlbenchError, match=message):
        RunRecord.read(path)


def test_an_undefined_auc_is_a_finished_runs_right_and_a_huge_or_deep_file_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(_ok_record({"t": {"auc": float("nan")}}, {"t": {"auc": True}})))
    assert RunRecord.read(path).ok  # one class in the split: AUC undefined, left out of Delta_m
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MtlbenchError, match="nested too deeply|not a readable run record"):
        RunRecord.read(path)
    import mtlbench.record

    monkeypatch.setattr(mtlbench.record, "MAX_RECORD_BYTES", 1000)
    path.write_text(json.dumps(_ok_record({"t": {"acc": 0.5}}, {"t": {"acc": True}})) + " " * 2000)
    with pytest.raises(MtlbenchError, match="more than a run record can be"):
        RunRecord.read(path)
