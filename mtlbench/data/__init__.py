"""Dataset providers: each returns train / val / test data, the task specs and the network to use.

One module per dataset registers its provider in `DATASETS`. A provider's constructor arguments are its
config (typed, with defaults); `load(data_seed)` builds a `DatasetBundle`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset

from mtlbench.nets import Network
from mtlbench.registry import DATASETS
from mtlbench.tasks import TaskSpec

Batch = tuple[torch.Tensor, list[torch.Tensor]]


class TensorTaskData(Dataset):
    """An in-memory split: inputs (N, ...) and one target tensor per task (N, ...).

    Batches are cut by indexing, which is much faster than a DataLoader for tier-0 sizes.
    """

    def __init__(self, x: torch.Tensor, targets: list[torch.Tensor]):
        if any(len(t) != len(x) for t in targets):
            raise ValueError("every task's targets need one row per input")
        self.x, self.targets = x, targets

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.x[i], [t[i] for t in self.targets]

    def to(self, device: torch.device) -> TensorTaskData:
        return TensorTaskData(self.x.to(device), [t.to(device) for t in self.targets])


def iterate_batches(
    data: Any, batch_size: int, shuffle: bool, generator: torch.Generator | None, device: torch.device
) -> Iterator[Batch]:
    """Batches of (x, [target per task]); `batch_size <= 0` means the whole split as one batch.

    The order comes from `generator` alone, so a resumed run sees exactly the batches it would have seen.
    """
    n = len(data)
    size = n if batch_size <= 0 else batch_size
    if isinstance(data, TensorTaskData):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(data.x.device)
        for start in range(0, n, size):
            idx = order[start : start + size]
            yield data.x[idx].to(device), [t[idx].to(device) for t in data.targets]
        return
    # a last training batch of one sample breaks BatchNorm layers in training mode: drop it
    drop_last = shuffle and size > 1 and n % size == 1
    loader = DataLoader(data, batch_size=size, shuffle=shuffle, generator=generator, num_workers=0, drop_last=drop_last)
    for x, targets in loader:
        yield x.to(device), [t.to(device) for t in targets]


@dataclass
class DatasetBundle:
    train: Dataset
    val: Dataset
    test: Dataset
    tasks: list[TaskSpec]
    input_shape: tuple[int, ...]
    network: Network
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the ground-truth task relations


class DatasetProvider:
    """Base of dataset providers. Subclasses declare typed constructor arguments (their config)."""

    #: training defaults of this dataset (epochs, batch size, optimiser, lr), overridable per method/user
    train_defaults: ClassVar[dict[str, Any]] = {}

    def load(self, data_seed: int) -> DatasetBundle:
        raise NotImplementedError

    def check(self) -> tuple[list[str], list[str]]:
        """(problems, warnings) of the user's copy of the data; tier-0 data has nothing to check."""
        return [], []


def missing_data(dataset: dict[str, Any]) -> list[str]:
    """What is wrong with the copy of the data a resolved `dataset` config names (its provider's check; a
    dataset that downloads itself has nothing to miss yet): problems only, with where to get the files."""
    from mtlbench.params import signature_params

    cls = DATASETS.get(dataset["name"])
    params = signature_params(cls)
    provider = cls(**{k: v for k, v in dataset.items() if k in params})
    if getattr(provider, "download", False):
        return []
    return provider.check()[0]


DATASETS.accepts(lambda obj: isinstance(obj, type) and issubclass(obj, DatasetProvider), "a DatasetProvider subclass")
