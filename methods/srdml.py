"""SRDML: saliency-regularised deep multi-task learning (Bai & Zhao, KDD 2022, arXiv 2207.01117).

Hard sharing plus a regulariser on the *saliencies* s_t,e = d f_t(A_e) / d A_e (the gradient of each task's
logit w.r.t. the shared feature map A). By the paper's Theorem 1, making two tasks' input gradients similar
makes their functions similar, so the regulariser shares knowledge between related tasks only:

    sum_t L_t + lambda * sum_{i<j} (omega_ij / sum omega) * D_ij,    D_ij = sum_e dist(s_i,e, s_j,e)

The relation weights omega >= 0 are learned jointly with the network (double backprop: the saliency stays in
the graph). As in the official code, omega starts at 1, enters normalised, and is projected with ReLU after
every update; d R / d omega_ab = lambda * (D_ab - E) / S with S = sum omega and E the omega-weighted mean
distance, so pairs closer than average gain weight and dissimilar pairs fall to 0: high omega = related tasks.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Annotated, Any, Literal

import torch
from torch import nn

from mtlbench.data.synthetic import SCALES
from mtlbench.method import MethodSpec, register_method
from mtlbench.params import NON_NEGATIVE, POSITIVE
from mtlbench.registry import UPDATE_RULES
from mtlbench.regularisers import RegularisedRule, Regulariser
from mtlbench.schedule import Stage, Stages
from mtlbench.tasks import TaskSpec

Reduce = Literal["sum", "mean", "none"]
Distance = Literal["l1", "l2", "sq_l2", "cosine"]


@contextmanager
def batchnorm_in_eval(module: nn.Module | None):
    """Yields whether any BatchNorm layer of `module` was in training mode (and is in eval mode inside)."""
    layers = (
        [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        if module is not None
        else []
    )
    for m in layers:
        m.eval()
    try:
        yield bool(layers)
    finally:
        for m in layers:
            m.train()


def saliencies(
    rep: torch.Tensor,
    outputs: list[torch.Tensor],
    targets: list[torch.Tensor],
    tasks: list[TaskSpec],
    reduce: Reduce = "sum",
    which: str = "label",
    create_graph: bool = True,
) -> torch.Tensor:
    """(T, B, F) saliencies of every task for every sample, without a loop over samples.

    When the heads act on each sample separately, the gradient of the batch sum of a task's logits w.r.t. A
    is the stack of per-sample gradients (`task_saliencies` makes sure they do). Conv maps are reduced over
    space (`sum`: Grad-CAM channel weights with normaliser 1, as the official code; `mean`; `none` keeps the
    full flattened gradient)."""
    rows = []
    for task, out, tgt in zip(tasks, outputs, targets, strict=True):
        logit = task.saliency_logit(out, tgt, which)
        (grad,) = torch.autograd.grad(logit.sum(), rep, create_graph=create_graph)
        if grad.dim() > 2 and reduce != "none":
            grad = grad.flatten(2).sum(2) if reduce == "sum" else grad.flatten(2).mean(2)
        rows.append(grad.flatten(1))
    return torch.stack(rows)


def task_saliencies(
    model,
    rep: torch.Tensor,
    outputs: list[torch.Tensor],
    targets: list[torch.Tensor],
    tasks: list[TaskSpec],
    reduce: Reduce = "sum",
    which: str = "label",
) -> torch.Tensor:
    """Per-sample saliencies for any heads. Heads with BatchNorm in training mode normalise with batch
    statistics, so one sample's logit depends on the others' features and the batch-sum trick would mix
    samples (measured relative error ~1 on DeepLab heads). Those heads are then run once more with their
    BatchNorm layers in eval mode (running statistics: each sample alone, as at test time) for the saliency;
    the task losses keep the training-mode outputs."""
    with batchnorm_in_eval(getattr(model, "heads", None)) as switched:
        if switched:
            outputs = model.decode(rep)
        return saliencies(rep, outputs, targets, tasks, reduce, which)


def pair_distances(sal: torch.Tensor, dist: Distance = "l1", reduce_batch: str = "mean") -> torch.Tensor:
    """(P,) distances D_ij for the pairs i < j (row-major order), reduced over the batch."""
    t = sal.shape[0]
    i, j = torch.triu_indices(t, t, offset=1, device=sal.device)
    diff = sal[i] - sal[j]  # (P, B, F)
    if dist == "l1":
        per_sample = diff.abs().sum(-1)
    elif dist == "l2":
        per_sample = diff.pow(2).sum(-1).clamp_min(1e-24).sqrt()
    elif dist == "sq_l2":
        per_sample = diff.pow(2).sum(-1)
    else:
        per_sample = 1 - torch.nn.functional.cosine_similarity(sal[i], sal[j], dim=-1, eps=1e-12)
    return per_sample.sum(1) if reduce_batch == "sum" else per_sample.mean(1)


def relation_matrix(omega: torch.Tensor, t: int) -> list[list[float]]:
    """The symmetric T x T matrix (zero diagonal) of the pair weights."""
    mat = torch.zeros(t, t, dtype=omega.dtype)
    i, j = torch.triu_indices(t, t, offset=1)
    mat[i, j] = omega.detach().cpu()
    mat[j, i] = omega.detach().cpu()
    return mat.tolist()


# The official CIFAR script steps the network's two halves and then omega with one Keras Adam object, so its
# step count advances three times per training step; omega's variable is re-created after every step, so its
# moments start from zero each time.
KERAS_ADAM_CALLS_PER_STEP = 3
WARMUP = "warm-up (hard sharing, lam = 0)"  # the stage before the regulariser acts


def keras_fresh_moment_adam_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-7,
) -> None:
    """One Keras (TF2 OptimizerV2) Adam update with zero moments at global step `step`:
    m = (1 - b1) g, v = (1 - b2) g^2, param -= lr sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps).
    Not lr * sign(g): the bias correction uses the shared step count (3.08x lr per step at k = 3000)."""
    m, v = (1 - beta1) * grad, (1 - beta2) * grad * grad
    alpha = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    param.sub_(alpha * m / (v.sqrt() + eps))


class SaliencyRegulariser(Regulariser):
    """SRDML's term lam * sum_{i<j} (omega_ij / sum omega) D_ij with the learned relation weights omega, acting
    after its warm-up stage; omega is stepped by its own optimiser and projected onto omega >= 0."""

    def __init__(
        self,
        lam: float,
        reduce: Reduce,
        dist: Distance,
        reduce_batch: str,
        saliency_of: str,
        warmup_fraction: float,
        omega_optimizer: str,
        omega_lr: float,
        reset_omega_optimizer: bool,
        warmup_batch_size: int,
        fresh_optimizer_after_warmup: bool,
    ):
        self.fresh_optimizer_after_warmup = fresh_optimizer_after_warmup
        self.lam, self.reduce, self.dist, self.reduce_batch = lam, reduce, dist, reduce_batch
        self.saliency_of, self.warmup_fraction = saliency_of, warmup_fraction
        self.omega_optimizer, self.omega_lr = omega_optimizer, omega_lr
        self.reset_omega_optimizer = reset_omega_optimizer
        self.warmup_batch_size = warmup_batch_size  # the official pretrain.py: 100; 0 = the run's batch size
        self.active = warmup_fraction == 0
        self.last_distances: torch.Tensor | None = None

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        t = len(tasks)
        device = next(model.parameters()).device
        self.omega = nn.Parameter(torch.ones(t * (t - 1) // 2, device=device))
        self._optimizer = self._new_optimizer()
        self._omega_updates = 0

    def _new_optimizer(self) -> torch.optim.Optimizer:
        cls = torch.optim.Adam if self.omega_optimizer == "adam" else torch.optim.SGD
        return cls([self.omega], lr=self.omega_lr)

    def parameters(self) -> list[nn.Parameter]:
        return [self.omega]

    def stages(self) -> Stages:
        # with lam = 0 the regulariser never acts (a deliberate ablation): nothing to wait for; a budget too
        # short for the warm-up shortens it (at least one regularised epoch always runs). The official second
        # stage is a new script: the network's Adam starts afresh with the regulariser.
        return Stages(
            Stage(
                WARMUP,
                "rule.warmup_fraction",
                self.warmup_fraction if self.lam else 0.0,
                batch_size=self.warmup_batch_size or None,
            ),
            Stage("regularised", selectable=True, fresh_optimizer=self.fresh_optimizer_after_warmup),
        )

    def on_stage(self, stage: Stage) -> None:
        self.active = stage.name != WARMUP and self.lam != 0
        device = next(self.model.parameters()).device
        if self.omega.device != device:
            self.omega.data = self.omega.data.to(device)

    def term(self, rep: torch.Tensor, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor | None:
        if not self.active:
            return None
        sal = task_saliencies(self.model, rep, outputs, targets, self.tasks, self.reduce, self.saliency_of)
        distances = pair_distances(sal, self.dist, self.reduce_batch)
        self.last_distances = distances.detach()
        weights = self.omega / self.omega.sum().clamp_min(1e-12)
        return self.lam * (weights * distances).sum()

    def after_step(self) -> None:
        if self.omega.grad is None:
            return
        if self.reset_omega_optimizer:  # the official CIFAR code: fresh moments each step, shared step count
            self._omega_updates += 1
            with torch.no_grad():
                keras_fresh_moment_adam_step(
                    self.omega, self.omega.grad, KERAS_ADAM_CALLS_PER_STEP * self._omega_updates, self.omega_lr
                )
        else:
            self._optimizer.step()
        with torch.no_grad():
            self.omega.clamp_(min=0.0)  # projection onto omega >= 0 (ReLU)
            # every pair driven to 0: restart from equal weights (decided on the device: no read by the host)
            self.omega.copy_(torch.where(self.omega.sum() == 0, torch.ones_like(self.omega), self.omega))

    def epoch_log(self) -> dict[str, float]:
        omega = self.omega.detach()
        out = {"omega_mean": float(omega.mean()), "omega_zero_fraction": float((omega == 0).float().mean())}
        if self.last_distances is not None:
            out["saliency_distance_mean"] = float(self.last_distances.mean())
        return out

    def method_state(self) -> dict[str, Any]:
        return {
            "relation": relation_matrix(self.omega, len(self.tasks)),
            "relation_tasks": [t.name for t in self.tasks],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "omega": self.omega.detach().cpu(),
            "optimizer": self._optimizer.state_dict(),
            "omega_updates": self._omega_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.omega.copy_(state["omega"].to(self.omega.device))
        self._optimizer.load_state_dict(state["optimizer"])
        self._omega_updates = int(state.get("omega_updates", 0))


@UPDATE_RULES.register("srdml", "Saliency regulariser with learned task relations (SRDML)")
class SaliencyRegularized(RegularisedRule):
    """SRDML's saliency term (`SaliencyRegulariser`) added to what `rule.aggregator` descends (the paper: the
    plain sum; its best table row: PCGrad), that rule built with `rule.aggregator_params`."""

    name = "srdml"

    def __init__(
        self,
        lam: Annotated[float, NON_NEGATIVE] = 0.1,
        reduce: Reduce = "sum",
        dist: Distance = "l1",
        reduce_batch: Literal["mean", "sum"] = "mean",
        saliency_of: Literal["label", "max", "sum"] = "label",
        warmup_fraction: float = 0.5,
        omega_optimizer: Literal["adam", "sgd"] = "adam",
        omega_lr: Annotated[float, POSITIVE] = 1e-3,
        reset_omega_optimizer: bool = False,
        aggregator: str = "sum",
        fresh_optimizer_after_warmup: bool = True,
        warmup_batch_size: Annotated[int, NON_NEGATIVE] = 0,
        aggregator_params: dict | None = None,
    ):
        term = SaliencyRegulariser(
            lam=lam,
            reduce=reduce,
            dist=dist,
            reduce_batch=reduce_batch,
            saliency_of=saliency_of,
            warmup_fraction=warmup_fraction,
            omega_optimizer=omega_optimizer,
            omega_lr=omega_lr,
            reset_omega_optimizer=reset_omega_optimizer,
            warmup_batch_size=warmup_batch_size,
            fresh_optimizer_after_warmup=fresh_optimizer_after_warmup,
        )
        super().__init__(term, aggregator, aggregator_params)


# The official synthetic script (synthetic_train.py): SGD lr 0.01 for theta and omega, full batch, the
# regulariser summed over the samples, lambda = 0 for the first 11 iterations and 1 after. Its data term is
# (1 / 2mT) sum_t sum_e err^2, the suite's sum_t MSE_t is 2T times that: lambda = 2T gives the official
# objective (times 2T), and omega's lr / 2T gives omega the official steps; the warm-up keeps the official
# share of the budget (11 of 150). Elsewhere the rule's default warm-up is the official two-stage CIFAR
# schedule: half the epochs plain (30 + 30).
_OFFICIAL_SYNTHETIC_SCALE = 2 * len(SCALES)
_SYNTHETIC = {
    "rule.omega_optimizer": "sgd",
    "rule.omega_lr": 0.01 / _OFFICIAL_SYNTHETIC_SCALE,
    "rule.reduce_batch": "sum",
    "rule.warmup_fraction": 11 / 150,
    "rule.lam": 1.0 * _OFFICIAL_SYNTHETIC_SCALE,
}
_MULTIMNIST = {"rule.lam": 0.1}
_PAPER_DEFAULTS: dict[str, dict[str, Any]] = {"synthetic_relations": _SYNTHETIC, "multimnist": _MULTIMNIST}

register_method(
    MethodSpec(
        "srdml",
        "SRDML (Bai & Zhao 2022): hard sharing + saliency regulariser with learned task relations",
        "hps",
        "srdml",
        dataset_overrides=_PAPER_DEFAULTS,
    )
)
register_method(
    MethodSpec(
        "srdml_pcgrad",
        "SRDML with PCGrad on the task gradients of the shared trunk",
        "hps",
        "srdml",
        rule_params={"aggregator": "pcgrad"},
        dataset_overrides=_PAPER_DEFAULTS,
    )
)
register_method(
    MethodSpec(
        "srdml_upgrad",
        "SRDML with TorchJD's UPGrad on the task gradients of the shared trunk",
        "hps",
        "srdml",
        rule_params={"aggregator": "upgrad"},
        dataset_overrides=_PAPER_DEFAULTS,
    )
)
