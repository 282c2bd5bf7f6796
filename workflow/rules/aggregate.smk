rule aggregate_tables:
    input:
        records=get_records(),
    output:
        metrics=f"{TABLES}/metrics.csv",
        delta_m=f"{TABLES}/delta_m.csv",
        summary_csv=f"{TABLES}/summary.csv",
        summary_md=report(f"{TABLES}/summary.md", caption="../report/summary.rst", category="Tables"),
        summary_tex=f"{TABLES}/summary.tex",
        delta_m_metrics=f"{TABLES}/delta_m_metrics.csv",
        task_averaged_csv=f"{TABLES}/task_averaged.csv",
        task_averaged_md=report(f"{TABLES}/task_averaged.md", caption="../report/task_averaged.rst",
                                category="Tables"),
    params:
        out=lambda wc, output: os.path.dirname(output.metrics),
        reference=config["statistics"]["reference"],
    log:
        "logs/aggregate_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench aggregate {input.records:q} --out {params.out:q} --reference {params.reference} > {log} 2>&1"
