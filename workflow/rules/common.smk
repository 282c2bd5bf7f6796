# Every decision of the workflow lives here: config validation, wildcard constraints, input functions.
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate


def every_method(methods):
    """`methods: all` is every registered method (config/zoo.yaml): a method added as one file is in it."""
    from mtlbench.registry import METHODS

    return METHODS.names() if methods == "all" else methods


if "methods" in config:
    config["methods"] = every_method(config["methods"])
validate(config, schema="../schemas/config.schema.yaml")


def check_config():
    """Names and override keys checked once, with the suite's own messages (valid names listed)."""
    from mtlbench.config import resolve_config
    from mtlbench.errors import MtlbenchError

    data = {}
    try:
        for dataset in config["datasets"]:
            for method in config["methods"]:
                cfg = resolve_config(dataset, method, 0, get_overrides_for(dataset, method), config["data_seed"])
                data.setdefault(json.dumps(cfg["dataset"], sort_keys=True), cfg["dataset"])
        check_override_names()
        check_statistics_methods()
        check_claims()
    except MtlbenchError as exc:
        raise WorkflowError(f"config error: {exc}") from None
    return check_data(list(data.values()))


def check_data(datasets):
    """Every dataset on disk is checked while the workflow is read (`mtlbench data check`): what is missing and
    where to get it. A plan (-n), a report or --lint only warn; a run stops before any job starts
    (`onstart` in the Snakefile). Returns the message, or None when every dataset is in place."""
    from mtlbench.data import missing_data

    problems = [(d, missing_data(d)) for d in datasets]
    problems = [(d, p) for d, p in problems if p]
    if not problems:
        return None
    names = ", ".join(d["name"] for d, _ in problems)
    text = f"data check: {len(problems)} dataset(s) not in place ({names}); no job was started.\n" + "\n".join(
        f"  {d['name']} (dataset.root {d.get('root')}): " + "; ".join(p) for d, p in problems) + (
        "\nPlace the files as described (docs/fidelity.md names each dataset's source), check a copy with "
        "`mtlbench data check --dataset NAME --root PATH`, or remove the dataset from `datasets:`.")
    print(f"warning: {len(problems)} dataset(s) not on disk ({names}): a run would stop before its first job, "
          f"saying what is missing", file=sys.stderr)
    return text


def print_time_estimate():
    """The Snakefile's onstart: the runs still to train and about how long they take (pipeline.time_estimate)."""
    import yaml

    from mtlbench.config import resolve_config
    from mtlbench.pipeline import time_estimate

    with open(os.path.join(workflow.basedir, "config", "config.yaml")) as fh:
        default = yaml.safe_load(fh)
    with open(os.path.join(workflow.basedir, "config", "zoo.yaml")) as fh:
        zoo = {**default, **yaml.safe_load(fh)}  # the zoo's methods on the default's data and overrides
    zoo["methods"] = every_method(zoo["methods"])

    def same_as_reference(dataset, method):
        reference = next((c for c in (default, zoo) if dataset in c["datasets"] and method in c["methods"]), None)
        if reference is None:
            return False
        now, ref = (resolve_config(dataset, method, 0, get_overrides_for(dataset, method, c), c["data_seed"])
                    for c in (config, reference))
        return {**now, "tracking": None} == {**ref, "tracking": None}

    def epochs(dataset, method, settings):
        return resolve_config(dataset, method, 0, {**get_overrides_for(dataset, method), **settings})["train"]["epochs"]

    def scale(dataset, method, group):
        """The run's time over the reference run's: 1 for the reference's config, a protocol's or a choice
        value's run by the ratio of their epochs, 0 (not estimated) for a config the reference did not run."""
        if not same_as_reference(dataset, method):
            return 0.0
        if group == "runs":
            return 1.0
        return epochs(dataset, method, VARIANTS[group, dataset, method_dir(method)].settings) / epochs(dataset, method, {})

    runs = [(d, m, s, g) for d in DATASETS for m in METHODS for s in SEEDS for g in ["runs"]]
    runs += [(d, METHOD_BY_DIR[m], s, g) for g, d, m in VARIANTS for s in SEEDS]
    todo = [run for run in runs if not os.path.exists(get_record(*run))]
    scales = {(d, m, g): scale(d, m, g) for d, m, _, g in todo}
    reference = os.path.join(workflow.basedir, "results", "reference")
    print(time_estimate([(d, m, scales[d, m, g]) for d, m, _, g in todo], reference, get_total_cores()),
          file=sys.stderr)
    write_progress_plan(todo, scales, reference)


