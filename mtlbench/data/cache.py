"""Datasets built once: in memory for the runs of one process, on disk between processes.

A dataset whose construction costs time (MultiMNIST's pairing and resizing) stores its splits as tensors in a
cache folder (`MTLBENCH_CACHE`, default ~/.cache/mtlbench/datasets), under a key made of everything the
result depends on: the provider's settings, the data seed, a fingerprint of the source files, and the source
code of the provider's module (editing the construction invalidates its entries). Files are written to a
unique temporary name and renamed into place, so jobs that start at once never read half a file; two jobs
that build the same entry both write it, and either file is the same.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

Tensors = dict[str, Any]


def cache_dir() -> Path:
    return Path(os.environ.get("MTLBENCH_CACHE") or Path.home() / ".cache" / "mtlbench" / "datasets")


def cache_key(owner: object, parts: dict[str, Any]) -> str:
    module = sys.modules[type(owner).__module__]
    blob = json.dumps({"parts": parts, "code": inspect.getsource(module)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def disk_cached(owner: object, name: str, parts: dict[str, Any], build: Callable[[], Tensors]) -> Tensors:
    """`build()` once per key: later calls (any process) load the tensors it returned."""
    path = cache_dir() / f"{name}-{cache_key(owner, parts)}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - a damaged entry is rebuilt, never trusted
        print(
            f"warning: dataset cache entry {path} is unreadable ({type(exc).__name__}); rebuilding it", file=sys.stderr
        )
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full cache folder costs time, not the run
        print(
            f"warning: cannot write the dataset cache {path} ({exc.strerror}); building it each time", file=sys.stderr
        )
    return data


def file_fingerprint(paths: list[Path]) -> list[tuple[str, int, int]]:
    """Name, size and modification time of source files: a replaced file changes the key."""
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(paths) if p.is_file()]
