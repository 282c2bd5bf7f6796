rule efficiency_table:
    input:
        records=get_records(),
        benchmark=get_benchmark_table(),
    output:
        efficiency=f"{TABLES}/efficiency.csv",
    params:
        benchmark=lambda wc, input: input.benchmark or "none",
    log:
        "logs/efficiency_table.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench efficiency {input.records:q} --out {output.efficiency:q} --benchmark {params.benchmark:q} "
        "> {log} 2>&1"


rule efficiency_profile:
    input:
        records=get_records(),
    output:
        csv=f"{TABLES}/pipeline_profile.csv",
        md=f"{TABLES}/pipeline_profile.md",
    params:
        cores=get_total_cores(),
    log:
        "logs/efficiency_profile.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench profile {input.records:q} --out {output.csv:q} --cores {params.cores} > {log} 2>&1"


# Interleaved step times and memory of every method on MultiMNIST, the plain PyTorch floor, and step time
# against the number of tasks with each method's growth exponent. It reads no run record (deleting one does
# not rerun it); the training jobs' higher priority makes it start when a core has no training left to take.
rule efficiency_benchmark:
    output:
        step_cost=f"{RESULTS}/benchmarks/step_cost.csv",
        step_rounds=f"{RESULTS}/benchmarks/step_rounds.csv",
        scaling=f"{RESULTS}/benchmarks/scaling.csv",
        growth=f"{RESULTS}/benchmarks/growth.csv",
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
