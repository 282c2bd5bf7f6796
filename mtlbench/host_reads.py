"""Host reads: the operations that make the host wait for the device on a GPU, counted on any device.

A training step that reads a value of a device tensor on the host (`.item()`, `bool(t)`, `float(t)`, an `if` on
a tensor, `.tolist()`, `.numpy()`) or runs an operation whose output size depends on the data (`nonzero`,
boolean-mask indexing, `masked_select`, `unique`) waits for every kernel queued before it: small multi-task
networks, which live on launch/compute overlap, then run at the speed of the round trip. `HostReads` counts them
in a block on the CPU too, each with the suite's function it came from (the innermost frame in `mtlbench/`,
`methods/` or `baselines/`), so a test can guard every method's step without a GPU.

The mechanism: a `TorchDispatchMode` sees every ATen operation (`item`, `bool` and `float` all reach
`aten._local_scalar_dense`); `tolist` and `numpy`, which do not dispatch on the CPU, are wrapped for the block.

Reads of values that live on the host by construction are no wait for the device, and are counted apart
(`host_counts`): those inside `host_side()` blocks, which work on copies made once by `to_host` (a solver on a
T x T Gram matrix, an order drawn from a host generator), and PyTorch's optimisers' step counters (CPU tensors
unless an optimiser is `capturable`). `to_host` itself is the one read of such a block.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
#: operations that read a device value on the host, or whose output shape depends on the data
SYNCING_OPS = {
    _aten._local_scalar_dense.default: "item",
    _aten.nonzero.default: "nonzero",
    _aten.masked_select.default: "masked_select",
    _aten.is_nonzero.default: "bool",
    _aten._unique2.default: "unique",
    _aten.unique_dim.default: "unique",
    _aten.unique_consecutive.default: "unique",
}
_SUITE_DIRS = ("mtlbench", "methods", "baselines")
_ROOT = Path(__file__).resolve().parent.parent
_OPTIM = Path(torch.optim.__file__).resolve().parent
_host_side_depth = 0
_active: list[HostReads] = []


@contextlib.contextmanager
def host_side() -> Iterator[None]:
    """A block whose tensors live on the host (copies made by `to_host`, draws of a host generator): reading
    them makes no one wait for the device."""
    global _host_side_depth
    _host_side_depth += 1
    try:
        yield
    finally:
        _host_side_depth -= 1


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy on the host: one read of the device, after which a `host_side` block reads freely."""
    for reads in _active:
        reads.counts[("to_host", suite_location())] += 1
    return tensor.detach().cpu()


def _bool_index(args: tuple[Any, ...]) -> bool:
    """`x[mask]` / `x[mask] = v`: an index tensor of booleans (its true count decides the output size)."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def suite_location() -> str:
    """`path:function` of the innermost function of the suite's own code on the stack (this module and
    comprehensions excluded), or
    `torch.optim:function` for a read inside one of PyTorch's optimisers."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        if path.is_relative_to(_OPTIM):
            return f"torch.optim:{frame.f_code.co_name}"
        if path != Path(__file__).resolve() and path.is_relative_to(_ROOT):
            relative = path.relative_to(_ROOT)
            if relative.parts[0] in _SUITE_DIRS and not frame.f_code.co_name.startswith("<"):  # not a listcomp
                return f"{relative.as_posix()}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "(outside the suite)"


class HostReads(TorchDispatchMode):
    """`with HostReads() as reads: ...`; then `reads.counts` maps `(kind, path:function)` to how often the
    host waited for the device there, and `reads.host_counts` the reads of values already on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.host_counts: Counter[tuple[str, str]] = Counter()
        self._saved: dict[str, Any] = {}

    def _count(self, kind: str) -> None:
        where = suite_location()
        on_host = _host_side_depth > 0 or where.startswith("torch.optim:")
        (self.host_counts if on_host else self.counts)[(kind, where)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = SYNCING_OPS.get(func)
        if kind is None and func in (_aten.index.Tensor, _aten.index_put_.default, _aten.index_put.default):
            kind = "boolean index" if _bool_index(args) else None
        if kind is not None:
            self._count(kind)
        return func(*args, **(kwargs or {}))

    def _wrap(self, name: str) -> None:
        original = self._saved[name] = getattr(torch.Tensor, name)

        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._count(name)
            return original(tensor, *args, **kwargs)

        setattr(torch.Tensor, name, counted)

    def __enter__(self) -> HostReads:
        for name in ("tolist", "numpy"):
            self._wrap(name)
        _active.append(self)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        _active.remove(self)
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)

    def report(self) -> list[str]:
        return [f"{n} x {kind} in {where}" for (kind, where), n in sorted(self.counts.items())]
