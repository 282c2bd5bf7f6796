# One job writes every table of one aggregation (tidy metrics, Delta_m, summaries, significance, safeness,
# ranking): should it fail (a corrupt record, a config mix), Snakemake removes all of them together, so no
# stale significance table survives beside a deleted summary.
rule aggregate_tables:
    input:
        records=get_records(),
        claims=get_claims_file(),
        step_rounds=get_benchmark_rounds(),
    output:
        claims_md=f"{TABLES}/claims.md",
        claims_csv=f"{TABLES}/claims.csv",
        delta_m_bootstrap=f"{TABLES}/delta_m_bootstrap.csv",
        metrics=f"{TABLES}/metrics.csv",
        delta_m=f"{TABLES}/delta_m.csv",
        summary_csv=f"{TABLES}/summary.csv",
        summary_md=f"{TABLES}/summary.md",
        summary_tex=f"{TABLES}/summary.tex",
        delta_m_metrics=f"{TABLES}/delta_m_metrics.csv",
        convergence=f"{TABLES}/convergence.csv",
        task_averaged_csv=f"{TABLES}/task_averaged.csv",
        task_averaged_md=f"{TABLES}/task_averaged.md",
        published_csv=f"{TABLES}/published.csv",
        published_md=f"{TABLES}/published.md",
        significance=f"{TABLES}/significance.csv",
        safeness=f"{TABLES}/safeness.csv",
        ranking=f"{TABLES}/ranking.csv",
        nemenyi=f"{TABLES}/nemenyi.csv",
    params:
        out=lambda wc, output: os.path.dirname(output.metrics),
        settings=analysis_args("reference", "baselines", "alpha", "rope"),
        step_rounds=get_step_rounds_arg,
    log:
        "logs/aggregate_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench aggregate {input.records:q} --out {params.out:q} {params.settings} "
        "--claims {input.claims:q} {params.step_rounds} "
        "> {log} 2>&1"
