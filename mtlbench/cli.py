"""Command line: `mtlbench train`, `list`, `data check`, `tracking init|log` and the pipeline stages.

User mistakes end in one `error:` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from mtlbench.analysis_settings import AnalysisSettings
from mtlbench.analysis_settings import add_arguments as add_analysis_arguments
from mtlbench.errors import MtlbenchError
from mtlbench.progress import Board, StatusLines, open_status_stream
from mtlbench.record import RunRecord


class _DefaultsFormatter(argparse.HelpFormatter):
    """An option's default in its help, unless the help says it already or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default in ([], argparse.SUPPRESS)
        silent = nothing or "default" in text
        return text if silent or not action.option_strings else f"{text} (default: {action.default})"


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's help shows each option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    import mtlbench

    p = _Parser(prog="mtlbench", description="Benchmark suite for deep multi-task learning")
    p.add_argument("--version", action="version", version=f"mtlbench {mtlbench.__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train (dataset, method) for one or more seeds; each writes DIR/record.json")
    t.add_argument("--dataset", required=True, help="a registered dataset (mtlbench list)")
    t.add_argument("--method", required=True, help="a registered name or package.module:Name")
    t.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        help="one or more seeds, trained one after the other in this process (data built once)",
    )
    t.add_argument("--data-seed", type=int, default=0, help="seed of the data split/pairing (independent)")
    t.add_argument(
        "--out",
        default=None,
        help="run directory; with several seeds a template holding {seed} (default results/runs/D/M/seed{seed})",
    )
    t.add_argument("--epochs", type=int, default=None, help="the budget train.epochs (default: the dataset's)")
    t.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="typed override, e.g. train.lr=0.01 or rule.lam=0.1 (repeatable; train.batch_size=0: full batch)",
    )
    t.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    t.add_argument(
        "--status-fd",
        type=int,
        default=None,
        metavar="FD",
        help="also write a line per finished seed, and at most one a minute while one trains, to this open file "
        "descriptor (the pipeline passes its terminal's while the job's output goes to its log)",
    )
    t.add_argument(
        "--progress-board",
        type=Path,
        default=None,
        metavar="DIR",
        help="the pipeline's plan of runs (logs/progress): finished seeds are marked there, and status lines "
        "say how many runs are done and about how long the rest takes",
    )
    t.add_argument(
        "--variant",
        default="",
        metavar="NAME",
        help="the protocol or choice value these runs belong to (the pipeline's robustness runs; recorded in the "
        "config as `variant`, kept apart from the config's own runs by `mtlbench aggregate`)",
    )
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    lst = sub.add_parser("list", help="registered datasets, methods, update rules, architectures and their parameters")
    lst.add_argument("--brief", action="store_true", help="names and descriptions only")

    data = sub.add_parser("data", help="datasets on disk")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="verify a copy of a dataset: files, layout, shapes, label ranges")
    check.add_argument("--dataset", required=True, help="a registered dataset (mtlbench list)")
    check.add_argument("--root", default=None, help="the dataset's folder (default: the dataset's own dataset.root)")
    check.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other dataset.* settings, e.g. dataset.source=torchvision",
    )

    agg = sub.add_parser(
        "aggregate",
        help="run records -> every table of the output catalogue in one pass (metrics, Delta_m, summaries, "
        "significance, safeness, ranking, claims, leaderboard)",
    )
    agg.add_argument("records", nargs="+", type=Path, help="run records (record.json)")
    agg.add_argument("--out", type=Path, required=True, help="the tables folder")
    add_analysis_arguments(agg)
    agg.add_argument(
        "--allow-mixed-configs",
        action="store_true",
        help="aggregate records of one (dataset, method) even when their configs differ",
    )
    agg.add_argument(
        "--claims", type=Path, default=None, help="the claims file scored in claims.{csv,md} (default: none, no rows)"
    )
    agg.add_argument(
        "--step-rounds",
        type=Path,
        default=None,
        help="the interleaved benchmark's step_rounds.csv: step-cost claims are tested on it (default: none)",
    )
    agg.add_argument(
        "--benchmark",
        type=Path,
        default=None,
        help="the interleaved benchmark's step_cost.csv, merged into efficiency.csv (default: none)",
    )
    agg.add_argument(
        "--robustness",
        type=Path,
        default=None,
        help="the pipeline's plan of protocols and sweeps (variants/plan.json): each claim gets a verdict per "
        "protocol and per value of each choice, from the records of those runs (default: none)",
    )
    agg.add_argument(
        "--cores",
        type=int,
        default=0,
        help="the cores the pipeline ran on, for pipeline_profile (0: a cluster, the jobs' own core-time)",
    )

    mach = sub.add_parser(
        "machines",
        help="the same runs on two machines: per-run differences, the verdicts on each, which held on both "
        "(machine_runs.csv, machine_claims.csv)",
    )
    mach.add_argument("first", type=Path, help="the first machine's results folder (its run records below it)")
    mach.add_argument("second", type=Path, help="the second machine's results folder")
    mach.add_argument("--claims", type=Path, required=True, help="the claims file (config/claims.yaml)")
    mach.add_argument("--out", type=Path, required=True, help="the folder the two tables are written to")
    add_analysis_arguments(mach)

    bench = sub.add_parser(
        "bench",
        help="step time (interleaved), method memory, growth with the number of tasks, the training core's CPU wins",
    )
    bench.add_argument("--out", type=Path, required=True, help="the benchmarks folder")
    bench.add_argument("--rounds", type=int, default=30, help="interleaved rounds (each times every method once)")
    bench.add_argument(
        "--tasks", type=int, nargs="+", default=[2, 5, 10, 20, 40], help="task counts of the scaling benchmark"
    )

    fig = sub.add_parser("figures", help="run records and tables -> figures")
    fig.add_argument("records", nargs="+", type=Path, help="run records (record.json)")
    fig.add_argument("--tables", type=Path, required=True, help="the tables folder of `mtlbench aggregate`")
    fig.add_argument("--out", type=Path, required=True, help="the figures folder")
    add_analysis_arguments(fig, "reference")

    rep = sub.add_parser("report-tables", help="tables -> HTML pages for the report: claims, leaderboards, details")
    rep.add_argument("--tables", type=Path, default=None, help="the pipeline's tables folder (claims first)")
    rep.add_argument("--out", type=Path, required=True, help="the folder of the report's HTML pages")
    add_analysis_arguments(rep, "reference", "rope")
    rep.add_argument("--extra", nargs="*", default=[], metavar="NAME=CSV", help="more CSVs to render")

    tr = sub.add_parser("tracking", help="MLflow tracking store")
    tr_sub = tr.add_subparsers(dest="tracking_command", required=True)
    init = tr_sub.add_parser("init", help="create the tracking database before parallel runs")
    log = tr_sub.add_parser("log", help="log finished run records to MLflow (runs trained with tracking.live=false)")
    log.add_argument("records", nargs="+", type=Path, help="run records (record.json)")
    log.add_argument("--out", type=Path, default=None, help="write record -> MLflow run id here (JSON)")
    log.add_argument(
        "--delta-m",
        type=Path,
        default=None,
        help="delta_m.csv of the aggregation: log each run's Delta_m to its MLflow run",
    )
    add_analysis_arguments(log, "reference")
    for command in (init, log):
        command.add_argument("--uri", default=None, help="tracking URI (default: tracking.uri of the config)")
        command.add_argument("--experiment", default=None, help="experiment (default: tracking.experiment)")
        command.add_argument("--artifacts", default=None, help="artifact folder of a new experiment")
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """Each seed is its own run (record, checkpoint, MLflow run); a seed whose record exists for the same config
    is not trained again, and one with a final checkpoint is restored from it."""
    from mtlbench.config import config_hash, parse_overrides, resolve_config
    from mtlbench.training import train

    overrides: dict[str, object] = dict(parse_overrides(args.sets))
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if args.no_tracking:
        overrides["tracking.enabled"] = False
    if len(set(args.seed)) != len(args.seed):
        raise MtlbenchError(f"--seed repeats a seed: {args.seed}")
    template = args.out or str(Path("results/runs") / args.dataset / args.method.replace(":", "_") / "seed{seed}")
    if len(args.seed) > 1 and "{seed}" not in template:
        raise MtlbenchError(f"--out {template!r} needs a {{seed}} placeholder to hold several seeds")
    configs = [
        resolve_config(args.dataset, args.method, seed, overrides, data_seed=args.data_seed) for seed in args.seed
    ]
    for cfg in configs:
        cfg.update({"variant": args.variant} if args.variant else {})
    if args.print_config:
        print(json.dumps(configs[0] if len(configs) == 1 else configs, indent=2))
        return 0
    status = _status_lines(args)
    worst = 0
    for cfg in configs:
        out = Path(template.replace("{seed}", str(cfg["seed"])))
        name = f"{args.dataset}/{args.method}" + (f" [{args.variant}]" if args.variant else "") + f" seed {cfg['seed']}"
        record = _current_record(out, config_hash(cfg))
        if record is not None:
            if cfg["tracking"]["enabled"] and cfg["tracking"]["live"]:  # a kill or a failed store may have left
                from mtlbench.config import TrackingConfig  # its MLflow run incomplete: idempotent
                from mtlbench.tracking import run_key, track_finished

                track_finished(
                    TrackingConfig(**cfg["tracking"]), record, out / "record.json", run_key(out, config_hash(cfg))
                )
            print(f"{record.status}: {out / 'record.json'}  up to date (same config), not retrained")
        else:
            record = train(cfg, out, on_epoch=partial(status.epoch_ended, name))
            summary = {task: {m: round(v, 4) for m, v in ms.items()} for task, ms in record.metrics.test.items()}
            epoch = record.selected_epoch
            chosen = "" if epoch is None else f"  selected epoch {epoch + 1} of {record.epochs_planned}"
            print(f"{record.status}: {out / 'record.json'}{chosen}  test {summary}")
        status.seed_finished(name, out, record)
        worst = max(worst, 0 if record.ok else 3)
    return worst


