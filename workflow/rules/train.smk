# The unit of work is one (dataset, method, seed) run with its own record, checkpoint and MLflow run; the unit
# of process is a group of seeds of one (dataset, method) (`seeds_per_job`: all by default, 1 on a cluster),
# so that start-up and building the dataset are paid once per group. A seed whose record exists for the same
# config is not retrained, and one with a final checkpoint is restored from it, so deleting one record costs
# that seed alone. An interrupted job resumes from its checkpoints when rerun (--rerun-incomplete).


if len(get_seed_groups()) == len(SEEDS):  # one seed per job

    rule train_run:
        input:
            tracking=rules.data_tracking_store.output if is_live_tracking() else [],
        output:
            record=f"{RESULTS}/{{group}}/{{dataset}}/{{method}}/seed{{seed}}/record.json",
        params:
            method=lambda wc: METHOD_BY_DIR[wc.method],
            sets=get_set_args,
            data_seed=config["data_seed"],
            out=lambda wc, output: os.path.dirname(output.record),
            threads=lambda wc: train_resources(wc.dataset)["threads"],  # the hashed count, whatever --cores
        log:
            "logs/train_run/{group}/{dataset}/{method}/seed{seed}.log",
        threads: lambda wc: train_resources(wc.dataset)["threads"]
        priority: 1
        resources:
            mem_mb=lambda wc: train_resources(wc.dataset)["mem_mb"],
            runtime=lambda wc: train_resources(wc.dataset)["runtime"],
            gpu=lambda wc: gpu_resources(wc.dataset)["gpu"],
            gpu_manufacturer=lambda wc: gpu_resources(wc.dataset)["gpu_manufacturer"],
            nvidia_gpu=lambda wc: gpu_resources(wc.dataset)["nvidia_gpu"],
        shell:
            get_train_shell("{wildcards.seed}")

else:
    for seeds in get_seed_groups():

        rule:
            name:
                get_train_rule_name(seeds)
            input:
                tracking=rules.data_tracking_store.output if is_live_tracking() else [],
            output:
                records=[f"{RESULTS}/{{group}}/{{dataset}}/{{method}}/seed{s}/record.json" for s in seeds],
            params:
                method=lambda wc: METHOD_BY_DIR[wc.method],
                sets=get_set_args,
                data_seed=config["data_seed"],
                out=lambda wc: f"{RESULTS}/{wc.group}/{wc.dataset}/{wc.method}/seed{{seed}}",
                threads=lambda wc: train_resources(wc.dataset)["threads"],  # the hashed count, whatever --cores
            log:
                f"logs/train_run/{{group}}/{{dataset}}/{{method}}/seeds{seeds[0]}-{seeds[-1]}.log",
            threads: lambda wc: train_resources(wc.dataset)["threads"]
            priority: 1
            resources:
                mem_mb=lambda wc: train_resources(wc.dataset)["mem_mb"],
                runtime=lambda wc, seeds=seeds: train_resources(wc.dataset)["runtime"] * len(seeds),
                gpu=lambda wc: gpu_resources(wc.dataset)["gpu"],
                gpu_manufacturer=lambda wc: gpu_resources(wc.dataset)["gpu_manufacturer"],
                nvidia_gpu=lambda wc: gpu_resources(wc.dataset)["nvidia_gpu"],
            shell:
                get_train_shell(" ".join(map(str, seeds)))


# With tracking.live=false the jobs above write only their records; one process logs them all to MLflow
# (the same run content as live tracking; records logged before are recognised and skipped). Either way it
# then logs each run's Delta_m, which needs the reference method's run of the same seed.
rule train_tracking_log:
    input:
        records=get_records() + get_variant_records(),
        delta_m=f"{TABLES}/delta_m.csv",  # each run's Delta_m, known once the seed's runs have all finished
    output:
        runs=f"{RESULTS}/mlflow_runs.json",
    params:
        uri=config["tracking"]["uri"],
        experiment=config["tracking"]["experiment"],
        artifacts=config["tracking"]["artifacts"],
        reference=config["statistics"]["reference"],
    log:
        "logs/train_tracking_log.log",
    resources:
        mem_mb=2000,
        runtime=30,
    localrule: True
    shell:
        "mtlbench tracking log {input.records:q} --uri {params.uri:q} --experiment {params.experiment:q} "
        "--artifacts {params.artifacts:q} --out {output.runs:q} --delta-m {input.delta_m:q} "
        "--reference {params.reference:q} > {log} 2>&1"
