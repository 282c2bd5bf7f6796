"""The real `snakemake` command line on tiny configs, in temporary directories."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mtlbench.record import RunRecord
from tests.conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = {
    "datasets": ["synthetic_relations", "multimnist"],
    "methods": ["stl", "hps"],
    "seeds": [0, 1],
    "overrides": {
        "common": {"train.epochs": 1},
        "datasets": {
            "multimnist": {"dataset.n_train": 256, "dataset.n_val": 64, "dataset.n_test": 64, "train.batch_size": 64}
        },
    },
    "efficiency": {"rounds": 3},  # the benchmark runs, briefly
}


def snakemake(
    workdir: Path, *args: str, config: dict | None = None, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if config is not None:
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(path)]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=workdir, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    result = snakemake(workdir, config=TINY)
    assert result.returncode == 0, result.stderr[-4000:]
    (workdir / "terminal.txt").write_text(result.stderr)
    return workdir


def test_the_terminal_names_each_finished_seed_and_the_time_left(tiny_run):
    """Issue 26.1: progress was counted per (dataset, method) job only; a job of 5 seeds was silent for 20 min."""
    lines = [line for line in (tiny_run / "terminal.txt").read_text().splitlines() if "selected epoch" in line]
    runs = [f"{d}/{m} seed {s}" for d in TINY["datasets"] for m in TINY["methods"] for s in TINY["seeds"]]
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines) == sorted(runs)
    assert all(re.search(r"; \d+ of 8 runs done", line) for line in lines)
    assert sum("8 of 8 runs done (training finished)" in line for line in lines) == 1


def test_tables_have_a_row_per_method_and_seed(tiny_run):
    tables = tiny_run / "results" / "tables"
    metrics = pd.read_csv(tables / "metrics.csv")
    assert list(metrics.columns)[:8] == [
        "dataset",
        "method",
        "seed",
        "split",
        "task",
        "metric",
        "value",
        "higher_is_better",
    ]
    runs = metrics[["dataset", "method", "seed"]].drop_duplicates()
    assert len(runs) == 2 * 2 * 2
    dm = metrics[metrics.metric == "delta_m"]
    assert (dm[dm.method == "stl"].value == 0).all() and len(dm) == 8
    sig = pd.read_csv(tables / "significance.csv")
    for column in ("t_p", "wilcoxon_p", "t_p_holm", "wilcoxon_p_holm"):
        values = sig[column].dropna()
        assert values.between(0, 1).all()
    assert sig.wilcoxon_note.str.contains("cannot reach").all()  # n = 2 seeds
    summary = pd.read_csv(tables / "summary.csv")
    assert (summary.n == 2).all()
    assert {"dataset", "method", "n_worse"} <= set(pd.read_csv(tables / "safeness.csv").columns)
    eff = pd.read_csv(tables / "efficiency.csv")
    assert (eff[eff.method == "hps"].params_total_ratio == 1).all()
    assert "\\toprule" in (tables / "summary.tex").read_text()
    assert "No dataset of this run has published numbers" in (tables / "published.md").read_text()
    for name in ("metrics_ci", "learning_curves", "relations", "gates", "cd_diagram", "time_vs_delta_m"):
        assert (tiny_run / "results" / "figures" / f"{name}.png").stat().st_size > 1000


def test_every_run_is_in_one_mlflow_database(tiny_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_run / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mtlbench")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    logged = json.loads((tiny_run / "results" / "mlflow_runs.json").read_text())
    assert sorted(logged.values()) == sorted(r.info.run_id for r in runs)
    # each run's Delta_m (issue 16.7), as the tables have it; STL against itself is 0
    table = pd.read_csv(tiny_run / "results" / "tables" / "delta_m.csv").set_index(["dataset", "method", "seed"])
    by_id = {r.info.run_id: r for r in runs}
    for path, run_id in logged.items():
        record = RunRecord.read(Path(path if os.path.isabs(path) else tiny_run / path))
        run = by_id[run_id]
        expected = table.delta_m[(record.dataset, record.method, record.seed)]
        assert run.data.metrics["test.delta_m"] == pytest.approx(expected)
        assert run.data.tags["delta_m.reference"] == "stl"
        assert expected == 0 or record.method != "stl"


def test_report_collects_tables_and_figures(tiny_run):
    result = snakemake(tiny_run, "--report", "results/report.html", config=TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tiny_run / "results" / "report.html").stat().st_size > 10_000
    # a category named "Statistics" collided with Snakemake's own panel: 11 warnings, a System Message per caption
    assert "Duplicate explicit target" not in result.stderr + result.stdout
    assert "System Message" not in (tiny_run / "results" / "report.html").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_text(page: Path) -> str:
    """The page's text after its scripts ran, in a real headless browser (Snakemake's report is a React app)."""
    if CHROMIUM is None:
        if os.environ.get("MTLBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (CI installs it)")
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", result.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_report_front_page_shows_claims_and_leaderboards_in_a_browser(tiny_run):
    """Issue 16.2: the tables were `data:` links that Chromium blocks; the front page now renders the claims
    table and one leaderboard per dataset, ranked by Delta_m, as text the browser shows."""
    report = tiny_run / "results" / "report.html"
    if not report.exists():
        assert snakemake(tiny_run, "--report", "results/report.html", config=TINY).returncode == 0
    text = rendered_text(report)
    assert "System Message" not in text
    claims = pd.read_csv(tiny_run / "results" / "tables" / "claims.csv")
    assert len(claims) and text.index("Claims") < text.index("Leaderboards")
    for row in claims.itertuples():
        assert f"{row.verdict} {row.claim} {row.dataset} {row.test}" in text
    board = pd.read_csv(tiny_run / "results" / "tables" / "leaderboard.csv")
    for dataset, rows in board.groupby("dataset"):
        ranked = rows.sort_values("mean_delta_m").method.tolist()
        assert f"Leaderboard: {dataset}" in text
        shown = text[text.index(f"Leaderboard: {dataset}") :]
        positions = [shown.index(f" {r} {m} ") for r, m in enumerate(ranked, start=1)]
        assert positions == sorted(positions)


def test_deleting_one_record_reruns_only_its_job_and_restores_it(tiny_run):
    """One job trains all seeds of a (dataset, method): deleting one record reruns that job alone; Snakemake
    removes the job's other records first, and every finished seed comes back from its final checkpoint, byte
    for byte, without training, so MLflow tracking (by record hash) logs no run twice."""
    runs = sorted((tiny_run / "results" / "runs").rglob("record.json"))
    target = runs[0]
    before = {p: p.read_bytes() for p in runs}
    untouched = {p: p.stat().st_mtime_ns for p in runs if p.parent.parent != target.parent.parent}
    logged_before = json.loads((tiny_run / "results" / "mlflow_runs.json").read_text())
    target.unlink()
    dry = snakemake(tiny_run, "-n", config=TINY)
    assert re.search(r"train_run\s+1\b", dry.stdout), dry.stdout[-3000:]
    result = snakemake(tiny_run, config=TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p: p.read_bytes() for p in runs} == before
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # other (dataset, method) jobs: not run
    assert json.loads((tiny_run / "results" / "mlflow_runs.json").read_text()) == logged_before


def test_interrupted_pipeline_completes_when_rerun(tmp_path):
    config = {
        **TINY,
        "datasets": ["multimnist"],
        "methods": ["hps"],
        "seeds": [0],
        "statistics": {"baselines": ["hps"], "reference": "hps"},
        # long enough that the job is still running when Ctrl-C arrives; a checkpoint after every epoch
        "overrides": {
            "common": {"train.epochs": 40, "train.checkpoint_every_s": 0},
            "datasets": {"multimnist": {"dataset.n_train": 512, "train.batch_size": 64}},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        "--configfile",
        str(tmp_path / "config.yaml"),
    ]
    # a terminal's Ctrl-C: SIGINT has its default action there, even when this test runs under a runner
    # that started it in the background (which leaves SIGINT ignored, and children inherit that)
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    ckpt = tmp_path / "results" / "runs" / "multimnist" / "hps" / "seed0" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches snakemake and its job, as in a terminal
    proc.wait(timeout=120)
    assert not (ckpt.parent / "record.json").exists(), "the job must have been interrupted"
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (ckpt.parent / "record.json").exists()
    assert (tmp_path / "results" / "tables" / "summary.csv").exists()


def test_lint_reports_only_environment_hints():
    result = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    bullets = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip().startswith("* ")]
    assert bullets, "lint printed nothing we could check"
    assert all("conda environment or container" in b for b in bullets), bullets


def test_the_hashed_thread_count_is_the_configured_one_whatever_the_cores(tmp_path):
    """Snakemake lowers a job's {threads} to --cores; the config (and its hash) must not follow."""
    config = {**TINY, "resources": {"train": {"threads": 2, "mem_mb": 1000, "runtime": 5, "gpu": 0}}}
    result = snakemake(tmp_path, "-n", "-p", "--cores", "1", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line for line in result.stdout.splitlines() if "mtlbench train" in line]
    assert commands and all("--set train.threads=2" in c and "OMP_NUM_THREADS=1" in c for c in commands)


