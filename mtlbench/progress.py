"""What a person watching the pipeline's terminal sees while it trains (issue 26.1): one line per finished
seed (its selected epoch and headline test metric, and the pipeline's remaining time), and at most one line a
minute per training process while a seed trains; nothing else.

The remaining time comes from a board the workflow's `onstart` writes (`logs/progress/plan.json`: each run to
train, weighted by its measured training time in results/reference, or by the mean of those where the
reference did not run its config) and the runs finished since (`logs/progress/done/`, one file per run, written
by the training processes, so no two processes write one file). The estimate is the wall time elapsed since
the start, scaled by the weight still to train over the weight trained: it follows this machine's speed and
parallelism as they are, not the reference machine's.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mtlbench.errors import MtlbenchError
from mtlbench.record import RunRecord

HEARTBEAT_SECONDS = 60.0  # at most one line a minute per training process while a seed trains


def remaining_seconds(weights: Mapping[str, float | None], done: set[str], elapsed: float) -> float | None:
    """Seconds left: `elapsed` x (weight not yet done) / (weight done); a run without a weight counts the mean
    of the known ones (1 each when none is known). None until a run of the plan is done."""
    known = [w for w in weights.values() if w]
    fill = sum(known) / len(known) if known else 1.0
    weight = {run: w or fill for run, w in weights.items()}
    finished = sum(w for run, w in weight.items() if run in done)
    if finished <= 0:
        return None
    return elapsed * sum(w for run, w in weight.items() if run not in done) / finished


def run_key(out: Path | str) -> str:
    """A run's name on the board: its run directory as the workflow writes it."""
    return os.path.normpath(str(out))


@dataclass
class Board:
    directory: Path

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    def write_plan(self, weights: Mapping[str, float | None], started: float | None = None) -> None:
        """A new plan (the workflow's onstart): the runs to train and their weights; earlier runs' marks go."""
        done = self.directory / "done"
        done.mkdir(parents=True, exist_ok=True)
        for mark in done.glob("*.done"):
            mark.unlink()
        plan = {"started": time.time() if started is None else started, "runs": dict(weights)}
        self.plan_path.write_text(json.dumps(plan, indent=1))

    def mark_done(self, out: Path | str) -> None:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", run_key(out)) + ".done"
        (self.directory / "done").mkdir(parents=True, exist_ok=True)
        (self.directory / "done" / name).write_text(run_key(out))

    def state(self) -> tuple[dict[str, float | None], set[str], float] | None:
        """(weights, runs done, start time), or None without a plan."""
        try:
            plan = json.loads(self.plan_path.read_text())
        except (OSError, ValueError):
            return None
        done = {mark.read_text() for mark in (self.directory / "done").glob("*.done")}
        return plan["runs"], done & set(plan["runs"]), float(plan["started"])

    def summary(self, now: float) -> str:
        """'12 of 40 runs done, about 9 min left' (or '' without a plan)."""
        state = self.state()
        if state is None:
            return ""
        weights, done, started = state
        line = f"{len(done)} of {len(weights)} runs done"
        if len(done) == len(weights):
            return line + " (training finished)"
        left = remaining_seconds(weights, done, now - started)
        return line if left is None else line + f", {_duration(left)} left"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return "under 2 min"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def headline_metric(record: RunRecord) -> str:
    """The first test metric of every task ('acc: left 0.912, right 0.897'), or its mean over many tasks."""
    tasks = record.metrics.test
    if not tasks:
        return ""
    metric = next(iter(next(iter(tasks.values()))))
    values = {task: ms[metric] for task, ms in tasks.items() if metric in ms}
    if len(values) > 3:
        return f"test {metric}: mean over {len(values)} tasks {sum(values.values()) / len(values):.4g}"
    return f"test {metric}: " + ", ".join(f"{task} {v:.4g}" for task, v in values.items())


@dataclass
class StatusLines:
    """The lines one training process writes to the pipeline's terminal (`mtlbench train --status-fd`)."""

    stream: IO[str]
    board: Board | None = None
    clock: Callable[[], float] = time.time
    last_line: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_line = self.clock()  # the job's start: its first minute is the pipeline's own line

    def _say(self, text: str) -> None:
        now = self.clock()
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        self.stream.write(f"[{stamp}] {text}\n")
        self.stream.flush()
        self.last_line = now

    def epoch_ended(self, name: str, epoch: int, total: int) -> None:
        """A line when a minute has passed since this process's last one (epochs count from 1)."""
        if self.clock() - self.last_line >= HEARTBEAT_SECONDS and epoch < total:
            self._say(f"{name}: epoch {epoch} of {total}")

    def seed_finished(self, name: str, out: Path, record: RunRecord) -> None:
        if self.board is not None:
            self.board.mark_done(out)
        epoch = record.selected_epoch
        chosen = "" if epoch is None else f", selected epoch {epoch + 1} of {record.epochs_planned}"
        parts = [f"{name}: {record.status}{chosen}", headline_metric(record) if record.ok else ""]
        if self.board is not None:
            parts.append(self.board.summary(self.clock()))
        self._say("; ".join(p for p in parts if p))


def open_status_stream(fd: int) -> IO[str]:
    """The file descriptor the pipeline passes for status lines (its terminal), as a line-buffered text stream."""
    try:
        os.fstat(fd)
    except OSError:
        raise MtlbenchError(f"--status-fd {fd} is not an open file descriptor") from None
    return os.fdopen(fd, "w", buffering=1, closefd=False)