def write_progress_plan(todo, scales, reference):
    """The board the training jobs' status lines estimate the remaining time from (mtlbench.progress): each run
    to train, weighted by its measured time in results/reference (scaled, for a protocol's or a choice's run)."""
    from mtlbench.pipeline import reference_train_seconds
    from mtlbench.progress import Board

    seconds = reference_train_seconds(reference)
    Board(Path(PROGRESS_BOARD)).write_plan({
        os.path.dirname(get_record(d, m, s, g)): float(seconds[d, m]) * scales[d, m, g]
        if scales[d, m, g] and (d, m) in seconds.index else None
        for d, m, s, g in todo
    })


def stop_on_missing_data():
    """The Snakefile's onstart: no job starts while a dataset is missing."""
    if DATA_PROBLEMS:
        raise WorkflowError(DATA_PROBLEMS)


def check_override_names():
    """An override for a name no component has (a typo such as `hsp`) would silently apply to nothing.
    Registered names that this run does not train are fine: a user config inherits the default config's."""
    from mtlbench.errors import MtlbenchError
    from mtlbench.registry import DATASETS, METHODS

    ov = config["overrides"]
    known = {"datasets": sorted({*DATASETS.names(), *config["datasets"]}),
             "methods": sorted({*METHODS.names(), *config["methods"]})}
    for group in ("datasets", "methods"):
        unknown = sorted(set(ov.get(group) or {}) - set(known[group]))
        if unknown:
            raise MtlbenchError(f"overrides.{group} names {', '.join(map(repr, unknown))}, which no {group[:-1]} "
                                f"has; valid: {', '.join(known[group])}")
    unknown = sorted(set(config["resources"].get("datasets") or {}) - set(known["datasets"]))
    if unknown:
        raise MtlbenchError(f"resources.datasets names {', '.join(map(repr, unknown))}, which no dataset has; "
                            f"valid: {', '.join(known['datasets'])}")
    for key in ov.get("runs") or {}:
        dataset, _, method = key.partition("/")
        if dataset not in known["datasets"] or method not in known["methods"]:
            raise MtlbenchError(f"overrides.runs key {key!r} is not dataset/method of known names; datasets: "
                                f"{', '.join(known['datasets'])}; methods: {', '.join(known['methods'])}")


def check_claims():
    """The claims file is checked whole while the workflow is read, before any training: one line per problem."""
    from mtlbench.claims import load_claims
    from mtlbench.registry import METHODS

    load_claims(get_claims_file(), known_methods={*METHODS.names(), *config["methods"]})


def check_statistics_methods():
    """Delta_m, safeness and the significance tests compare against methods that must be trained too."""
    from mtlbench.errors import MtlbenchError

    stats = config["statistics"]
    missing = [m for m in [stats["reference"], *stats["baselines"]] if m not in config["methods"]]
    if missing:
        raise MtlbenchError(f"statistics compares against {', '.join(dict.fromkeys(missing))}, which `methods` "
                            f"does not train: add {', '.join(dict.fromkeys(missing))} to methods (Delta_m, safeness and "
                            f"the significance tests need its runs), or change statistics.reference / baselines")


def get_overrides_for(dataset, method, cfg=None):
    """Typed overrides for one run: common < per dataset < per method < per (dataset, method)."""
    cfg = config if cfg is None else cfg
    ov = cfg["overrides"]
    merged = {}
    merged.update(ov.get("common") or {})
    merged.update((ov.get("datasets") or {}).get(dataset) or {})
    merged.update((ov.get("methods") or {}).get(method) or {})
    merged.update((ov.get("runs") or {}).get(f"{dataset}/{method}") or {})
    merged.update({f"tracking.{k}": v for k, v in (cfg.get("tracking") or {}).items()})
    return merged


def get_claims_file():
    """`claims:` relative to the working directory, else to the workflow (config/claims.yaml ships with it)."""
    path = config["claims"]
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


def get_protocols_file():
    """`robustness.file` relative to the working directory, else to the workflow (config/protocols.yaml)."""
    path = config["robustness"]["file"]
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


def robustness_plan():
    """The runs beside the config's own (mtlbench.protocols): each protocol of `robustness.protocols` and each
    value of the choices in `robustness.sensitivity`, on the datasets named; checked while the workflow is read."""
    from mtlbench.errors import MtlbenchError
    from mtlbench.protocols import load_robustness, plan

    try:
        file = load_robustness(get_protocols_file())
        return plan(file, config["robustness"], config["datasets"], config["methods"], get_overrides_for)
    except MtlbenchError as exc:
        raise WorkflowError(f"config error: {exc}") from None


