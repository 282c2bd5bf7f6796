"""The pipeline's terminal while it trains (issue 26.1): status lines and their remaining-time estimate."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from mtlbench.errors import MtlbenchError
from mtlbench.progress import HEARTBEAT_SECONDS, Board, StatusLines, open_status_stream, remaining_seconds
from mtlbench.record import Metrics, RunRecord


def test_remaining_time_scales_the_elapsed_time_by_the_weight_left():
    # weights 10, 30, 60 (s at the reference); the 10 and 30 ones done in 80 s of wall time: 2 s per unit, 60 left
    weights = {"a": 10.0, "b": 30.0, "c": 60.0}
    assert remaining_seconds(weights, {"a", "b"}, 80.0) == pytest.approx(120.0)
    # a run the reference did not measure weighs the mean of the known ones: (10 + 30) / 2 = 20
    assert remaining_seconds({"a": 10.0, "b": 30.0, "new": None}, {"a"}, 10.0) == pytest.approx(50.0)
    # nothing measured: runs count alike; nothing done yet: no estimate
    assert remaining_seconds({"a": None, "b": None, "c": None}, {"a"}, 30.0) == pytest.approx(60.0)
    assert remaining_seconds(weights, set(), 80.0) is None


def test_the_board_counts_runs_finished_since_the_plan(tmp_path):
    board = Board(tmp_path / "progress")
    board.write_plan({"results/runs/d/m/seed0": 10.0, "results/runs/d/m/seed1": 10.0}, started=1000.0)
    board.mark_done("results/runs/d/m/seed0")
    board.mark_done("results/runs/d/other/seed0")  # not in this plan (its record already existed): not counted
    assert board.summary(now=1030.0) == "1 of 2 runs done, under 2 min left"
    assert board.summary(now=1000.0 + 3600) == "1 of 2 runs done, about 60 min left"
    board.write_plan({"results/runs/d/m/seed0": 10.0}, started=2000.0)  # a new pipeline run starts over
    assert board.summary(now=2001.0) == "0 of 1 runs done"
    assert Board(tmp_path / "none").summary(now=0.0) == ""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_training_process_speaks_at_most_once_a_minute_between_seeds():
    stream, clock = io.StringIO(), Clock()
    lines = StatusLines(stream, clock=clock)
    for epoch in range(1, 11):  # 10 epochs of 25 s from t=0: a line at the first epoch end a minute after the last
        clock.now += 25.0
        lines.epoch_ended("d/m seed 0", epoch, 10)
    said = stream.getvalue().splitlines()
    assert HEARTBEAT_SECONDS == 60.0
    # 75 s, 150 s, 225 s; the last epoch (250 s) ends the seed, which has its own line
    assert [line.split("] ")[1] for line in said] == [f"d/m seed 0: epoch {e} of 10" for e in (3, 6, 9)]


def test_a_finished_seed_names_its_epoch_metric_and_the_time_left(tmp_path):
    record = RunRecord(
        dataset="multimnist",
        method="hps",
        seed=0,
        status="ok",
        selected_epoch=4,
        config={"train": {"epochs": 15}},
        metrics=Metrics(test={"left": {"accuracy": 0.9123}, "right": {"accuracy": 0.8}}),
    )
    board = Board(tmp_path)
    board.write_plan({"out/seed0": 1.0, "out/seed1": 3.0}, started=0.0)
    stream, clock = io.StringIO(), Clock()
    clock.now = 20.0
    StatusLines(stream, board, clock).seed_finished("mm/hps seed 0", "x/../out/seed0", record)
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(
        "mm/hps seed 0: ok, selected epoch 5 of 15; test accuracy: left 0.9123, right 0.8; "
        "1 of 2 runs done, under 2 min left"  # 1 s of weight in 20 s: 3 s of weight left take 60 s
    )


def test_train_writes_its_status_lines_to_the_descriptor_it_is_given(tmp_path):
    read, write = os.pipe()
    args = ["train", "--dataset", "synthetic_relations", "--method", "hps", "--seed", "0", "1", "--no-tracking"]
    result = subprocess.run(
        [sys.executable, "-m", "mtlbench", *args, "--out", "r/seed{seed}", "--set", "train.epochs=3"]
        + ["--status-fd", str(write), "--progress-board", "board"],
        pass_fds=(write,),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    os.close(write)
    with os.fdopen(read) as status:
        lines = status.read().splitlines()
    assert result.returncode == 0, result.stderr
    assert [line.split("] ")[1].split(":")[0] for line in lines] == [
        "synthetic_relations/hps seed 0",
        "synthetic_relations/hps seed 1",
    ]
    assert all("selected epoch" in line and "test mse" in line for line in lines)
    assert sorted(p.read_text() for p in (tmp_path / "board" / "done").iterdir()) == ["r/seed0", "r/seed1"]
    assert "selected epoch" not in result.stderr  # the status lines go to the descriptor only


def test_a_closed_status_descriptor_is_one_message():
    with pytest.raises(MtlbenchError, match="--status-fd 97 is not an open file descriptor"):
        open_status_stream(97)
