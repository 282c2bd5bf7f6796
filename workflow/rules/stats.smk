rule stats_tests:
    input:
        metrics=rules.aggregate_tables.output.metrics,
    output:
        significance=report(f"{TABLES}/significance.csv", caption="../report/significance.rst",
                            category="Statistics"),
        safeness=report(f"{TABLES}/safeness.csv", caption="../report/safeness.rst", category="Statistics"),
        ranking=report(f"{TABLES}/ranking.csv", caption="../report/ranking.rst", category="Statistics"),
        nemenyi=f"{TABLES}/nemenyi.csv",
    params:
        out=lambda wc, output: os.path.dirname(output.significance),
        baselines=" ".join(config["statistics"]["baselines"]),
        reference=config["statistics"]["reference"],
        alpha=config["statistics"]["alpha"],
    log:
        "logs/stats_tests.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench stats --metrics {input.metrics:q} --out {params.out:q} --baselines {params.baselines} "
        "--reference {params.reference} --alpha {params.alpha} > {log} 2>&1"