def write_robustness_plan(plan, path, log):
    """The robustness_plan rule: the plan as JSON, and a line on how many variants it trains to the log."""
    Path(path).write_text(f"{plan}\n")
    Path(log).write_text(f"{len(ROBUSTNESS.variants)} variant(s) of (dataset, method): {path}\n")


DATA_PROBLEMS = check_config()
ROBUSTNESS = robustness_plan()

RESULTS = config["results"]
DATASETS = config["datasets"]
METHODS = config["methods"]
SEEDS = config["seeds"]
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
REPORT = f"{RESULTS}/report"
PROGRESS_BOARD = "logs/progress"  # the runs to train and those finished, for the status lines' time estimate


def method_dir(method):
    """A user method named package.module:Name gets a path-safe directory name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in method)


METHOD_BY_DIR = {method_dir(m): m for m in METHODS}
# the runs of a protocol or of a choice's value: (folder under variants/, dataset, method) -> mtlbench.protocols.Variant
VARIANTS = {(f"variants/{v.directory}", v.dataset, method_dir(v.method)): v for v in ROBUSTNESS.variants}


def run_groups():
    """The folders under `results` that hold runs: runs/ (the config's own) and variants/NAME/ (issue 23)."""
    return ["runs", *sorted({group for group, _, _ in VARIANTS})]


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHOD_BY_DIR),
    seed=r"\d+",
    group="|".join(re.escape(g) for g in run_groups()),


def get_seed_groups():
    """The seeds each training job trains, one after the other in one process (`seeds_per_job`, 0 = all)."""
    size = config["seeds_per_job"] or len(SEEDS)
    return [SEEDS[i : i + size] for i in range(0, len(SEEDS), size)]


def get_train_rule_name(seeds):
    """`train_run` when one job trains every seed (the default); else one rule per group of seeds."""
    return "train_run" if len(get_seed_groups()) == 1 else f"train_run_seeds{seeds[0]}_{seeds[-1]}"


def train_resources(dataset):
    """A training job's threads, mem_mb, runtime (minutes per seed) and gpu: `resources.train`, with
    `resources.datasets.<dataset>` on top (config/paper.yaml: no GPU and little memory for the tiny data)."""
    return {**config["resources"]["train"], **(config["resources"].get("datasets") or {}).get(dataset, {})}


def gpu_resources(dataset):
    """The GPU resources of a dataset's training jobs, under each name an executor reads, or none at all without
    a GPU (Kubernetes' executor refuses any `gpu` resource, even 0, that lacks `gpu_manufacturer`):
    `gpu` and `gpu_manufacturer` (Snakemake's standard names: SLURM, Kubernetes, the local scheduler) and
    `nvidia_gpu` (Google Batch's count; NVIDIA only). Snakemake drops a None resource."""
    wanted = train_resources(dataset)
    count = wanted["gpu"] or None
    maker = wanted["gpu_manufacturer"] if count else None
    return {"gpu": count, "gpu_manufacturer": maker, "nvidia_gpu": count if maker == "nvidia" else None}


def analysis_args(*names):
    """The config's `statistics` settings named, as the analysis commands' options (one settings object in
    mtlbench.analysis_settings: --reference, --baselines, --alpha, --rope)."""
    def option(name):
        value = config["statistics"][name]
        values = value if isinstance(value, list) else [value]
        return f"--{name} " + " ".join(shlex.quote(str(v)) for v in values)

    return " ".join(option(name) for name in names)


def get_train_shell(seeds):
    """The training jobs' command: the given seeds in one process (exit 3, a diverged run, is a result; any other
    failure prints its `error:` line to the terminal, where Snakemake shows it beside the job)."""
    return (
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} mtlbench train --dataset {wildcards.dataset} "
        f"--method {{params.method:q}} --seed {seeds} --data-seed {{params.data_seed}} "
        # the configured thread count (hashed), not Snakemake's {threads}, which --cores may lower
        "--out {params.out:q} --set train.threads={params.threads} {params.sets} "
        # status lines (a finished seed, a minute's progress) to the terminal, on fd 3; the rest to the log
        f"--status-fd 3 --progress-board {PROGRESS_BOARD} 3>&2 "
        # a failure's one-line cause reaches the terminal (the whole output stays in the log)
        "> {log} 2>&1 || {{ rc=$?; [ $rc -eq 3 ] || {{ grep '^error: ' {log} | tail -n 1 >&2; exit $rc; }}; }}"
    )


def get_total_cores():
    """The local run's core count; 0 on a cluster executor, which has none (the profile then counts the jobs'
    own core-time)."""
    try:
        return int(workflow.cores)
    except Exception:  # WorkflowError: no --cores with an executor such as slurm
        return 0


def is_benchmarking():
    return bool(config["efficiency"]["benchmark"])


