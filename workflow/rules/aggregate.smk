rule aggregate_tables:
    input:
        records=get_records(),
    output:
        metrics=f"{TABLES}/metrics.csv",
        delta_m=f"{TABLES}/delta_m.csv",
        summary_csv=f"{TABLES}/summary.csv",
        summary_md=report(f"{TABLES}/summary.md", caption="../report/summary.rst", category="Tables"),
        summary_tex=f"{TABLES}/summary.tex",
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
