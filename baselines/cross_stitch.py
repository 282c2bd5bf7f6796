"""Cross-stitch networks (Misra et al., CVPR 2016).

One network per task; after every encoder stage a learnable T x T unit mixes the tasks' activations,
x~_t = sum_s alpha_ts x_s. The paper starts near the identity: alpha_tt = 0.9, alpha_ts = 0.1 / (T - 1), so
rows sum to 1 (several libraries start all alphas at 1: a deviation). Units are scalar per task pair or
channel-wise (one alpha per pair and channel), and may learn with a larger lr.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import nn

from mtlbench.architectures import MTLArchitecture
from mtlbench.method import MethodSpec, register_method
from mtlbench.nets import Network
from mtlbench.registry import ARCHITECTURES
from mtlbench.tasks import TaskSpec


class CrossStitchUnit(nn.Module):
    def __init__(self, n_tasks: int, channels: int, alpha_self: float, channel_wise: bool):
        super().__init__()
        off = (1.0 - alpha_self) / max(n_tasks - 1, 1)
        alpha = torch.full((n_tasks, n_tasks), off)
        alpha.fill_diagonal_(alpha_self)
        if channel_wise:
            alpha = alpha[:, :, None].repeat(1, 1, channels)
        self.alpha = nn.Parameter(alpha)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        stacked = torch.stack(xs)  # (S, B, C, ...)
        # alpha as (T, S, 1, C or 1, 1, ...) against stacked (1, S, B, C, ...): x~_t = sum_s alpha_ts x_s
        channel_dims = self.alpha.shape[2:] or (1,)
        alpha = self.alpha.reshape(*self.alpha.shape[:2], 1, *channel_dims, *([1] * (stacked.dim() - 3)))
        mixed = (alpha * stacked[None]).sum(1)
        return list(mixed.unbind(0))


@ARCHITECTURES.register("cross_stitch", "One network per task, activations mixed by cross-stitch units per stage")
class CrossStitch(MTLArchitecture):
    def __init__(
        self,
        tasks: list[TaskSpec],
        network: Network,
        alpha_self: float = 0.9,
        unit: Literal["scalar", "channel"] = "scalar",
        alpha_lr_mult: float = 1.0,
    ):
        super().__init__(tasks, network)
        self.alpha_lr_mult = alpha_lr_mult
        self.encoders = nn.ModuleList(network.make_encoder() for _ in tasks)
        self.heads = nn.ModuleList(network.make_head(t) for t in tasks)
        channels = [shape[0] for shape in network.stage_shapes()]
        self.units = nn.ModuleList(CrossStitchUnit(len(tasks), c, alpha_self, unit == "channel") for c in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = [x] * len(self.tasks)
        for stage, unit in enumerate(self.units):
            xs = unit([cast(nn.Sequential, enc)[stage](h) for enc, h in zip(self.encoders, xs, strict=True)])
        return [head(h) for head, h in zip(self.heads, xs, strict=True)]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        alphas = {id(p) for p in self.units.parameters()}
        rest = [p for p in self.parameters() if id(p) not in alphas]
        return [{"params": rest, "lr": lr}, {"params": list(self.units.parameters()), "lr": lr * self.alpha_lr_mult}]

    def method_state(self) -> dict[str, Any]:
        return {"cross_stitch": [cast(CrossStitchUnit, u).alpha.detach().cpu().tolist() for u in self.units]}


# On synthetic_relations (12 regression tasks, losses in the thousands at the start) the units' gradients are
# large enough to make SGD diverge at the network's lr; a 10x smaller lr for alpha keeps them stable.
register_method(
    MethodSpec(
        "cross_stitch",
        "Cross-stitch networks (Misra et al. 2016)",
        "cross_stitch",
        dataset_overrides={"synthetic_relations": {"arch.alpha_lr_mult": 0.1}},
    )
)
