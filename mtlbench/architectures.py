"""How parameters are shared: the architecture half of a method (the other half is its update rule).

An architecture maps an input batch to one output per task. Those with a single shared representation
``A = h(x)`` (hard sharing) expose `encode`/`decode`, which update rules such as MGDA-UB and SRDML's
saliency regulariser need; `shared_parameters` are the parameters every task's loss reaches.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mtlbench.nets import Network
from mtlbench.registry import ARCHITECTURES
from mtlbench.tasks import TaskSpec


def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_frozen(module: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) a part of a model. Frozen means bit-identical: no gradient *and* no change to
    BatchNorm running statistics, whose layers stay in eval mode even when the training loop calls
    `model.train()` (MTLArchitecture.train re-applies it). Dropout inside a frozen part keeps the model's mode.
    Every part the suite freezes (DSMTL-IL's public encoder in stage 2, DSMTL-AL's unused layers) goes
    through here."""
    module.requires_grad_(not frozen)
    setattr(module, "mtlbench_frozen", frozen)  # noqa: B010 - an attribute of our own on any module
    for bn in batchnorm_layers(module):
        bn.train(module.training and not frozen)


class MTLArchitecture(nn.Module):
    #: whether `encode`/`decode` exist (one shared representation feeding every head)
    has_shared_representation: ClassVar[bool] = False

    def train(self, mode: bool = True) -> MTLArchitecture:
        super().train(mode)
        for module in self.modules():
            if getattr(module, "mtlbench_frozen", False):
                for bn in batchnorm_layers(module):
                    bn.eval()
        return self

    def __init__(self, tasks: list[TaskSpec], network: Network):
        super().__init__()
        self.tasks = list(tasks)
        self.network = network

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that every task's loss depends on (empty when nothing is shared)."""
        return []

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; architectures with parts that want another lr override this.

        Frozen parameters stay in the groups (they get no gradient, so the optimiser skips them): the groups
        are then the same whichever stage a staged method is in, and a checkpoint's optimiser state fits."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} has no single shared representation")

    def decode(self, rep: torch.Tensor) -> list[torch.Tensor]:
        raise TypeError(f"{type(self).__name__} has no single shared representation")

    def inference_parameter_count(self) -> int:
        """Parameters needed at test time (DSMTL's lite gates and AL drop unused encoders)."""
        return sum(p.numel() for p in self.parameters())

    def method_state(self) -> dict[str, Any]:
        """Learned, human-readable structure (mixing weights, gates) for the run record."""
        return {}


ARCHITECTURES.accepts(
    lambda obj: isinstance(obj, type) and issubclass(obj, MTLArchitecture), "an MTLArchitecture subclass"
)


class SharedTrunk(MTLArchitecture):
    """One encoder shared by all tasks, one head per task (hard parameter sharing)."""

    has_shared_representation = True

    def __init__(self, tasks: list[TaskSpec], network: Network):
        super().__init__(tasks, network)
        self.encoder = network.make_encoder()
        self.heads = nn.ModuleList(network.make_head(t) for t in tasks)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, rep: torch.Tensor) -> list[torch.Tensor]:
        return [head(rep) for head in self.heads]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.decode(self.encode(x))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]


class IndependentNetworks(MTLArchitecture):
    """One encoder and head per task; nothing is shared (single-task learning in one run)."""

    def __init__(self, tasks: list[TaskSpec], network: Network):
        super().__init__(tasks, network)
        self.encoders = nn.ModuleList(network.make_encoder() for _ in tasks)
        self.heads = nn.ModuleList(network.make_head(t) for t in tasks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [head(enc(x)) for enc, head in zip(self.encoders, self.heads, strict=True)]
