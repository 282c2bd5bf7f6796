"""Print the benchmark means as ratios to hard sharing at the end of a benchmark run."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not getattr(session, "benchmarks", None):
        return
    means = {}
    for bench in session.benchmarks:
        method = bench.name.split("[", 1)[-1].rstrip("]")
        means[method] = bench.stats.median if hasattr(bench.stats, "median") else bench.stats["median"]
    base = means.get("hps")
    if not base:
        return
    terminalreporter.write_sep("-", "median step time as a ratio to hard sharing (hps)")
    for method, value in sorted(means.items(), key=lambda kv: kv[1]):
        terminalreporter.write_line(f"{method:<14} {value * 1e3:8.2f} ms   x{value / base:5.2f}")
