# One job per (dataset, method, seed): the unit for a cluster, for resuming and for caching.
# An interrupted job resumes from its checkpoint.pt when rerun (the profile sets --rerun-incomplete).


rule train_run:
    input:
        tracking=rules.data_tracking_store.output if is_live_tracking() else [],
    output:
        record=f"{RESULTS}/runs/{{dataset}}/{{method}}/seed{{seed}}/record.json",
    params:
        method=lambda wc: METHOD_BY_DIR[wc.method],
        sets=get_set_args,
        data_seed=config["data_seed"],
        out=lambda wc, output: os.path.dirname(output.record),
    log:
        "logs/train_run/{dataset}/{method}/seed{seed}.log",
    threads: config["resources"]["train"]["threads"]
    resources:
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=config["resources"]["train"]["runtime"],
        gpu=config["resources"]["train"]["gpu"],
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} mtlbench train --dataset {wildcards.dataset} "
        "--method {params.method:q} --seed {wildcards.seed} --data-seed {params.data_seed} "
        "--out {params.out:q} --set train.threads={threads} {params.sets} > {log} 2>&1 || [ $? -eq 3 ]"


# With tracking.live=false the jobs above write only their records; one process logs them all to MLflow
# (the same run content as live tracking; records logged before are recognised and skipped).
rule train_tracking_log:
    input:
        records=get_records(),
    output:
        runs=f"{RESULTS}/mlflow_runs.json",
    params:
        uri=config["tracking"]["uri"],
        experiment=config["tracking"]["experiment"],
        artifacts=config["tracking"]["artifacts"],
    log:
        "logs/train_tracking_log.log",
    resources:
        mem_mb=2000,
        runtime=30,
    localrule: True
    shell:
        "mtlbench tracking log {input.records:q} --uri {params.uri:q} --experiment {params.experiment:q} "
        "--artifacts {params.artifacts:q} --out {output.runs:q} > {log} 2>&1"
