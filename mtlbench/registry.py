"""Name -> object registries (timm style): datasets, architectures, update rules and named methods.

Each component registers itself in its own file with a decorator, so adding one touches one file. A name of
the form ``package.module:Name`` is imported on demand, so a user's own method needs no edit of the suite.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mtlbench.errors import MtlbenchError, UnknownNameError

if TYPE_CHECKING:  # the base classes import this module to register themselves
    from mtlbench.architectures import MTLArchitecture
    from mtlbench.data import DatasetProvider
    from mtlbench.method import MethodSpec
    from mtlbench.update_rules import UpdateRule

T = TypeVar("T")

# The built-in components: every module of these packages registers its own (a new file is found, no list to
# edit); the first two modules define the base classes and the generic components.
CORE_MODULES = ("mtlbench.architectures", "mtlbench.update_rules")
COMPONENT_PACKAGES = ("mtlbench.data", "baselines", "methods")
# a folder of this name on the import path holds methods of one's own, one file each, found like the built-in ones
USER_PACKAGES = ("mtlbench_methods",)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._accepts: tuple[Callable[[Any], bool], str] | None = None

    def accepts(self, check: Callable[[Any], bool], what: str) -> None:
        """What an imported ``package.module:Name`` must be (checked before anything of it is called);
        declared by the module that defines the component's base class."""
        self._accepts = (check, what)

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str | None = None) -> None:
        if name in self._entries and self._entries[name].obj is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        doc = description or (getattr(obj, "__doc__", None) or "").strip().splitlines()[0:1]
        desc = doc if isinstance(doc, str) else (doc[0] if doc else "")
        self._entries[name] = Entry(name, obj, desc)

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        load_builtins()
        return [self._entries[n] for n in sorted(self._entries)]

    def get(self, name: str) -> T:
        load_builtins()
        if name in self._entries:
            return self._entries[name].obj
        if ":" in name:
            obj = import_object(name, self.kind)
            if self._accepts is not None and not self._accepts[0](obj):
                raise MtlbenchError(
                    f"{name!r} is not usable as {self.kind}: it must be {self._accepts[1]}, "
                    f"found {type(obj).__name__} {obj!r:.60}"
                )
            return obj
        raise UnknownNameError(self.kind, name, list(self._entries))

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._entries


IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def import_object(path: str, kind: str) -> Any:
    """Import ``package.module:Name`` with one clear message for each way it can fail. Importing the module
    runs its code (that is how a user's method registers); nothing found in it is called here."""
    if not IMPORT_PATH.match(path):
        raise MtlbenchError(
            f"{kind} {path!r} is not a registered name nor of the form package.module:Name "
            f"(dotted Python identifiers, e.g. mymethods.uncertainty:UNCERTAINTY)"
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MtlbenchError(f"cannot import module {module_name!r} for {kind} {path!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise MtlbenchError(f"module {module_name!r} has no {attr!r} (named as {kind} {path!r})") from None


_loaded = False


def load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in builtin_modules():
        importlib.import_module(module)


def builtin_modules() -> list[str]:
    """The modules that register the built-in components, found by scanning COMPONENT_PACKAGES."""
    import pkgutil

    found = list(CORE_MODULES)
    present = [p for p in USER_PACKAGES if importlib.util.find_spec(p) is not None]
    for package in (*COMPONENT_PACKAGES, *present):
        path = importlib.import_module(package).__path__
        found += [
            f"{package}.{m.name}"
            for m in sorted(pkgutil.iter_modules(path), key=lambda m: m.name)
            if not m.name.startswith("_")
        ]
    return found


# typed: a dataset is a DatasetProvider class, an architecture an MTLArchitecture class, an update rule an
# UpdateRule class; a method is a MethodSpec (or, named by import path, a bare rule or architecture class)
DATASETS: Registry[type[DatasetProvider]] = Registry("dataset")
ARCHITECTURES: Registry[type[MTLArchitecture]] = Registry("architecture")
UPDATE_RULES: Registry[type[UpdateRule]] = Registry("update rule")
METHODS: Registry[MethodSpec | type[UpdateRule] | type[MTLArchitecture]] = Registry("method")
