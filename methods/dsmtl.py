"""DSMTL: deep safe multi-task learning (Yue, Ye, Zhang, Liang, Tsang; arXiv 2111.10601 v2, v1 "SMTL").

A public encoder E_s shared by all tasks, a private encoder E_t per task (same architecture), a gate per
task and a private decoder D_t:  z_t = a_t * E_s(x) + (1 - a_t) * E_t(x),  y_t = D_t(z_t).
With a_t = 0 the task's path is exactly its single-task network, so every task can fall back to its STL
solution: the source of the safeness guarantee. Gates (official v1 code): input-independent logit pairs,
softmax-mixed from 0.5/0.5 (`softmax`), two independent sigmoids (`sigmoid`), or `lite`: a hard
Gumbel-softmax choice (tau 0.1, straight-through) in training, thresholded at 0.5 at test.

The v2 paper body was not available: the learning strategies below (JL, IL) and the compact extension (AL)
are reconstructions, documented as such in docs/fidelity.md.
- `dsmtl_jl`: everything trained jointly on the summed loss; `gate_on_val` learns the gates on a held-out
  part of the training split with a one-step unrolled (DARTS-style) update.
- `dsmtl_il`: stage 1 trains the public encoder by hard sharing; stage 2 freezes it and trains each task's
  private encoder, gate and decoder on that task's loss alone.
- `dsmtl_al`: a public-or-private gate at every encoder stage and task, searched on held-out data; the
  derived discrete architecture (private layers only where chosen) is re-initialised and retrained.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtlbench.architectures import MTLArchitecture, set_frozen
from mtlbench.errors import MtlbenchError
from mtlbench.holdout import HoldoutBatches, split_holdout
from mtlbench.method import MethodSpec, register_method
from mtlbench.nets import Network
from mtlbench.registry import ARCHITECTURES, UPDATE_RULES
from mtlbench.schedule import Stage, Stages
from mtlbench.tasks import TaskSpec
from mtlbench.update_rules import EqualWeights, task_losses

GateKind = Literal["softmax", "sigmoid", "lite"]
Force = Literal["none", "public", "private"]

STAGE1 = "stage 1 (public encoder by hard sharing)"  # DSMTL-IL: what stage 2 builds on
RETRAIN = "retrain the derived network"  # DSMTL-AL: after the search, the method itself


class Gates(nn.Module):
    """Input-independent public/private gates, one logit pair per task (and per stage for AL)."""

    def __init__(self, shape: tuple[int, ...], kind: GateKind, tau: float, force: Force = "none"):
        super().__init__()
        self.kind, self.tau, self.force = kind, tau, force
        self.logits = nn.Parameter(torch.zeros(*shape, 2))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(public weight, private weight), each of the gate shape."""
        if self.force != "none":
            pub = torch.full(self.logits.shape[:-1], 1.0 if self.force == "public" else 0.0, device=self.logits.device)
            return pub, 1.0 - pub
        if self.kind == "sigmoid":
            w = torch.sigmoid(self.logits)
            return w[..., 0], w[..., 1]
        if self.kind == "lite":
            if self.training:
                w = F.gumbel_softmax(self.logits, tau=self.tau, hard=True, dim=-1)
            else:
                pub = (self.logits.softmax(-1)[..., 0] > 0.5).to(self.logits.dtype)
                return pub, 1.0 - pub
            return w[..., 0], w[..., 1]
        w = self.logits.softmax(-1)
        return w[..., 0], w[..., 1]

    def probabilities(self) -> torch.Tensor:
        """Public weight as reported in method_state (softmax / sigmoid value, not a Gumbel sample)."""
        if self.kind == "sigmoid":
            return torch.sigmoid(self.logits.detach())[..., 0]
        return self.logits.detach().softmax(-1)[..., 0]


def _private_encoders(network: Network, public: nn.Module, n: int, init: str) -> nn.ModuleList:
    if init == "copy":
        return nn.ModuleList(copy.deepcopy(public) for _ in range(n))
    return nn.ModuleList(network.make_encoder() for _ in range(n))


