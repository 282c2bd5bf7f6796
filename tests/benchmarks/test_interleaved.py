"""The benchmark suite (`pytest tests/benchmarks --benchmark-only`): the interleaved step-time, memory and
task-scaling benchmark of `mtlbench bench`, printed as ratios to hard sharing."""

from __future__ import annotations

from mtlbench.bench import run_benchmarks


def test_interleaved_benchmark(benchmark, tmp_path, capsys):
    tables = benchmark.pedantic(run_benchmarks, args=(tmp_path,), rounds=1, iterations=1)
    with capsys.disabled():
        print("\n" + tables["step_cost"].round(4).to_string(index=False))
        print(tables["growth"].round(2).to_string(index=False))


def test_cpu_wins(benchmark, tmp_path, capsys):
    from mtlbench.bench_wins import run_cpu_wins

    table = benchmark.pedantic(run_cpu_wins, args=(tmp_path,), rounds=1, iterations=1)
    with capsys.disabled():
        print("\n" + table.round(3).to_string(index=False))
