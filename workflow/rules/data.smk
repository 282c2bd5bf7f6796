# Tier-0 data is built inside each training job from the data seed (cheap, deterministic); what must exist
# before the parallel jobs is the tracking database, so no two jobs race to create its schema.


rule data_tracking_store:
    output:
        touch(f"{RESULTS}/.tracking-ready"),
    params:
        uri=config["tracking"]["uri"],
        experiment=config["tracking"]["experiment"],
        enabled=is_tracking(),
    log:
        "logs/data_tracking_store.log",
    resources:
        mem_mb=2000,
        runtime=10,
    localrule: True
    shell:
        "if [ {params.enabled} = True ]; then "
        "mtlbench tracking init --uri {params.uri:q} --experiment {params.experiment:q} > {log} 2>&1; "
        "else echo 'tracking disabled' > {log}; fi"