def _status_lines(args: argparse.Namespace) -> StatusLines:
    """Where `train` reports progress: the --status-fd stream, else nowhere (os.devnull)."""
    stream = open_status_stream(args.status_fd) if args.status_fd is not None else open(os.devnull, "w")
    return StatusLines(stream, Board(args.progress_board) if args.progress_board is not None else None)


def _current_record(out: Path, config_hash: str) -> RunRecord | None:
    """The run's record when it exists and belongs to this config (else None: train, resume or restore)."""
    try:
        record = RunRecord.read(out / "record.json")
    except MtlbenchError:
        return None
    return record if record.config_hash == config_hash else None


def cmd_list(args: argparse.Namespace) -> int:
    """Datasets, methods, update rules and architectures, each with its typed parameters and their defaults
    (the `dataset.*`, `rule.*`, `arch.*` keys of `--set`); `--brief`: names and descriptions only."""
    from mtlbench.method import get_method
    from mtlbench.params import signature_params
    from mtlbench.registry import ARCHITECTURES, DATASETS, METHODS, UPDATE_RULES

    groups: tuple[tuple[str, Any, str | None], ...] = (
        ("datasets", DATASETS, "dataset"),
        ("methods", METHODS, None),
        ("update rules", UPDATE_RULES, "rule"),
        ("architectures", ARCHITECTURES, "arch"),
    )
    for title, registry, prefix in groups:
        print(f"{title}:")
        for entry in registry.entries():
            print(f"  {entry.name:<22} {entry.description}")
            if prefix is None:
                spec = get_method(entry.name)
                print(
                    f"  {'':<22}   = {spec.architecture} + {spec.update_rule}"
                    + "".join(
                        f", {k}={v!r}"
                        for k, v in {
                            **{f"rule.{k}": v for k, v in spec.rule_params.items()},
                            **{f"arch.{k}": v for k, v in spec.arch_params.items()},
                        }.items()
                    )
                )
            elif not args.brief:
                params = signature_params(entry.obj, ("tasks", "network"))
                if params:
                    print(
                        f"  {'':<22}   "
                        + ", ".join(f"{prefix}.{p.name}: {p.type_name()} = {p.default!r}" for p in params.values())
                    )
    return 0


