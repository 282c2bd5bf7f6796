# One job, one pass, writes every table of the output catalogue (mtlbench/catalogue.py: tidy metrics, Delta_m,
# summaries, significance, safeness, ranking, claims, the leaderboard, efficiency, the pipeline's profile, and
# any table of one's own): should it
# fail (a corrupt record, a config mix), Snakemake removes all of them together, so no stale significance table
# survives beside a deleted summary.
# What the robustness runs are (each protocol, each swept choice and its values), for the analysis; rewritten when
# the plan changes (Snakemake reruns a job whose params changed).
rule robustness_plan:
    output:
        plan=f"{RESULTS}/variants/plan.json",
    params:
        plan=json.dumps(ROBUSTNESS.to_json(), sort_keys=True, indent=1),
    log:
        "logs/robustness_plan.log",
    localrule: True
    run:
        write_robustness_plan(params.plan, output.plan, log[0])


rule aggregate_tables:
    input:
        records=get_records(),
        variants=get_variant_records(),
        plan=rules.robustness_plan.output.plan,
        claims=get_claims_file(),
        step_rounds=get_benchmark_rounds(),
        benchmark=get_benchmark_table(),
    output:
        **catalogue_tables(),
    params:
        out=lambda wc, output: os.path.dirname(output[0]),  # every table is in the tables folder
        settings=analysis_args("reference", "baselines", "alpha", "rope"),
        step_rounds=get_step_rounds_arg,
        benchmark=lambda wc, input: f"--benchmark {shlex.quote(input.benchmark[0])}" if input.benchmark else "",
        cores=get_total_cores(),
    log:
        "logs/aggregate_tables.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "mtlbench aggregate {input.records:q} {input.variants:q} --out {params.out:q} {params.settings} "
        "--robustness {input.plan:q} "
        "--claims {input.claims:q} {params.step_rounds} {params.benchmark} --cores {params.cores} "
        "> {log} 2>&1"