def _count(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@ARCHITECTURES.register("dsmtl", "DSMTL: public + private encoders mixed by a gate per task")
class DSMTL(MTLArchitecture):
    public: nn.Sequential
    private: nn.ModuleList
    gates: Gates
    public_only: torch.Tensor  # a buffer

    def __init__(
        self,
        tasks: list[TaskSpec],
        network: Network,
        gate: GateKind = "softmax",
        tau: float = 0.1,
        private_init: Literal["copy", "independent"] = "copy",
        force_gate: Force = "none",
    ):
        super().__init__(tasks, network)
        self.public = network.make_encoder()
        self.private = _private_encoders(network, self.public, len(tasks), private_init)
        self.gates = Gates((len(tasks),), gate, tau, force_gate)
        self.heads = nn.ModuleList(network.make_head(t) for t in tasks)
        self.register_buffer("public_only", torch.tensor(False))  # DSMTL-IL's stage 1 (hard sharing)
        self._public_only = False  # the buffer's value as Python's: read by no step
        self.register_load_state_dict_post_hook(lambda module, keys: module._read_public_only())

    def _read_public_only(self) -> None:
        self._public_only = bool(self.public_only)

    def set_public_only(self, value: bool) -> None:
        self.public_only.fill_(value)
        self._public_only = value

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        shared = self.public(x)
        if self._public_only:
            return [head(shared) for head in self.heads]
        pub, priv = self.gates()
        if self.training:
            return [head(pub[t] * shared + priv[t] * self.private[t](x)) for t, head in enumerate(self.heads)]
        pub_value, priv_value = pub.detach().tolist(), priv.detach().tolist()  # evaluation: skip unused encoders
        outputs = []
        for t, head in enumerate(self.heads):
            if priv_value[t] == 0.0:  # a lite gate that chose public: skip E_t
                z = shared
            elif pub_value[t] == 0.0:
                z = self.private[t](x)
            else:
                z = pub[t] * shared + priv[t] * self.private[t](x)
            outputs.append(head(z))
        return outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.public.parameters() if p.requires_grad]

    def gate_parameters(self) -> list[nn.Parameter]:
        return list(self.gates.parameters())

    def inference_parameter_count(self) -> int:
        if self.gates.kind != "lite" and self.gates.force == "none":
            return sum(p.numel() for p in self.parameters())
        public_w = self.gates.eval()()[0]
        self.gates.train(self.training)
        used_public = bool((public_w > 0).any())
        private = [enc for enc, w in zip(self.private, public_w.tolist(), strict=True) if w < 1]
        return _count(self.heads) + _count(private) + (_count([self.public]) if used_public else 0)

    def method_state(self) -> dict[str, Any]:
        p = self.gates.probabilities().cpu().tolist()
        return {"gates": {t.name: {"public": v, "private": 1 - v} for t, v in zip(self.tasks, p, strict=True)}}