def cmd_tracking(args: argparse.Namespace) -> int:
    from mtlbench.config import TrackingConfig
    from mtlbench.tracking import init_store, log_delta_m, log_records, runs_table_url

    cfg = TrackingConfig()
    for key in ("uri", "experiment", "artifacts"):
        if getattr(args, key):
            setattr(cfg, key, getattr(args, key))
    if args.tracking_command == "init":
        experiment_id = init_store(cfg)
        print(f"tracking store ready: {cfg.uri} (experiment {cfg.experiment!r}, id {experiment_id})")
        print(f"runs table, once `mlflow ui --backend-store-uri {cfg.uri}` runs: {runs_table_url(experiment_id)}")
        return 0
    missing = [str(p) for p in args.records if not p.is_file()]
    if missing:
        raise MtlbenchError(f"no run record at {', '.join(missing)}")
    runs = log_records(cfg, args.records)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"{len(runs)} run record(s) tracked in {cfg.uri} (experiment {cfg.experiment!r})")
    if args.delta_m is not None:
        updated = log_delta_m(cfg, runs, args.delta_m, args.reference)
        print(f"Delta_m (against {args.reference}) logged to {updated} run(s) that did not hold it")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mtlbench.config import parse_overrides
    from mtlbench.params import coerce, signature_params
    from mtlbench.registry import DATASETS

    cls = DATASETS.get(args.dataset)
    params = signature_params(cls)
    kwargs = {}
    given = {"dataset.root": args.root} if args.root is not None else {}
    for key, value in {**given, **parse_overrides(args.sets)}.items():
        name = key.removeprefix("dataset.")
        if name not in params:
            raise MtlbenchError(f"dataset {args.dataset!r} has no setting {name!r}; valid: {', '.join(sorted(params))}")
        kwargs[name] = coerce(key, value, params[name].annotation)
    dataset = cls(**kwargs)
    root = getattr(dataset, "root", args.root)
    problems, warnings = dataset.check()
    for line in warnings:
        print(f"warning: {line}")
    for line in problems:
        print(f"problem: {line}")
    if problems:
        print(f"{args.dataset} at {root}: {len(problems)} problem(s)")
        return 1
    print(f"{args.dataset} at {root}: ok")
    return 0