def test_slurm_profile_dry_run(tmp_path):
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--workflow-profile", "workflow/profiles/slurm"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "MTLBENCH_SLURM_PARTITION": "debug"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_run" in result.stdout


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"seeds": "five"}, "seeds"),
        ({"methods": ["hps", "hsp"]}, "unknown method 'hsp'"),
        ({"overrides": {"common": {"train.epoch": 3}}}, "unknown config key 'train.epoch'"),
        ({"statistics": {"alpha": 2}}, "alpha"),
        ({"seeds": [0, 0, 1]}, "non-unique"),  # a repeated seed would count one run twice in every paired test
        ({"overrides": {"methods": {"hsp": {"train.lr": 0.1}}}}, "overrides.methods names 'hsp', which no method"),
        ({"overrides": {"datasets": {"mnist": {"train.lr": 0.1}}}}, "overrides.datasets names 'mnist'"),
        ({"overrides": {"runs": {"multimnist/hsp": {"train.lr": 0.1}}}}, "overrides.runs key 'multimnist/hsp'"),
        ({"methods": ["hps", "srdml"]}, "statistics compares against stl, which `methods` does not train"),
        ({"statistics": {"baselines": ["hps", "stl; touch pwned"]}}, "does not match"),
        ({"methods": ["stl", "hps", "x; touch pwned"]}, "does not match"),
        ({"overrides": {"common": {"train.device": "tpu"}}}, "train.device='tpu'"),
    ],
)
def test_bad_config_names_the_key(tmp_path, config, fragment):
    result = snakemake(tmp_path, "-n", config=config)
    assert result.returncode != 0
    assert fragment in result.stderr + result.stdout
    assert not (tmp_path / "pwned").exists()


