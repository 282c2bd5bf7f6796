# mtlbench: train every (dataset, method, seed), then aggregate, test, time and report.
# Default: tier-0 data on the CPU (config/config.yaml). Full reproduction: --configfile config/paper.yaml.
# A cluster: --workflow-profile workflow/profiles/slurm (docs/cluster.md).
from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/efficiency.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        get_final_output(),
    default_target: True


onstart:
    # a dataset missing on disk stops the run before any job (a dry run only warns)
    stop_on_missing_data()
    print_time_estimate()


onsuccess:
    # the headline (verdicts, leading methods) and where to read on, as the run's last lines
    from mtlbench.pipeline import headline

    if os.path.exists(f"{TABLES}/claims.csv"):
        print()
        print(headline(TABLES, FIGURES, f"{RESULTS}/report.html", config["statistics"]["reference"]))
