rule report_figures:
    input:
        records=get_records(),
        summary=rules.aggregate_tables.output.summary_csv,
        metrics=rules.aggregate_tables.output.metrics,
        efficiency=rules.efficiency_table.output.efficiency,
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
        settings=analysis_args("reference", "alpha"),
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
        claims=rules.aggregate_tables.output.claims_csv,
        bootstrap=rules.aggregate_tables.output.delta_m_bootstrap,
        summary=rules.aggregate_tables.output.summary_csv,
        safeness=rules.aggregate_tables.output.safeness,
        efficiency=rules.efficiency_table.output.efficiency,
        profile=rules.efficiency_profile.output.csv,
    output:
        front=f"{REPORT}/front.html",
        claims=report(f"{REPORT}/claims.html", caption="../report/claims.rst", category="1 Claims"),
        leaderboard=report(f"{REPORT}/leaderboard.html", caption="../report/leaderboard.rst",
                           category="2 Leaderboards"),
        leaderboard_csv=f"{TABLES}/leaderboard.csv",
        leaderboard_md=f"{TABLES}/leaderboard.md",
        summary=report(f"{REPORT}/summary.html", caption="../report/summary.rst", category="3 Tables"),
        task_averaged=report(f"{REPORT}/task_averaged.html", caption="../report/task_averaged.rst",
                             category="3 Tables"),
        published=report(f"{REPORT}/published.html", caption="../report/published.rst", category="3 Tables"),
        significance=report(f"{REPORT}/significance.html", caption="../report/significance.rst",
                            category="4 Significance tests"),
        safeness=report(f"{REPORT}/safeness.html", caption="../report/safeness.rst",
                        category="4 Significance tests"),
        ranking=report(f"{REPORT}/ranking.html", caption="../report/ranking.rst", category="4 Significance tests"),
        efficiency=report(f"{REPORT}/efficiency.html", caption="../report/efficiency.rst", category="6 Efficiency"),
        profile=report(f"{REPORT}/pipeline_profile.html", caption="../report/pipeline_profile.rst",
                       category="6 Efficiency"),
    params:
        tables=lambda wc, input: os.path.dirname(input.claims),
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
