rule efficiency_table:
    input:
        records=get_records(),
    output:
        efficiency=report(f"{TABLES}/efficiency.csv", caption="../report/efficiency.rst", category="Efficiency"),
    params:
        benchmark=config["efficiency"]["benchmark_json"],
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
        md=report(f"{TABLES}/pipeline_profile.md", caption="../report/pipeline_profile.rst", category="Efficiency"),
    params:
        cores=workflow.cores,
    log:
        "logs/efficiency_profile.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench profile {input.records:q} --out {output.csv:q} --cores {params.cores} > {log} 2>&1"