def cmd_machines(args: argparse.Namespace) -> int:
    """The same runs on two machines (mtlbench/machines.py)."""
    from mtlbench.aggregate import load_records
    from mtlbench.claims import load_claims
    from mtlbench.machines import compare_machines

    settings = AnalysisSettings.from_args(args)
    first, second = (load_records(sorted(Path(d).rglob("record.json"))) for d in (args.first, args.second))
    table = compare_machines(first, second, load_claims(args.claims), args.out, settings.reference, settings.alpha)
    print(
        f"{int(table.held_on_both.sum())} of {len(table)} claim rows held on both machines; "
        f"{int(table.within_machine_shift.sum())} rest on an effect within the machines' shift; tables in {args.out}"
    )
    return 0


def cmd_pipeline_stage(args: argparse.Namespace) -> int:
    from mtlbench import pipeline

    settings = AnalysisSettings.from_args(args)
    if args.command == "aggregate":
        mixed = args.allow_mixed_configs
        line = pipeline.analyse(
            args.records,
            args.out,
            settings,
            mixed,
            args.claims,
            args.step_rounds,
            args.benchmark,
            args.cores,
            args.robustness,
        )
        print(f"tables in {args.out}" + (f"; claims: {line}" if args.claims else ""))
    elif args.command == "bench":
        from mtlbench.bench import run_benchmarks
        from mtlbench.bench_wins import run_cpu_wins

        torch_threads = __import__("torch").get_num_threads()
        tables = run_benchmarks(args.out, args.rounds, tuple(args.tasks))
        print(f"benchmarks ({torch_threads} thread(s)) in {args.out}:")
        print(tables["step_cost"].round(4).to_string(index=False))
        print(tables["growth"].round(2).to_string(index=False))
        print(run_cpu_wins(args.out, args.rounds).round(4).to_string(index=False))
    elif args.command == "report-tables":
        from mtlbench.report_tables import write_csv_pages, write_report_tables

        pages = write_report_tables(args.tables, args.out, settings) if args.tables else []
        pages += write_csv_pages({k: Path(v) for k, v in (item.split("=", 1) for item in args.extra)}, args.out)
        print(f"{len(pages)} report pages in {args.out}")
    else:
        pipeline.draw_figures(args.records, args.tables, args.out, settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "train": cmd_train,
        "list": cmd_list,
        "tracking": cmd_tracking,
        "data": cmd_data,
        "aggregate": cmd_pipeline_stage,
        "bench": cmd_pipeline_stage,
        "machines": cmd_machines,
        "figures": cmd_pipeline_stage,
        "report-tables": cmd_pipeline_stage,
    }[args.command]
    try:
        return handler(args)
    except MtlbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(
            f"error: no permission to write {exc.filename or 'a file'} ({exc.strerror}); choose a writable "
            f"folder (--out, or `results:` in the pipeline's config)",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:  # a read-only file system, a full disk, a missing folder
        print(f"error: {exc.strerror or exc} ({exc.filename or 'no file name'})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
