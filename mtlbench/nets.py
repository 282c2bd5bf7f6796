"""Backbones and heads. An encoder is an `nn.Sequential` of *stages*, so that architectures which act
between stages (cross-stitch units, DSMTL-AL gates) can interleave with it without knowing the layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mtlbench.tasks import TaskSpec


@dataclass(frozen=True)
class Network:
    """How a dataset's networks are built: encoder stages, and one head per task. `input_shape` (without the
    batch dimension) lets architectures size per-stage parts (channel-wise mixing units) by a dry run."""

    make_encoder: Callable[[], nn.Sequential]
    make_head: Callable[[TaskSpec], nn.Module]
    input_shape: tuple[int, ...]

    def stage_shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every encoder stage (without the batch dimension)."""
        encoder = self.make_encoder().eval()
        x = torch.zeros(2, *self.input_shape)
        shapes = []
        with torch.no_grad():
            for stage in encoder:
                x = stage(x)
                shapes.append(tuple(x.shape[1:]))
        return shapes


# --- vectors (synthetic tasks) -------------------------------------------------------------------------
def vector_network(dim: int, trunk: str, hidden: int) -> Network:
    """`identity`: the official SRDML synthetic model (linear heads on the input, so a task's saliency is its
    weight vector); `linear`: one shared linear layer; `mlp`: two ReLU layers."""

    def make_encoder() -> nn.Sequential:
        if trunk == "identity":
            return nn.Sequential(nn.Identity())
        if trunk == "linear":
            return nn.Sequential(nn.Linear(dim, hidden))
        return nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU()), nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        )

    rep = dim if trunk == "identity" else hidden
    return Network(make_encoder, lambda task: nn.Linear(rep, task.num_outputs), (dim,))


# --- MultiLeNet (Sener & Koltun 2018, MultiMNIST) -------------------------------------------------------
class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def multilenet_encoder() -> nn.Sequential:
    """MGDA's MultiLeNet encoder: conv(1,10,5)-pool-relu, conv(10,20,5)-dropout-pool-relu, fc(320,50)-relu.
    Three stages: cross-stitch units and AL gates sit after each conv block and after the FC layer."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU()),
        nn.Sequential(nn.Conv2d(10, 20, 5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU()),
        nn.Sequential(Flatten(), nn.Linear(320, 50), nn.ReLU()),
    )


def multilenet_head(task: TaskSpec) -> nn.Module:
    """MGDA's task head: fc(50,50)-relu-dropout-fc(50,C)."""
    return nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Dropout(0.5), nn.Linear(50, task.num_outputs))


MULTILENET = Network(multilenet_encoder, multilenet_head, (1, 28, 28))
