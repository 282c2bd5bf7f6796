"""Random loss weighting (Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022): each step draws weights w = softmax(z), z ~ N(0, I_T), and descends along
sum_t w_t L_t (the paper's normal distribution; LibMTL's form, weights on the simplex). The draws come from
torch's seeded generator, so a run is reproducible.
"""

from __future__ import annotations

import torch

from mtlbench.method import rule_method
from mtlbench.update_rules import LossWeighting


@rule_method("rlw", "Random loss weighting (Lin et al. 2022): softmax of normal draws each step")
class RandomLossWeighting(LossWeighting):
    def __init__(self) -> None:
        pass

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(torch.randn(len(self.tasks)), dim=0)
        self.weight_log.add(weights)
        return (weights.to(losses.device, losses.dtype) * losses).sum()
