"""Named methods: a registered combination of an architecture and an update rule with its paper defaults."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from mtlbench.errors import MtlbenchError
from mtlbench.registry import METHODS


@dataclass(frozen=True)
class MethodSpec:
    """`dataset_overrides` holds a method's per-dataset paper defaults as dotted keys ("rule.lam": 1.0)."""

    name: str
    description: str
    architecture: str
    update_rule: str = "equal_weights"
    arch_params: dict[str, Any] = field(default_factory=dict)
    rule_params: dict[str, Any] = field(default_factory=dict)
    train_params: dict[str, Any] = field(default_factory=dict)
    dataset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def register_method(spec: MethodSpec) -> MethodSpec:
    METHODS.add(spec.name, spec, spec.description)
    return spec


def rule_method(name: str, description: str, architecture: str = "hps", method_description: str | None = None):
    """Register an update rule and its method (the architecture, by default hard sharing, + the rule) under
    one name, given once here: the decorator sets the class's `name`."""
    from mtlbench.registry import UPDATE_RULES

    def decorator(cls):
        cls.name = name
        UPDATE_RULES.add(name, cls, description)
        register_method(MethodSpec(name, method_description or description, architecture, name))
        return cls

    return decorator


def get_method(name: str) -> MethodSpec:
    """A registered name, or ``package.module:Name`` naming a MethodSpec, an update-rule class (trained on
    hard sharing) or an architecture class (trained with equal weights)."""
    from mtlbench.architectures import MTLArchitecture
    from mtlbench.update_rules import UpdateRule

    obj = METHODS.get(name)  # an imported name is checked by METHODS.accepts below: nothing of it is called
    if isinstance(obj, MethodSpec):
        return obj
    # a bare class: the spec names it by its import path, which the rule and architecture registries resolve
    # the same way (looking a name up registers nothing)
    if inspect.isclass(obj) and issubclass(obj, UpdateRule):
        return MethodSpec(name, obj.__doc__ or name, "hps", name)
    if inspect.isclass(obj) and issubclass(obj, MTLArchitecture):
        return MethodSpec(name, obj.__doc__ or name, name)
    raise MtlbenchError(f"{name!r} is neither a MethodSpec, an UpdateRule class nor an MTLArchitecture class")


def _is_method(obj: object) -> bool:
    from mtlbench.architectures import MTLArchitecture
    from mtlbench.update_rules import UpdateRule

    return isinstance(obj, MethodSpec) or (inspect.isclass(obj) and issubclass(obj, UpdateRule | MTLArchitecture))


METHODS.accepts(_is_method, "a MethodSpec, an UpdateRule subclass or an MTLArchitecture subclass")
