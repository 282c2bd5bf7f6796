"""PCGrad gradient surgery (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020).

For each task gradient g_i of the shared parameters, and each other task j in random order: if g_i
conflicts with g_j (g_i . g_j < 0), project g_i onto the normal plane of g_j. The shared parameters
descend along the sum of the projected gradients; task-specific parameters get their own loss gradients.
"""

from __future__ import annotations

import torch

from mtlbench.method import MethodSpec, register_method
from mtlbench.registry import UPDATE_RULES
from mtlbench.update_rules import UpdateRule, assign_flat_gradient, flat_task_gradients, task_losses


def project_conflicts(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(T, D) task gradients -> (D,) sum of PCGrad-projected gradients (projections use the originals)."""
    t = grads.shape[0]
    projected = grads.clone()
    for i in range(t):
        order = torch.randperm(t, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] = projected[i] - dot / (grads[j] @ grads[j]).clamp_min(1e-20) * grads[j]
    return projected.sum(0)


def pcgrad_backward(model, losses: torch.Tensor) -> None:
    """PCGrad on the shared parameters, plain loss gradients on everything else."""
    shared = model.shared_parameters()
    shared_ids = {id(p) for p in shared}
    private = [p for p in model.parameters() if p.requires_grad and id(p) not in shared_ids]
    surgery = project_conflicts(flat_task_gradients(losses, shared))
    private_grads = torch.autograd.grad(losses.sum(), private, retain_graph=True, allow_unused=True)
    for p, g in zip(private, private_grads, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    assign_flat_gradient(shared, surgery)


@UPDATE_RULES.register("pcgrad", "PCGrad: project away conflicting components of the task gradients")
class PCGrad(UpdateRule):
    name = "pcgrad"
    requires_shared_parameters = True

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = task_losses(self.model(x), targets, self.tasks)
        pcgrad_backward(self.model, losses)
        return losses.detach()


register_method(MethodSpec("pcgrad", "PCGrad (Yu et al. 2020) on hard sharing", "hps", "pcgrad"))
