"""The run record: one JSON per run, everything aggregation needs (it never re-trains or reads MLflow)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import mtlbench

RECORD_KEYS = (
    "dataset", "method", "seed", "data_seed", "config", "config_hash", "status", "selected_epoch",
    "epochs_completed", "metrics", "directions", "timing", "params", "peak_memory_mb", "peak_memory_kind",
    "versions", "git_commit", "device", "method_state", "mlflow_run_id",
)


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "mtlbench": mtlbench.__version__}


def git_commit() -> str:
    """Commit of the suite's source tree (with `-dirty` when it has uncommitted changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
