"""PCGrad gradient surgery (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).

For each task gradient g_i of the shared parameters, and each other task j in random order: if g_i
conflicts with g_j (g_i . g_j < 0), project g_i onto the normal plane of g_j. The shared parameters
descend along the sum of the projected gradients; task-specific parameters get their own loss gradients.
"""

from __future__ import annotations

import torch

from mtlbench.host_reads import host_side
from mtlbench.method import MethodSpec, register_method
from mtlbench.registry import UPDATE_RULES
from mtlbench.update_rules import JacobianRule


def project_conflicts(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(T, D) task gradients -> (D,) sum of PCGrad-projected gradients (projections use the originals)."""
    t = grads.shape[0]
    projected = grads.clone()
    for i in range(t):
        with host_side():  # drawn from a host generator: reading the order waits for no device
            order = torch.randperm(t, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            # a conflict (dot < 0) is projected away; otherwise the step subtracts exactly 0 (no host branch)
            dot = (projected[i] @ grads[j]).clamp(max=0)
            projected[i] = projected[i] - dot / (grads[j] @ grads[j]).clamp_min(1e-20) * grads[j]
    return projected.sum(0)


@UPDATE_RULES.register("pcgrad", "PCGrad: project away conflicting components of the task gradients")
class PCGrad(JacobianRule):
    name = "pcgrad"

    def aggregate(self, jacobian: torch.Tensor) -> torch.Tensor:
        return project_conflicts(jacobian)


register_method(MethodSpec("pcgrad", "PCGrad (Yu et al. 2020) on hard sharing", "hps", "pcgrad"))