@ARCHITECTURES.register("dsmtl_al", "DSMTL-AL: a public-or-private gate per encoder stage and task")
class DSMTLArchitectureLearning(MTLArchitecture):
    public: nn.Sequential
    private: nn.ModuleList
    gates: Gates
    choice: torch.Tensor  # a buffer

    def __init__(
        self,
        tasks: list[TaskSpec],
        network: Network,
        tau: float = 0.1,
        private_init: Literal["copy", "independent"] = "copy",
    ):
        super().__init__(tasks, network)
        self.public = network.make_encoder()
        self.private = _private_encoders(network, self.public, len(tasks), private_init)
        self.n_stages = len(self.public)
        self.gates = Gates((len(tasks), self.n_stages), "lite", tau)
        self.heads = nn.ModuleList(network.make_head(t) for t in tasks)
        # -1: not derived yet (search); 0: public layer; 1: private layer
        self.register_buffer("choice", torch.full((len(tasks), self.n_stages), -1, dtype=torch.long))
        self._choices: list[list[int]] | None = None  # the derived choices as Python's: read by no step
        # dropout draws and BatchNorm's running statistics would differ if the tasks shared one call
        self._share_first_public = not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd)
            for m in self.public[0].modules()
        )
        self.register_load_state_dict_post_hook(lambda module, keys: module._read_choices())

    def _read_choices(self) -> None:
        self._choices = self.choice.tolist() if bool((self.choice >= 0).all()) else None

    @property
    def derived(self) -> bool:
        return self._choices is not None

    def private_layer(self, t: int, s: int) -> nn.Module:
        return cast(nn.Sequential, self.private[t])[s]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self._choices is not None:
            return [head(self._derived_encoding(t, x)) for t, head in enumerate(self.heads)]
        pub, priv = self.gates()
        # every task's first stage reads x: a deterministic public layer without state is computed once for all
        first_public = self.public[0](x) if self._share_first_public else None
        outputs = []
        for t, head in enumerate(self.heads):
            h = x
            for s in range(self.n_stages):
                public = first_public if s == 0 and first_public is not None else self.public[s](h)
                h = pub[t, s] * public + priv[t, s] * self.private_layer(t, s)(h)
            outputs.append(head(h))
        return outputs

    def _derived_encoding(self, t: int, x: torch.Tensor) -> torch.Tensor:
        h = x
        for s, private in enumerate(cast(list[list[int]], self._choices)[t]):
            h = (self.private_layer(t, s) if private == 1 else self.public[s])(h)
        return h

    def derive(self) -> None:
        """Fix every gate to its more probable side; unused layers stop learning and are not counted."""
        self.choice.copy_((self.gates.probabilities() <= 0.5).long())
        self._read_choices()
        for t in range(len(self.tasks)):
            for s in range(self.n_stages):
                set_frozen(self.private_layer(t, s), int(self.choice[t, s]) != 1)
        for s in range(self.n_stages):
            set_frozen(self.public[s], not bool((self.choice[:, s] == 0).any()))
        set_frozen(self.gates, True)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.public.parameters() if p.requires_grad]

    def gate_parameters(self) -> list[nn.Parameter]:
        return list(self.gates.parameters())

    def inference_parameter_count(self) -> int:
        if not self.derived:
            return sum(p.numel() for p in self.parameters())
        private = [
            self.private_layer(t, s)
            for t in range(len(self.tasks))
            for s in range(self.n_stages)
            if int(self.choice[t, s]) == 1
        ]
        public = [self.public[s] for s in range(self.n_stages) if bool((self.choice[:, s] == 0).any())]
        return _count(self.heads) + _count(private) + _count(public)

    def method_state(self) -> dict[str, Any]:
        p = self.gates.probabilities().cpu().tolist()
        state: dict[str, Any] = {"gates": {t.name: v for t, v in zip(self.tasks, p, strict=True)}}
        if self.derived:
            state["architecture"] = {
                t.name: ["private" if int(c) else "public" for c in self.choice[i]] for i, t in enumerate(self.tasks)
            }
        return state


class _GatesOnHoldout(EqualWeights):
    """Network weights on the training part, gate logits on a held-out part of the training split."""

    holdout_fraction: float

    def prepare(self, train: Any) -> Any:
        if not self.uses_holdout():
            return train
        train, held_out = split_holdout(train, self.holdout_fraction)
        device = next(self.model.parameters()).device
        self._holdout = HoldoutBatches(held_out, self._batch_size, device)
        return train

    def uses_holdout(self) -> bool:
        return True

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        if not hasattr(model, "gate_parameters"):
            raise MtlbenchError(f"update rule {self.name!r} needs a gated DSMTL architecture (dsmtl or dsmtl_al)")
        self._step = 0
        self._batch_size = 256

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state.get("step", 0))


