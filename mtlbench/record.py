"""The run record: one JSON per run, everything aggregation needs (it never re-trains or reads MLflow)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import mtlbench

RECORD_KEYS = (
    "dataset",
    "method",
    "seed",
    "data_seed",
    "config",
    "config_hash",
    "status",
    "selected_epoch",
    "epochs_completed",
    "metrics",
    "directions",
    "timing",
    "params",
    "peak_memory_mb",
    "peak_memory_kind",
    "versions",
    "git_commit",
    "device",
    "host",
    "method_state",
    "mlflow_run_id",
    "schedule",
)


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included); 0 where unknown."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return max(0.0, time.time() - (boot + start))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0


def cpu_model() -> str:
    """The CPU's model name (results in float32 can differ between CPU kinds: see results/reference/README.md)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, object]:
    """What besides the config decides a CPU run's last bits: thread count, CPU model and math backends."""
    return {
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(),
    }


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "mtlbench": mtlbench.__version__}


def git_commit() -> str:
    """Commit of the suite's source tree (with `-dirty` when it has uncommitted changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n"


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json_text(data))


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