def get_benchmark_table():
    return [f"{RESULTS}/benchmarks/step_cost.csv"] if is_benchmarking() else []


def get_benchmark_rounds():
    """The interleaved benchmark's per-round step times: the step-cost claims are tested on them."""
    return [f"{RESULTS}/benchmarks/step_rounds.csv"] if is_benchmarking() else []


def get_step_rounds_arg(wildcards, input):
    """`--step-rounds PATH` for `mtlbench aggregate` when the benchmark runs, else nothing."""
    paths = [input.step_rounds] if isinstance(input.step_rounds, str) else list(input.step_rounds)
    return " ".join(f"--step-rounds {shlex.quote(p)}" for p in paths)


def is_tracking():
    return bool(config["tracking"]["enabled"])


def is_live_tracking():
    """Training jobs log to MLflow themselves (else train_tracking_log logs their records afterwards)."""
    return is_tracking() and bool(config["tracking"]["live"])


def get_record(dataset, method, seed, group="runs"):
    return f"{RESULTS}/{group}/{dataset}/{method_dir(method)}/seed{seed}/record.json"


def get_records(wildcards=None):
    return [get_record(d, m, s) for d in DATASETS for m in METHODS for s in SEEDS]


def get_variant_records(wildcards=None):
    """Every run of a protocol or of a choice's value (robustness), each seed."""
    return [get_record(d, METHOD_BY_DIR[m], s, group) for group, d, m in VARIANTS for s in SEEDS]


def get_set_args(wildcards):
    """The run's overrides as `--set` options; a variant's settings on top, and `--variant NAME`."""
    method = METHOD_BY_DIR[wildcards.method]
    pairs = get_overrides_for(wildcards.dataset, method)
    variant = VARIANTS.get((wildcards.group, wildcards.dataset, wildcards.method))
    pairs.update(variant.settings if variant else {})
    sets = " ".join(f"--set {shlex.quote(f'{k}={_yaml_value(v)}')}" for k, v in pairs.items())
    return sets + (f" --variant {shlex.quote(variant.name)}" if variant else "")


def _yaml_value(value):
    import json

    return value if isinstance(value, str) else json.dumps(value)


def catalogue_tables():
    """Every file of the analysis pass (mtlbench/catalogue.py: the built-in tables of mtlbench/outputs.py and any
    `analyses/` module on the import path), named for Snakemake: summary.csv -> summary_csv."""
    from mtlbench.catalogue import table_files

    return {name.replace(".", "_"): f"{TABLES}/{name}" for name in table_files()}


def get_tables():
    return list(catalogue_tables().values())


def caption_file(output):
    """A table's or figure's caption (declared in the catalogue) as the .rst file Snakemake's report reads."""
    path = Path(".snakemake", "mtlbench-captions", f"{type(output).__name__.lower()}-{output.name}.rst").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"{output.caption}\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def catalogue_pages():
    """A report page per catalogued table with a report category, its caption and category from the catalogue."""
    from mtlbench.catalogue import report_pages

    return {o.name: report(f"{REPORT}/{o.name}.html", caption=caption_file(o), category=o.category)
            for o in report_pages()}


def catalogue_figures():
    """The report's figures, declared in the catalogue (mtlbench/outputs.py) with their captions and category."""
    from mtlbench.catalogue import load_figures

    return {f.name: report(f"{FIGURES}/{f.file}", caption=caption_file(f), category=f.category)
            for f in load_figures().values()}


def get_figures():
    return [f"{FIGURES}/{name}.png" for name in catalogue_figures()]


def get_benchmark_pages_input():
    """The benchmark's tables shown as report pages, when the benchmark runs."""
    if not is_benchmarking():
        return {}
    return {"step_cost": f"{RESULTS}/benchmarks/step_cost.csv", "growth": f"{RESULTS}/benchmarks/growth.csv"}


def get_benchmark_pages():
    captions = {"step_cost": "../report/step_cost.rst", "growth": "../report/scaling.rst"}
    return {n: report(f"{REPORT}/{n}.html", caption=captions[n], category="6 Efficiency")
            for n in get_benchmark_pages_input()}


def get_report_pages():
    """The report's HTML tables (the benchmark's too when it runs)."""
    names = ["front", *catalogue_pages()]
    names += ["step_cost", "growth"] if is_benchmarking() else []
    return [f"{REPORT}/{n}.html" for n in names]


def get_final_output():
    """Every run record too: a deleted record is retrained (and the tables follow), not ignored."""
    tracked = [f"{RESULTS}/mlflow_runs.json"] if is_tracking() else []
    return get_records() + get_variant_records() + get_tables() + get_figures() + get_report_pages() + tracked
