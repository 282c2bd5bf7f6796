"""Reading a claims file: every problem found at once, one line each naming the claim, before any training.

A claims file is user data: it is parsed with `yaml.safe_load` only (no tags that build objects), limited in
size and nesting, and every field is checked for its type and its domain. Numbers written in a form PyYAML
reads as text (`5e-1`) are taken as the numbers they spell.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from mtlbench.errors import MtlbenchError

MAX_BYTES = 1_000_000
TEXT_FIELDS = ("id", "claim", "source", "test", "method", "baseline", "metric", "scope_note")
LIST_FIELDS = ("datasets", "scope", "not_in_scope")
NUMBER_FIELDS = ("margin", "tolerance")
REQUIRED = ("id", "claim", "source", "test", "method")


def parse_user_yaml(path: Path, what: str = "claims file") -> Any:
    """A user's YAML file (a claims file, a protocols file) as plain data: `yaml.safe_load` only, limited in size
    and nesting; any problem ends in one message naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MtlbenchError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise MtlbenchError(f"{path}: {len(raw):,} bytes; a {what} is at most {MAX_BYTES:,}")
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MtlbenchError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise MtlbenchError(f"{path}: nested too deeply to be a {what}") from None
    except yaml.YAMLError as exc:
        raise MtlbenchError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def _number(value: Any) -> float | None:
    """A finite number, also when written as text (`5e-1`); None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, (int, float, str)) else None
    except (ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _field_problems(entry: dict[str, Any]) -> list[str]:
    problems = [f"missing `{k}`" for k in REQUIRED if k not in entry]
    for key in TEXT_FIELDS:
        if key in entry and not (isinstance(entry[key], str) and entry[key].strip()):
            problems.append(f"`{key}` must be non-empty text, got {_shape(entry[key])}")
    for key in LIST_FIELDS:
        value = entry.get(key, ["all"] if key != "not_in_scope" else [])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            problems.append(f"`{key}` must be a dataset name or a list of them, got {_shape(value)}")
        elif not items and key != "not_in_scope":
            problems.append(f"`{key}` is empty; leave it out for every dataset")
    for key in NUMBER_FIELDS:
        if key in entry and (_number(entry[key]) is None or _number(entry[key]) < 0):  # type: ignore[operator]
            problems.append(f"`{key}` must be a number >= 0, got {entry[key]!r:.40}")
    return problems


def _shape(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.40}" if not isinstance(value, (dict, list)) else type(value).__name__


def _metric_problem(metric: str, known_metrics: set[str] | None) -> str | None:
    """`delta_m`, `tasks`, `tasks:m1,m2` or `task.metric`; with `known_metrics`, every metric named must be one."""
    if metric in ("delta_m", "tasks"):
        return None
    if metric.startswith("tasks:"):
        named = [m.strip() for m in metric.partition(":")[2].split(",")]
    elif "." in metric and all(metric.partition(".")[::2]):
        named = [metric.partition(".")[2]]
    else:
        return f"`metric` {metric!r} is none of delta_m, tasks, tasks:m1,m2 or task.metric"
    unknown = [m for m in named if not m or (known_metrics is not None and m not in known_metrics)]
    if unknown:
        valid = f"; valid: {', '.join(sorted(known_metrics))}" if known_metrics else ""
        return f"`metric` {metric!r} names no metric the tasks have ({', '.join(map(repr, unknown))}){valid}"
    return None


def _unknown_method(name: Any, known: set[str]) -> bool:
    """A method name that is neither registered nor a user's `package.module:Name`."""
    return isinstance(name, str) and bool(name) and name not in known and ":" not in name


def _meaning_problems(
    entry: dict[str, Any],
    known_methods: set[str] | None,
    known_metrics: set[str] | None,
    known_datasets: set[str] | None,
) -> list[str]:
    from mtlbench.claims import TESTS

    problems = []
    test, method, baseline = entry.get("test"), entry.get("method"), entry.get("baseline", "")
    if isinstance(test, str) and test not in TESTS:
        problems.append(f"unknown test {test!r}; valid: {', '.join(TESTS)}")
    if test != "relations" and not baseline:
        problems.append(f"test {test!r} needs a `baseline`")
    if baseline and baseline == method:
        problems.append(f"`baseline` is the method itself ({method!r})")
    for key in ("method", "baseline"):
        name = entry.get(key)
        if known_methods is not None and _unknown_method(name, known_methods):
            problems.append(f"`{key}` {name!r} is no registered method; valid: {', '.join(sorted(known_methods))}")
    if isinstance(entry.get("metric"), str):
        problem = _metric_problem(entry["metric"], known_metrics)
        problems += [problem] if problem else []
    return problems + _dataset_problems(entry, known_datasets)


def _dataset_problems(entry: dict[str, Any], known: set[str] | None) -> list[str]:
    """Dataset names in `datasets`, `scope` and `not_in_scope` that no dataset has (a typo scopes nothing)."""
    if known is None:
        return []
    problems = []
    for key in LIST_FIELDS:
        value = entry.get(key, [])
        unknown = [v for v in ([value] if isinstance(value, str) else value) if v != "all" and v not in known]
        if unknown:
            problems.append(
                f"`{key}` names {', '.join(map(repr, unknown))}, which no dataset has; valid: all, "
                f"{', '.join(sorted(known))}"
            )
    return problems


def claim_problems(
    entries: Any,
    known_methods: set[str] | None = None,
    known_metrics: set[str] | None = None,
    known_datasets: set[str] | None = None,
) -> list[str]:
    """Every problem of a parsed claims file, one line each, naming the claim (by id, else by position)."""
    from mtlbench.claims import Claim

    if entries is None:
        return []
    if not isinstance(entries, list):
        return [f"the file must be a list of claims, got {_shape(entries)}"]
    valid, seen, problems = {f.name for f in fields(Claim)}, set(), []
    for k, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            problems.append(f"claim {k}: must be a mapping of fields, got {_shape(entry)}")
            continue
        name = f"claim {entry['id']!r}" if isinstance(entry.get("id"), str) else f"claim {k}"
        unknown = sorted(map(str, set(entry) - valid))
        found = [f"unknown keys {unknown}; valid: {sorted(valid)}"] if unknown else []
        found += _field_problems(entry)
        found += _meaning_problems(entry, known_methods, known_metrics, known_datasets) if not found else []
        identity = entry.get("id") if isinstance(entry.get("id"), str) else None
        if identity is not None and identity in seen:
            found.append("the id is used by an earlier claim")
        seen.add(identity)
        problems += [f"{name}: {p}" for p in found]
    return problems


def read_claims(
    path: Path,
    known_methods: set[str] | None = None,
    known_metrics: set[str] | None = None,
    known_datasets: set[str] | None = None,
) -> list[dict[str, Any]]:
    """The entries of a claims file with their lists as tuples and numbers as floats, or one error listing every
    problem of the file."""
    entries = parse_user_yaml(path)
    problems = claim_problems(entries, known_methods, known_metrics, known_datasets)
    if problems:
        raise MtlbenchError(f"{path}: {len(problems)} problem(s) in the claims file:\n  " + "\n  ".join(problems))
    return [_normalised(e) for e in entries or []]


def _normalised(entry: dict[str, Any]) -> dict[str, Any]:
    lists = {k: tuple([entry[k]] if isinstance(entry[k], str) else entry[k]) for k in LIST_FIELDS if k in entry}
    numbers = {k: _number(entry[k]) for k in NUMBER_FIELDS if k in entry}
    return {**entry, **lists, **numbers}
