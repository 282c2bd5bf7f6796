"""The benchmark's measurements themselves: interleaving, the memory count, the growth exponent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mtlbench.bench import Prepared, growth_exponents, interleaved_times, method_memory_mb, run_benchmarks
from mtlbench.record import Process, RunRecord, Timing


def test_rounds_alternate_the_order_of_the_methods():
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("hps", "a", "b")}
    table = interleaved_times(steps, rounds=4, warmup=0)
    assert calls == ["hps", "a", "b", "b", "a", "hps", "hps", "a", "b", "b", "a", "hps"]
    assert set(table.columns) >= {"median_s", "q25_s", "q75_s", "ratio_to_hps"}
    assert float(table.set_index("method").ratio_to_hps["hps"]) == 1.0


def test_method_memory_counts_parameters_gradients_adam_state_and_saved_activations():
    torch.manual_seed(0)
    model = nn.Linear(100, 50)  # 5,050 parameters
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(64, 100)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).pow(2).sum().backward()
        optimizer.step()

    # parameters, gradients, Adam's two moments: 4 x 5,050 floats; Adam's step counters: 2 scalars (4 bytes);
    # saved for backward: the input (64 x 100) and the output (64 x 50, for pow)
    expected = (4 * 5050 * 4 + 2 * 4 + (64 * 100 + 64 * 50) * 4) / 2**20
    assert method_memory_mb(Prepared(step, model, optimizer, [])) == pytest.approx(expected, rel=1e-6)


def test_growth_exponent_recovers_a_power_law():
    t = np.array([2, 5, 10, 20, 40])
    table = pd.concat(
        [
            pd.DataFrame({"method": "lin", "n_tasks": t, "median_s": 0.001 * t}),
            pd.DataFrame({"method": "quad", "n_tasks": t, "median_s": 1e-5 * t**2}),
        ]
    )
    exponents = growth_exponents(table).set_index("method").growth_exponent
    assert exponents["lin"] == pytest.approx(1.0) and exponents["quad"] == pytest.approx(2.0)


def test_the_benchmark_writes_its_tables_and_figure(tmp_path):
    tables = run_benchmarks(
        tmp_path, rounds=3, task_counts=(2, 4), methods=("hps", "srdml"), scaling_methods=("hps", "mgda")
    )
    step = tables["step_cost"].set_index("method")
    assert set(step.index) == {"hps", "srdml", "plain_pytorch_hps"}
    assert step.memory_mb["srdml"] > step.memory_mb["hps"] > 0  # double backprop keeps a second graph
    for name in ("step_cost.csv", "scaling.csv", "growth.csv", "scaling.png"):
        assert (tmp_path / name).stat().st_size > 0


def _record(pid: int, started: float, ended: float, training: float) -> RunRecord:
    timing = Timing(
        process=Process(pid, started, threads=1),
        started_at=started + 2,
        ended_at=ended,
        breakdown={"startup": 2.0, "training": training, "validation": 1.0},
    )
    return RunRecord("d", "m", pid, "ok", timing=timing)


def test_pipeline_profile_by_hand():
    from mtlbench.efficiency import pipeline_profile, profile_line

    # two jobs on 2 cores, 0..10 s and 0..8 s: 20 core-seconds, 4 of start-up, 12 of training, 2 of validation
    records = [_record(1, 0.0, 10.0, 7.0), _record(2, 0.0, 8.0, 5.0)]
    table = pipeline_profile(records, cores=2).set_index("kind")
    assert table.core_seconds["training"] == 12.0 and table.core_seconds["outside training jobs"] == 2.0
    assert table.share_of_core_time["training"] + table.share_of_core_time["validation"] == pytest.approx(0.7)
    assert "70% of the core-time trains and validates" in profile_line(table.reset_index())
    cluster = pipeline_profile(records, cores=0).set_index("kind")  # a cluster: the jobs' own 18 core-seconds
    assert cluster.core_seconds["unaccounted in jobs"] == 0.0
    assert cluster.share_of_core_time["training"] == pytest.approx(12 / 18)
    # issue 26.6: rounded numbers, the constants once in the heading
    from mtlbench.pipeline import profile_markdown

    text = profile_markdown(table.reset_index(), "x")
    assert "Wall time 10 s on 2 core(s), 2 runs" in text
    assert [line.split("|")[1:4] for line in text.splitlines() if line.startswith("| training")] == [
        [" training              ", "           12.0 ", "                60.0% "]
    ]


def test_the_cpu_wins_are_timed_against_what_they_replaced_and_keep_the_numbers(tmp_path):
    """Issue 25.5: each change is timed interleaved with its predecessor in one process, and the same run checks
    that both give the same numbers (here on two rounds: no timing is asserted)."""
    from mtlbench.bench_wins import PAIRS, run_cpu_wins

    table = run_cpu_wins(tmp_path, rounds=2)
    assert list(table.change) == list(PAIRS) and table.same_numbers.all()
    assert (table.rounds == 2).all() and (table[["before_ms", "after_ms"]] > 0).all().all()
    assert (tmp_path / "cpu_wins.csv").exists()


def test_the_cpu_wins_check_would_see_changed_numbers(monkeypatch):
    """The check is not vacuous: an Adam with another learning rate, or a first public layer that differs, is
    reported as changing the numbers."""
    from mtlbench import bench_wins

    _, _, same = bench_wins.adam_pair()
    original = torch.optim.Adam
    monkeypatch.setattr(
        torch.optim,
        "Adam",
        lambda params, lr, foreach: original(params, lr=lr * (2 if foreach else 1), foreach=foreach),
    )
    assert not same()
    monkeypatch.setattr(torch.optim, "Adam", original)

    unskewed = bench_wins.per_task_first_stage

    def skewed(model, x):
        return [o + 1e-3 for o in unskewed(model, x)]

    monkeypatch.setattr(bench_wins, "per_task_first_stage", skewed)
    assert not bench_wins.dsmtl_al_search_pair()[2]()
