"""Helpers for real datasets on disk: presence checks, and published checksums as warnings only.

torchvision's CIFAR and CelebA classes refuse files whose MD5 differs from the published one; re-encoded or
repacked copies are common, so the suite's subclasses check presence only (the parsing code stays
torchvision's own) and `mtlbench data check` reports a differing checksum as a warning."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mtlbench.errors import MtlbenchError


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(files: list[tuple[Path, str | None]], layout: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) for (path, published md5 or None) pairs; a missing file is a problem."""
    problems = [f"missing {p}" for p, _ in files if not p.exists()]
    warnings = [
        f"{p}: checksum differs from the published one (a re-encoded copy?)"
        for p, digest in files
        if digest and p.exists() and p.is_file() and md5(p) != digest
    ]
    if problems:
        problems.append(f"expected {layout}")
    return problems, warnings


def inside(root: Path, relative: str, named_in: str) -> Path:
    """`root / relative`, refused when it leads outside `root` (an absolute path, `..`, a link out): a data file
    names files of its own dataset, never others on the machine."""
    path = (root / relative).resolve()
    if not path.is_relative_to(Path(root).resolve()):
        raise MtlbenchError(f"{named_in}: {relative!r} lies outside the dataset folder {root}")
    return path
