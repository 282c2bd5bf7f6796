rule report_figures:
    input:
        records=get_records(),
        summary=rules.aggregate_tables.output.summary_csv,
        cd_ranks=rules.aggregate_tables.output.cd_ranks_csv,
        cd_nemenyi=rules.aggregate_tables.output.cd_nemenyi_csv,
        efficiency=rules.aggregate_tables.output.efficiency_csv,
    output:
        metrics_ci=report(f"{FIGURES}/metrics_ci.png", caption="../report/metrics_ci.rst", category="5 Figures"),
        relations=report(f"{FIGURES}/relations.png", caption="../report/relations.rst", category="5 Figures"),
        gates=report(f"{FIGURES}/gates.png", caption="../report/gates.rst", category="5 Figures"),
        learning_curves=report(f"{FIGURES}/learning_curves.png", caption="../report/learning_curves.rst",
                               category="5 Figures"),
        cd_diagram=report(f"{FIGURES}/cd_diagram.png", caption="../report/cd_diagram.rst", category="5 Figures"),
        time_vs_delta_m=report(f"{FIGURES}/time_vs_delta_m.png", caption="../report/time_vs_delta_m.rst",
                               category="5 Figures"),
    params:
        tables=lambda wc, input: os.path.dirname(input.summary),
        out=lambda wc, output: os.path.dirname(output.metrics_ci),
        settings=analysis_args("reference"),
    log:
        "logs/report_figures.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "MPLBACKEND=Agg mtlbench figures {input.records:q} --tables {params.tables:q} --out {params.out:q} "
        "{params.settings} > {log} 2>&1"


# The report's tables as HTML pages (Snakemake's report opens HTML inline; CSV and Markdown items would be
# `data:` downloads that browsers block). front.html, the claims and the leaderboards, is the front page
# (workflow/report/workflow.rst includes it).
rule report_tables:
    input:
        tables=rules.aggregate_tables.output,
    output:
        front=f"{REPORT}/front.html",
        **catalogue_pages(),
    params:
        tables=TABLES,
        out=lambda wc, output: os.path.dirname(output.front),
        settings=analysis_args("reference", "rope"),
    log:
        "logs/report_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench report-tables --tables {params.tables:q} --out {params.out:q} {params.settings} "
        "> {log} 2>&1"


rule report_benchmark_tables:
    input:
        step_cost=rules.efficiency_benchmark.output.step_cost,
        growth=rules.efficiency_benchmark.output.growth,
    output:
        step_cost=report(f"{REPORT}/step_cost.html", caption="../report/step_cost.rst", category="6 Efficiency"),
        growth=report(f"{REPORT}/growth.html", caption="../report/scaling.rst", category="6 Efficiency"),
    params:
        out=lambda wc, output: os.path.dirname(output.step_cost),
    log:
        "logs/report_benchmark_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench report-tables --out {params.out:q} --extra step_cost={input.step_cost:q} "
        "growth={input.growth:q} > {log} 2>&1"