def test_a_failed_training_job_shows_its_cause_on_the_terminal(tmp_path):
    """Issue 26.2: a checkpoint clash showed as 'message: None' with the cause only in a log file."""
    from mtlbench.config import resolve_config
    from mtlbench.training import train

    config = {
        **TINY,
        "datasets": ["synthetic_relations"],
        "methods": ["stl", "hps"],
        "seeds": [0],
        "tracking": {"enabled": False},
        "efficiency": {"benchmark": False},
    }
    out = tmp_path / "results" / "runs" / "synthetic_relations" / "stl" / "seed0"
    other = resolve_config("synthetic_relations", "stl", 0, {"train.epochs": 2, "tracking.enabled": False})
    train(other, out)
    (out / "record.json").unlink()  # a checkpoint of another config stays behind
    result = snakemake(tmp_path, config=config)
    assert result.returncode != 0
    assert "error: results/runs/synthetic_relations/stl/seed0/checkpoint.pt belongs to a run with another config" in (
        result.stderr
    )


def test_a_bad_claims_file_stops_the_workflow_before_any_job(tmp_path):
    """Issue 26.7: a method typo in a claims file silently lost the claim (0 rows, rc 0)."""
    claims = tmp_path / "my_claims.yaml"
    claims.write_text("- {id: mine, claim: x, source: y, test: superior, method: srdml, baseline: hsp}\n")
    result = snakemake(tmp_path, "-n", config={"claims": str(claims)})
    assert result.returncode != 0
    assert "claim 'mine': `baseline` 'hsp' is no registered method" in result.stderr + result.stdout


