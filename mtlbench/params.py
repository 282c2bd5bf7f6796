"""Typed hyperparameters read from constructor signatures.

A component's hyperparameters are its constructor's keyword arguments with type hints and defaults (TorchJD
style). The config layer reads them from here to fill defaults, to check `--set key=value` overrides and to
build the JSON schema, so a parameter is declared once, in the component's own file.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import yaml

from mtlbench.errors import MtlbenchError


@dataclass(frozen=True)
class Interval:
    """A number's domain, declared with its type: `Annotated[float, Interval(low=0, low_open=True)]`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        parts = [f"{'>' if self.low_open else '>='} {_number(self.low)}"] if self.low is not None else []
        parts += [f"{'<' if self.high_open else '<='} {_number(self.high)}"] if self.high is not None else []
        return " and ".join(parts)


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


POSITIVE = Interval(low=0, low_open=True)
NON_NEGATIVE = Interval(low=0)
SEED = Interval(low=0, high=2**31 - 1)  # torch, numpy and the loop's per-epoch seeds derived from it


def split_annotation(tp: Any) -> tuple[Any, list[Interval]]:
    """The type without its `Annotated` extras, and the domains declared there."""
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return base, [e for e in extras if isinstance(e, Interval)]
    return tp, []


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    default: Any

    def type_name(self) -> str:
        return describe_type(self.annotation)


def signature_params(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Param]:
    """The keyword parameters (with defaults) of a class's ``__init__`` or of a function."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    hints = typing.get_type_hints(target, include_extras=True)
    params: dict[str, Param] = {}
    for name, p in inspect.signature(target).parameters.items():
        if name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            continue
        params[name] = Param(name, hints.get(name, type(p.default)), p.default)
    return params


def describe_type(tp: Any) -> str:
    tp, domains = split_annotation(tp)
    if domains:
        return describe_type(tp) + " " + " and ".join(d.describe() for d in domains)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {describe_type(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def conforms(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return (
            isinstance(value, list | tuple) and all(conforms(v, args[0]) for v in value)
            if args
            else isinstance(value, list | tuple)
        )
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a value (a string from the command line is parsed as YAML) against its declared type and domain."""
    tp, domains = split_annotation(tp)
    value = _coerce_type(key, value, tp)
    for domain in domains:
        if isinstance(value, int | float) and not domain.contains(value):
            raise MtlbenchError(f"{key}: must be {domain.describe()}, got {value!r}")
    return value


def _coerce_type(key: str, value: Any, tp: Any) -> Any:
    if isinstance(value, str) and re.match(r"\s*[-+]?0[xXoObB]", value) and not _is_str_type(tp):
        raise MtlbenchError(f"{key}: write numbers in decimal, got {value!r}")  # YAML reads 0x10 as 16
    if isinstance(value, str) and not _is_str_type(tp):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    value = _as_float_if_spelled(value, tp)
    if not conforms(value, tp):
        raise MtlbenchError(f"{key}: expected {describe_type(tp)}, got {value!r}")
    if tp is float and isinstance(value, int):
        value = float(value)
    if typing.get_origin(tp) in (list, tuple):
        value = list(value)
    return value


def _accepts_float(tp: Any) -> bool:
    if tp is float:
        return True
    return typing.get_origin(tp) in (Union, types.UnionType) and any(_accepts_float(a) for a in typing.get_args(tp))


def _as_float_if_spelled(value: Any, tp: Any) -> Any:
    """YAML 1.1 reads `3e-4` and `1E5` (no dot) as strings; a person means a number: every spelling Python's
    float() reads (`3e-4`, `1E5`, `.5`, `1_000.0`) is a float where the type wants one (not inf or nan)."""
    if isinstance(value, str) and _accepts_float(tp) and not conforms(value, tp):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return number if number == number and abs(number) != float("inf") else value
    if isinstance(value, list) and typing.get_origin(tp) in (list, tuple) and typing.get_args(tp):
        return [_as_float_if_spelled(v, typing.get_args(tp)[0]) for v in value]
    return value


def _is_str_type(tp: Any) -> bool:
    if tp is str:
        return True
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return False
