rule report_figures:
    input:
        records=get_records(),
        summary=rules.aggregate_tables.output.summary_csv,
        metrics=rules.aggregate_tables.output.metrics,
        efficiency=rules.efficiency_table.output.efficiency,
    output:
        metrics_ci=report(f"{FIGURES}/metrics_ci.png", caption="../report/metrics_ci.rst", category="Figures"),
        relations=report(f"{FIGURES}/relations.png", caption="../report/relations.rst", category="Figures"),
        gates=report(f"{FIGURES}/gates.png", caption="../report/gates.rst", category="Figures"),
        learning_curves=report(f"{FIGURES}/learning_curves.png", caption="../report/learning_curves.rst",
                               category="Figures"),
        cd_diagram=report(f"{FIGURES}/cd_diagram.png", caption="../report/cd_diagram.rst", category="Figures"),
        time_vs_delta_m=report(f"{FIGURES}/time_vs_delta_m.png", caption="../report/time_vs_delta_m.rst",
                               category="Figures"),
    params:
        tables=lambda wc, input: os.path.dirname(input.summary),
        out=lambda wc, output: os.path.dirname(output.metrics_ci),
    log:
        "logs/report_figures.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "MPLBACKEND=Agg mtlbench figures {input.records:q} --tables {params.tables:q} --out {params.out:q} > {log} 2>&1"