@UPDATE_RULES.register("dsmtl_jl", "DSMTL joint learning; optionally gates learned on held-out data (unrolled)")
class JointLearning(_GatesOnHoldout):
    """`gate_on_val` follows the official bilevel script (train_bilevel.py) by default: each step, the gates
    take one step of their own Adam (`gate_lr`, no weight decay) on the held-out loss of the weights unrolled
    by one SGD step at the network's lr (`unroll_lr` = 0; exact second-order term by double backprop); then
    the weights take the network optimiser's step on the training loss with the updated gates.
    `gate_optimizer=network` instead lets the network's optimiser step the gates, simultaneously with the
    weights (the suite's earlier reading)."""

    model: DSMTL  # checked in bind

    name = "dsmtl_jl"

    def __init__(
        self,
        gate_on_val: bool = False,
        holdout_fraction: float = 0.2,
        unroll_lr: float = 0.0,
        holdout_batch_size: int = 256,
        gate_optimizer: Literal["own", "network"] = "own",
        gate_lr: float = 1e-4,
    ):
        super().__init__()
        self.gate_on_val, self.holdout_fraction, self.unroll_lr = gate_on_val, holdout_fraction, unroll_lr
        self.holdout_batch_size, self.gate_optimizer, self.gate_lr = holdout_batch_size, gate_optimizer, gate_lr

    def uses_holdout(self) -> bool:
        return self.gate_on_val

    def stages(self) -> Stages:
        # with gates learned on held-out data (the official bilevel script) the gates of the reported model
        # are learned through the whole run, so the weights train on the part left after the carve throughout
        return Stages.single(holdout=self.gate_on_val)

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        self._batch_size = self.holdout_batch_size
        self._gate_adam = torch.optim.Adam(model.gate_parameters(), lr=self.gate_lr)

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        if not self.gate_on_val:
            return super().backward(x, targets)
        gates = self.model.gate_parameters()
        gate_grads = self.unrolled_gate_gradient(x, targets, self._holdout(self._step))
        self._step += 1
        if self.gate_optimizer == "network":
            losses = super().backward(x, targets)
            for p, g in zip(gates, gate_grads, strict=True):
                p.grad = g
            return losses
        for p, g in zip(gates, gate_grads, strict=True):
            p.grad = g
        self._gate_adam.step()  # the gates first, as the official script
        for p in gates:
            p.grad = None
        losses = super().backward(x, targets)  # then the weights' gradient, with the updated gates
        for p in gates:
            p.grad = None  # the network's optimiser must not move (or decay) the gates
        return losses

    def unrolled_gate_gradient(self, x, targets, held_out) -> tuple[torch.Tensor, ...]:
        """d L_val(w - xi * dL_train/dw, gates) / d gates, through the one-step unrolled weights
        (xi = `unroll_lr`, or the network's lr when it is 0)."""
        xi = self.unroll_lr or self.network_lr
        gate_ids = {id(p) for p in self.model.gate_parameters()}
        named = dict(self.model.named_parameters())
        gates = {k: p for k, p in named.items() if id(p) in gate_ids}
        weights = {k: p for k, p in named.items() if id(p) not in gate_ids and p.requires_grad}
        train_loss = task_losses(functional_call(self.model, {**weights, **gates}, (x,)), targets, self.tasks).sum()
        grads = torch.autograd.grad(train_loss, list(weights.values()), create_graph=True, allow_unused=True)
        unrolled = {k: (w - xi * g if g is not None else w) for (k, w), g in zip(weights.items(), grads, strict=True)}
        xv, yv = held_out
        val_loss = task_losses(functional_call(self.model, {**unrolled, **gates}, (xv,)), yv, self.tasks).sum()
        return torch.autograd.grad(val_loss, list(gates.values()))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "gate_adam": self._gate_adam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "gate_adam" in state:
            self._gate_adam.load_state_dict(state["gate_adam"])


