"""A held-out part of the training split, for rules that learn gates on validation data (DSMTL's bilevel
variants). The test/validation splits of the benchmark are never touched; the split is seeded (688, the
official DSMTL code's validation seed) and its batches are a pure function of the step, so resume is exact."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Subset

from mtlbench.data import Batch, TensorTaskData, iterate_batches

HOLDOUT_SEED = 688


def split_holdout(data: Any, fraction: float, seed: int = HOLDOUT_SEED) -> tuple[Any, Any]:
    n = len(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, int(round(fraction * n)))
    hold, keep = perm[:n_hold], perm[n_hold:]
    if isinstance(data, TensorTaskData):
        dev = data.x.device
        pick = lambda idx: TensorTaskData(data.x[idx.to(dev)], [t[idx.to(dev)] for t in data.targets])  # noqa: E731
        return pick(keep), pick(hold)
    return Subset(data, keep.tolist()), Subset(data, hold.tolist())


class HoldoutBatches:
    """Batch number `step` of an endless, reshuffled pass over the held-out data. Tensor data: each pass's
    order is drawn once and moved to the data's device once (not per step); the batches are those
    `iterate_batches` gives with the pass's generator."""

    def __init__(self, data: Any, batch_size: int, device: torch.device):
        self.data, self.batch_size, self.device = data, batch_size, device
        size = len(data) if batch_size <= 0 else min(batch_size, len(data))
        self.per_pass = -(-len(data) // size)
        self._order: tuple[int, torch.Tensor] | None = None  # (pass, its order on the data's device)

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(HOLDOUT_SEED * 7919 + epoch)

    def __call__(self, step: int) -> Batch:
        epoch, index = divmod(step, self.per_pass)
        if isinstance(self.data, TensorTaskData):
            return self._tensor_batch(epoch, index)
        for i, batch in enumerate(
            iterate_batches(self.data, self.batch_size, True, self._generator(epoch), self.device)
        ):
            if i == index:
                return batch
        raise IndexError(step)

    def _tensor_batch(self, epoch: int, index: int) -> Batch:
        n = len(self.data)
        if self._order is None or self._order[0] != epoch:
            order = torch.randperm(n, generator=self._generator(epoch))
            self._order = (epoch, order.to(self.data.x.device))
        size = n if self.batch_size <= 0 else self.batch_size
        idx = self._order[1][index * size : (index + 1) * size]
        return self.data.x[idx].to(self.device), [t[idx].to(self.device) for t in self.data.targets]
