"""Cluster executors' view of the training jobs (issue 26.4), through the real executor plugins, without a cluster.

The Kubernetes test runs the real `snakemake --executor kubernetes` against a stand-in Kubernetes API server on
localhost, which records the Job each submission posts and answers that it failed. The plugin's own code builds
the pod spec from the job's resources, so the test sees exactly what a cluster would receive. The plugin needs a
default storage provider (snakemake-storage-plugin-fs, which copies with rsync). CI installs all three
(.ci/run sets MTLBENCH_REQUIRE_EXECUTORS=1, so there a missing one fails); elsewhere the test skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec

import pytest
import yaml

from tests.conftest import ROOT

MISSING = [
    name
    for name, present in [
        ("snakemake-executor-plugin-kubernetes", find_spec("snakemake_executor_plugin_kubernetes")),
        ("snakemake-storage-plugin-fs", find_spec("snakemake_storage_plugin_fs")),
        ("rsync", shutil.which("rsync")),
    ]
    if not present
]
if MISSING and os.environ.get("MTLBENCH_REQUIRE_EXECUTORS") != "1":
    pytest.skip(f"not installed here: {', '.join(MISSING)}", allow_module_level=True)


class FakeKubernetesApi(BaseHTTPRequestHandler):
    """Accepts every object posted, keeps the Jobs, and reports every Job as failed (so Snakemake stops)."""

    jobs: list[dict] = []

    def _answer(self, body: dict, code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/jobs"):
            self.jobs.append(body)
        self._answer(body, 201)

    def do_GET(self):  # noqa: N802
        if "/jobs/" in self.path:
            self._answer({"kind": "Job", "apiVersion": "batch/v1", "metadata": {}, "status": {"failed": 1}})
        else:
            self._answer({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})

    def do_DELETE(self):  # noqa: N802
        self._answer({})

    def log_message(self, *args):
        pass


@pytest.fixture
def kubernetes_api(tmp_path):
    """A stand-in API server on a free port, and a kubeconfig pointing at it."""
    FakeKubernetesApi.jobs = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKubernetesApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "user", "user": {"token": "none"}}],
                "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "user"}}],
                "current-context": "stand-in",
            }
        )
    )
    yield kubeconfig, FakeKubernetesApi.jobs
    server.shutdown()


def _submitted_pods(jobs: list[dict]) -> dict[str, dict]:
    """The pod spec of each submitted Job, by the dataset its training job trains."""
    pods = {}
    for job in jobs:
        pod = job["spec"]["template"]["spec"]
        command = pod["containers"][0]["args"][-1]
        dataset = command.split("dataset=")[1].split(",")[0]
        pods[dataset] = pod
    return pods


def test_kubernetes_jobs_ask_for_a_gpu_only_when_their_dataset_wants_one(tmp_path, kubernetes_api):
    """Before: every training job declared `gpu` (0 included) without a manufacturer, and the plugin refused it."""
    kubeconfig, jobs = kubernetes_api
    config = {
        "datasets": ["synthetic_relations", "multimnist"],
        "methods": ["stl", "hps"],
        "seeds": [0],
        "tracking": {"enabled": False},
        "efficiency": {"benchmark": False},
        "resources": {
            "train": {"threads": 1, "mem_mb": 1000, "runtime": 5, "gpu": 0},
            "datasets": {"multimnist": {"gpu": 2}},
        },
    }
    (tmp_path / "k8s.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/runs/{d}/stl/seed0/record.json" for d in config["datasets"]]
    result = subprocess.run(
        [
            *[sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", "k8s.yaml"],
            *["--executor", "kubernetes", "--jobs", "2", "--container-image", "mtlbench:test"],
            *["--default-storage-provider", "fs", "--default-storage-prefix", str(tmp_path / "store"), *targets],
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    assert "GPU requested but no manufacturer" not in result.stdout + result.stderr
    pods = _submitted_pods(jobs)
    assert sorted(pods) == ["multimnist", "synthetic_relations"], result.stderr[-3000:]
    cpu_only, gpu = pods["synthetic_relations"], pods["multimnist"]
    assert not any("gpu" in name for name in cpu_only["containers"][0]["resources"]["requests"])
    assert not cpu_only.get("tolerations")
    assert gpu["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert [t["key"] for t in gpu["tolerations"]] == ["nvidia.com/gpu"]


def test_every_executors_gpu_names_follow_the_config(tmp_path):
    """`gpu` + `gpu_manufacturer` (SLURM, Kubernetes), `nvidia_gpu` (Google Batch): all or none, per dataset."""
    config = {
        "datasets": ["synthetic_relations", "multimnist"],
        "methods": ["stl", "hps"],
        "seeds": [0],
        "tracking": {"enabled": False},
        "efficiency": {"benchmark": False},
        "resources": {"train": {"gpu": 1, "gpu_manufacturer": "amd"}, "datasets": {"synthetic_relations": {"gpu": 0}}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--configfile", "c.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resources = dict(
        re.findall(r"wildcards: group=runs, dataset=(\w+), method=stl, seed=0\n.*\n\s+resources: (.*)", result.stdout)
    )
    assert "gpu" not in resources["synthetic_relations"]
    assert "gpu=1, gpu_manufacturer=amd" in resources["multimnist"]
    assert "nvidia_gpu" not in resources["multimnist"]  # Google Batch's count is for NVIDIA accelerators