@UPDATE_RULES.register("dsmtl_il", "DSMTL individual learning: public encoder first, then each task's own parts")
class IndividualLearning(EqualWeights):
    """With the public encoder frozen, the summed loss is separable by task: each task's private encoder,
    gate and decoder receive exactly the gradient of that task's loss alone (and Adam keeps per-parameter
    state), so one run equals T separate stage-2 trainings on the same batches."""

    model: DSMTL  # checked in bind

    name = "dsmtl_il"

    def __init__(self, stage1_fraction: float = 0.5):
        super().__init__()
        self.stage1_fraction = stage1_fraction

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        if not isinstance(model, DSMTL):
            raise MtlbenchError("update rule 'dsmtl_il' needs the dsmtl architecture (arch.name=dsmtl)")

    def on_epoch_start(self, epoch: int) -> bool:
        stage1 = self.staging.stage_at(epoch).stage.name == STAGE1
        self.model.set_public_only(stage1)
        set_frozen(self.model.public, not stage1)
        for module in (*self.model.private, self.model.gates):
            set_frozen(module, stage1)
        return False

    def stages(self) -> Stages:
        # both stages get at least one epoch: stage 2 is the method itself, stage 1 trains what it builds on
        return Stages(
            Stage(STAGE1, "rule.stage1_fraction", self.stage1_fraction, minimum=1),
            Stage("stage 2 (private parts per task, public frozen)", selectable=True),
        )


@UPDATE_RULES.register("dsmtl_al", "DSMTL-AL: search per-stage gates on held-out data, derive, retrain")
class ArchitectureLearning(_GatesOnHoldout):
    model: DSMTLArchitectureLearning  # checked in bind
    name = "dsmtl_al"

    def __init__(self, search_fraction: float = 0.3, holdout_fraction: float = 0.2, holdout_batch_size: int = 256):
        super().__init__()
        self.search_fraction, self.holdout_fraction = search_fraction, holdout_fraction
        self.holdout_batch_size = holdout_batch_size

    def bind(self, model, tasks) -> None:
        super().bind(model, tasks)
        if not isinstance(model, DSMTLArchitectureLearning):
            raise MtlbenchError("update rule 'dsmtl_al' needs the dsmtl_al architecture (arch.name=dsmtl_al)")
        self._batch_size = self.holdout_batch_size
        self._initial = copy.deepcopy(model.state_dict())

    def on_epoch_start(self, epoch: int) -> bool:
        at = self.staging.stage_at(epoch)
        if at.stage.name == RETRAIN and at.begins and not self.model.derived:
            gates = self.model.gates.logits.detach().clone()
            self.model.load_state_dict(self._initial)  # retrain the derived network from its initialisation
            with torch.no_grad():
                self.model.gates.logits.copy_(gates)
            self.model.derive()
        return False

    def stages(self) -> Stages:
        # the derived network is retrained from its initialisation, on every training sample, for the whole
        # budget every method gets; the search comes on top of it (an extra cost, counted in the record's
        # training time) and alone trains on the part of the training split left after the hold-out
        return Stages(
            Stage(
                "search (gates on held-out data; extra cost)",
                "rule.search_fraction",
                self.search_fraction,
                minimum=1,
                extra=True,
                holdout=True,
            ),
            Stage(RETRAIN, selectable=True, fresh_optimizer=True),  # on the whole training split
        )

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = super().backward(x, targets)
        if not self.model.derived:
            # first-order search: the gates follow the held-out loss, the weights the training loss
            gates = self.model.gate_parameters()
            xv, yv = self._holdout(self._step)
            val_loss = task_losses(self.model(xv), yv, self.tasks).sum()
            for p, g in zip(gates, torch.autograd.grad(val_loss, gates), strict=True):
                p.grad = g
            self._step += 1
        return losses


register_method(MethodSpec("dsmtl_jl", "DSMTL joint learning (gated public + private encoders)", "dsmtl", "dsmtl_jl"))
register_method(
    MethodSpec("dsmtl_il", "DSMTL individual learning (public by hard sharing, then per task)", "dsmtl", "dsmtl_il")
)
register_method(
    MethodSpec(
        "dsmtl_al", "DSMTL-AL, the compact extension: learned per-stage public/private layers", "dsmtl_al", "dsmtl_al"
    )
)
