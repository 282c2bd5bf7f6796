"""TorchJD's aggregators as update rules (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
2024; the `torchjd` package, which maintains them with tests on CPU and CUDA).

Each rule hands the (T, D) Jacobian of the task losses w.r.t. the shared parameters to one TorchJD aggregator
and descends along the vector it returns; task-specific parameters get their own loss gradients (as PCGrad and
MGDA here). Each aggregator's constructor arguments are the rule's typed `rule.*` keys, with TorchJD's
defaults unless a paper's is named; preference vectors are lists of floats (one per task). For an aggregator
that weights the rows of the Jacobian, the weights it chose (mean over the last epoch) go to the run record's
`method_state.task_weights`.

CAGrad and Nash-MTL need convex solvers, an extra of the suite: `pip install "mtlbench[jd-solvers]"`; UPGrad
and DualProj need `quadprog`, installed with the suite. Stateful aggregators (GradVac's EMA, Nash-MTL's
weights, ExcessMTL's robust step) start their state afresh when a run resumes from a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from mtlbench.errors import MtlbenchError
from mtlbench.method import rule_method
from mtlbench.params import signature_params
from mtlbench.update_rules import JacobianRule, TaskWeightLog


class TorchJDRule(JacobianRule):
    """One TorchJD aggregator (`aggregator_class`, a name in `torchjd.aggregation`) as a Jacobian rule."""

    aggregator_class: ClassVar[str]
    extra: ClassVar[str] = ""  # the suite's extra that installs what the aggregator needs

    def aggregator_args(self) -> dict[str, Any]:
        """The constructor arguments: the rule's own typed parameters (lists become tensors)."""
        args = {k: getattr(self, k) for k in signature_params(type(self))}
        return {k: torch.tensor(v, dtype=torch.float32) if isinstance(v, list) else v for k, v in args.items()}

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        import torchjd.aggregation as aggregation

        for key in signature_params(type(self)):  # a list (preference vector, leak) has one entry per task
            value = getattr(self, key)
            if isinstance(value, list) and len(value) != len(tasks):
                raise MtlbenchError(
                    f"rule.{key} has {len(value)} entries but the dataset has {len(tasks)} tasks: one per task"
                )

        try:
            self._aggregator = getattr(aggregation, self.aggregator_class)(**self.aggregator_args())
        except ImportError as exc:
            raise MtlbenchError(
                f"update rule {self.name!r} needs TorchJD's optional solvers ({exc}); install "
                f'them with pip install "mtlbench[{self.extra or "jd-solvers"}]"'
            ) from None
        except ValueError as exc:  # an argument out of range, e.g. a preference vector of the wrong length
            raise MtlbenchError(f"update rule {self.name!r}: {exc}") from None
        self._weighted = isinstance(self._aggregator, aggregation.WeightedAggregator)  # decided once, not per step
        self.weight_log = TaskWeightLog(tasks)

    def aggregate(self, jacobian: torch.Tensor) -> torch.Tensor:
        if self._weighted:
            with torch.no_grad():
                weights = self._aggregator.weighting(jacobian)
            self.weight_log.add(weights)
            return weights @ jacobian
        with torch.no_grad():
            return self._aggregator(jacobian)

    def on_epoch_start(self, epoch: int) -> bool:
        self.weight_log.reset()
        return False

    def method_state(self) -> dict[str, Any]:
        return self.weight_log.state()


def _jd_rule(name: str, description: str):
    """A TorchJD rule and its method on hard sharing, registered under one name."""
    return rule_method(name, description, method_description=f"{description.split(':')[0]} on hard sharing (TorchJD)")


class _PreferenceRule(TorchJDRule):
    """An aggregator whose one argument is a preference vector over the tasks (None: uniform)."""

    def __init__(self, pref_vector: list[float] | None = None):
        self.pref_vector = pref_vector


@_jd_rule("upgrad", "UPGrad (Quinton & Rey 2024): each task gradient projected onto the dual cone, averaged")
class UPGradRule(_PreferenceRule):
    aggregator_class = "UPGrad"


