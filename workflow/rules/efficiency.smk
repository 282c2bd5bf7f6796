# Interleaved step times and memory of every method on MultiMNIST, the plain PyTorch floor, and step time
# against the number of tasks with each method's growth exponent, and the training core's CPU wins timed against
# what they replaced (mtlbench/bench_wins.py). It reads no run record (deleting one does
# not rerun it); the training jobs' higher priority makes it start when a core has no training left to take.
rule efficiency_benchmark:
    output:
        step_cost=f"{RESULTS}/benchmarks/step_cost.csv",
        step_rounds=f"{RESULTS}/benchmarks/step_rounds.csv",
        scaling=f"{RESULTS}/benchmarks/scaling.csv",
        growth=f"{RESULTS}/benchmarks/growth.csv",
        cpu_wins=f"{RESULTS}/benchmarks/cpu_wins.csv",
        figure=report(f"{RESULTS}/benchmarks/scaling.png", caption="../report/scaling.rst", category="6 Efficiency"),
    params:
        out=lambda wc, output: os.path.dirname(output.step_cost),
        rounds=config["efficiency"]["rounds"],
    log:
        "logs/efficiency_benchmark.log",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} mtlbench bench --out {params.out:q} "
        "--rounds {params.rounds} > {log} 2>&1"
