"""Loading pickled data files without running code.

A pickle can name any importable callable and have it called while loading (`os.system`, say), so a data
folder of pickles (CIFAR-10's python version) could run code under `mtlbench train`. These files hold only
dicts, lists, strings, numbers and numpy arrays; the unpickler here admits exactly the globals that numpy
arrays need and refuses every other one before anything is called.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from typing import Any

# (module, name) pairs that rebuilding numpy arrays uses, under numpy 1 and numpy 2 module names
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a callable outside the data formats' needs: refused before anything ran."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise ForbiddenGlobal(f"it asks for {module}.{name}, which a data file never needs")


def restricted_load(file: io.BufferedIOBase, *, encoding: str = "ASCII", **_: Any) -> Any:
    """`pickle.load` that can only rebuild plain containers and numpy arrays."""
    return RestrictedUnpickler(file, encoding=encoding).load()


@contextlib.contextmanager
def restricted_pickle_in(module: ModuleType) -> Iterator[None]:
    """While the block runs, `module.pickle.load` is `restricted_load` (for library code, such as
    torchvision's CIFAR10, that parses pickles itself)."""
    original = getattr(module, "pickle")  # noqa: B009 - a module attribute that typing does not know
    setattr(module, "pickle", SimpleNamespace(load=restricted_load, UnpicklingError=pickle.UnpicklingError))  # noqa: B010
    try:
        yield
    finally:
        setattr(module, "pickle", original)  # noqa: B010