@_jd_rule("dualproj", "DualProj: the mean gradient projected onto the dual cone of the task gradients")
class DualProjRule(_PreferenceRule):
    aggregator_class = "DualProj"


@_jd_rule("cagrad", "CAGrad (Liu et al. 2021): conflict-averse gradient within a ball around the mean")
class CAGradRule(TorchJDRule):
    aggregator_class = "CAGrad"
    extra = "jd-solvers"

    def __init__(self, c: float = 0.4, norm_eps: float = 1e-4):  # c = 0.4: the paper's multi-task setting
        self.c, self.norm_eps = c, norm_eps


@_jd_rule("nash_mtl", "Nash-MTL (Navon et al. 2022): the Nash bargaining solution over the task gradients")
class NashMTLRule(TorchJDRule):
    aggregator_class = "NashMTL"
    extra = "jd-solvers"

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20):
        self.max_norm, self.update_weights_every, self.optim_niter = max_norm, update_weights_every, optim_niter

    def aggregator_args(self) -> dict[str, Any]:
        return {**super().aggregator_args(), "n_tasks": len(self.tasks)}


@_jd_rule("imtl_g", "IMTL-G (Liu et al. 2021): weights giving equal projections on the update")
class IMTLGRule(TorchJDRule):
    aggregator_class = "IMTLG"

    def __init__(self) -> None:
        pass


@_jd_rule("aligned_mtl", "Aligned-MTL (Senushkin et al. 2023): the task gradients' condition number set to 1")
class AlignedMTLRule(TorchJDRule):
    aggregator_class = "AlignedMTL"

    def __init__(self, pref_vector: list[float] | None = None, scale_mode: Literal["min", "median", "rmse"] = "min"):
        self.pref_vector, self.scale_mode = pref_vector, scale_mode


@_jd_rule("graddrop", "GradDrop (Chen et al. 2020): drop gradient components by the sign purity")
class GradDropRule(TorchJDRule):
    aggregator_class = "GradDrop"

    def __init__(self, leak: list[float] | None = None):
        self.leak = leak


@_jd_rule("config", "ConFIG (Liu et al. 2024): a conflict-free direction of equal cosine to every task")
class ConFIGRule(_PreferenceRule):
    aggregator_class = "ConFIG"


@_jd_rule("gradvac", "GradVac (Wang et al. 2021): gradient vaccine towards the tasks' EMA similarity")
class GradVacRule(TorchJDRule):
    aggregator_class = "GradVac"

    def __init__(self, beta: float = 0.5, eps: float = 1e-8):
        self.beta, self.eps = beta, eps


@_jd_rule("fairgrad", "FairGrad (Ban & Ji 2024): alpha-fair allocation of the update over tasks")
class FairGradRule(TorchJDRule):
    aggregator_class = "FairGrad"

    def __init__(self, alpha: float = 1.0, max_iters: int | None = None):
        self.alpha, self.max_iters = alpha, max_iters


@_jd_rule("excess_mtl", "ExcessMTL (He et al. 2024): robust weights from each task's excess risk")
class ExcessMTLRule(TorchJDRule):
    aggregator_class = "ExcessMTL"

    def __init__(self, robust_step_size: float = 1.0, n_warmup_steps: int = 0):
        self.robust_step_size, self.n_warmup_steps = robust_step_size, n_warmup_steps


@_jd_rule("jd_mgda", "TorchJD's MGDA: the min-norm point of the task gradients' convex hull")
class JDMGDARule(TorchJDRule):
    aggregator_class = "MGDA"

    def __init__(self, epsilon: float = 0.001, max_iters: int = 100):
        self.epsilon, self.max_iters = epsilon, max_iters


@_jd_rule("jd_pcgrad", "TorchJD's PCGrad: projecting conflicting components, every ordering averaged")
class JDPCGradRule(TorchJDRule):
    aggregator_class = "PCGrad"

    def __init__(self) -> None:
        pass


@_jd_rule("rgw", "Random gradient weighting (Lin et al. 2022): weights drawn from a softmax of normals")
class RandomRule(TorchJDRule):
    aggregator_class = "Random"

    def __init__(self) -> None:
        pass