def _doc_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def test_the_documented_user_method_runs_through_the_pipeline(tmp_path):
    """docs/adding-a-method.md as a user follows it: the method file, "Try it once" into its own folder, then
    the pipeline with the page's config (its own results folder); no warning from the example's code."""
    doc = ROOT / "docs" / "adding-a-method.md"
    package = tmp_path / "mymethods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "uncertainty.py").write_text(next(b for b in _doc_blocks(doc, "python") if "Uncertainty" in b))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    try_once = next(b for b in _doc_blocks(doc, "bash") if "mtlbench train" in b).strip()
    argv = try_once.removeprefix("PYTHONPATH=. ").split()
    tried = subprocess.run(
        [sys.executable, "-m", "mtlbench", *argv[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert tried.returncode == 0, tried.stderr[-3000:]
    assert "requires_grad" not in tried.stderr and "Warning" not in tried.stderr, tried.stderr[-2000:]
    out = Path(argv[argv.index("--out") + 1])
    record = RunRecord.read(tmp_path / out / "record.json")
    assert set(record.method_state["task_weights"]) == set(record.directions)
    assert not (tmp_path / "results").exists()  # the try did not write where the pipeline reads

    mine = yaml.safe_load(next(b for b in _doc_blocks(doc, "yaml") if "UNCERTAINTY" in b))
    config = {**TINY, **mine, "datasets": ["synthetic_relations"], "methods": ["stl", "hps", *mine["methods"][-1:]]}
    result = snakemake(tmp_path, config=config, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / mine["results"]
    sig = pd.read_csv(results / "tables" / "significance.csv")
    assert "mymethods.uncertainty:UNCERTAINTY" in set(sig.method)
    assert (
        results / "runs" / "synthetic_relations" / "mymethods.uncertainty_UNCERTAINTY" / "seed1" / "record.json"
    ).exists()
    assert (tmp_path / mine["tracking"]["uri"].removeprefix("sqlite:///")).is_file()
    logs = list(
        (tmp_path / "logs" / "train_run" / "runs" / "synthetic_relations" / "mymethods.uncertainty_UNCERTAINTY").glob(
            "*.log"
        )
    )
    assert logs and not any("requires_grad" in log.read_text() for log in logs)


def test_paper_config_dry_run_has_one_job_per_dataset_method_seed():
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    expected = len(paper["datasets"]) * len(paper["methods"]) * len(paper["seeds"])
    # --printshellcmds: the default profile keeps the terminal quiet and hides them
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--printshellcmds", "--configfile", "config/paper.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--set train.device=auto" in result.stdout
    # one job per (dataset, method, seed) of the config's own runs; the robustness runs (the default config's
    # protocols and sweeps on synthetic_relations, issue 23) are jobs of their own under variants/
    runs = re.findall(r"wildcards: group=runs, dataset=(\w+), method=(\w+), seed=(\d+)", result.stdout)
    variants = re.findall(r"wildcards: group=variants/\S+, dataset=(\w+),", result.stdout)
    assert len(runs) == len(set(runs)) == expected and set(variants) == {"synthetic_relations"}
    assert re.search(rf"train_run\s+{expected + len(variants)}\b", result.stdout), result.stdout[-2000:]
    # resources per dataset (issue 16.8): the tiny synthetic runs ask for no GPU and little memory
    jobs = re.split(r"\n(?=rule |localrule )", result.stdout)
    synthetic = [j for j in jobs if j.startswith("rule train_run") and "group=runs, dataset=synthetic_relations" in j]
    images = [j for j in jobs if j.startswith("rule train_run") and "dataset=cifar_mtl" in j]
    assert len(synthetic) == len(paper["methods"]) * len(paper["seeds"]) and images
    # no GPU: no GPU resource at all (issue 26.4: Kubernetes refuses `gpu` without a manufacturer, even gpu=0)
    assert all("gpu" not in j and "mem_mb=2000" in j and "train.threads=1" in j for j in synthetic)
    assert all("gpu=1, gpu_manufacturer=nvidia, nvidia_gpu=1" in j and "mem_mb=16000" in j for j in images)


def test_a_dataset_missing_on_disk_stops_the_run_before_any_job(tmp_path):
    """Issue 16.8: the data check names what is missing and where it belongs; a dry run only warns."""
    config = {
        **TINY,
        "datasets": ["synthetic_relations", "office31"],
        "overrides": {**TINY["overrides"], "datasets": {"office31": {"dataset.root": str(tmp_path / "o31")}}},
    }
    planned = snakemake(tmp_path, "-n", config=config)
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "1 dataset(s) not on disk (office31)" in planned.stderr
    run = snakemake(tmp_path, config=config)
    assert run.returncode != 0
    assert f"missing domain folder {tmp_path / 'o31' / 'amazon'}" in run.stderr
    assert "no job was started" in run.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()
