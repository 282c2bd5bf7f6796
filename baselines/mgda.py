"""MGDA and MGDA-UB (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

Each step finds weights alpha on the simplex minimising ||sum_t alpha_t g_t||^2 (the min-norm point of the
convex hull of the task gradients g_t, Eq. 3 of the paper) and descends along sum_t alpha_t L_t.
MGDA takes g_t w.r.t. all shared parameters (T backward passes); MGDA-UB takes g_t w.r.t. the shared
representation A (heads only, then one trunk backward), which upper-bounds the same objective.

The min-norm problem is solved on the T x T Gram matrix. Default: Wolfe's exact min-norm-point (active-set)
algorithm, which terminates with the optimum; it works on the Gram matrix scaled to a unit diagonal maximum,
so its answer does not depend on the gradients' scale. The official training loop's projected-gradient solver
(`find_min_norm_element`) is `solver=projected_gradient`, and the paper's Frank-Wolfe `solver=frank_wolfe`;
both start from the best pair with the official two-vector rule, and both stop after `max_iter` iterations
(the official loop's iteration counter is never incremented, so its cap never fires: not copied).

The heads (`rule.head_update`): the official code descends one backward of sum_t alpha_t L_t, so each task's
head gets alpha_t times its own loss gradient (`scaled`, the default); the paper's Algorithm 2 updates each
head by its own task gradient and only the shared parameters by the min-norm combination (`own`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from mtlbench.errors import MtlbenchError
from mtlbench.host_reads import host_side, to_host
from mtlbench.method import MethodSpec, register_method
from mtlbench.registry import UPDATE_RULES
from mtlbench.update_rules import UpdateRule, aggregated_backward, flat_task_gradients, task_losses

Solver = Literal["active_set", "projected_gradient", "frank_wolfe"]


def _pair_weight(g11: torch.Tensor, g12: torch.Tensor, g22: torch.Tensor) -> torch.Tensor:
    """Weight a on the first vector minimising ||a v1 + (1 - a) v2||^2, from their Gram entries."""
    denom = g11 + g22 - 2 * g12
    # identical vectors (denom <= 0): any weight is optimal, 0.5 (a NaN Gram matrix stays NaN); on the device
    return torch.where(denom <= 0, torch.full_like(g11, 0.5), ((g22 - g12) / denom).clamp(0.0, 1.0))


def _official_pair_weight(g11: torch.Tensor, g12: torch.Tensor, g22: torch.Tensor) -> torch.Tensor:
    """The official two-vector rule (`_min_norm_element_from2`): the exact weight on the first vector, except
    that an endpoint optimum is returned as 0.999 / 0.001 rather than 1 / 0."""
    interior = (g22 - g12) / (g11 + g22 - 2 * g12)
    return torch.where(g12 >= g11, 0.999, torch.where(g12 >= g22, 0.001, interior)).to(g11.dtype)


def _best_pair(gram: torch.Tensor) -> torch.Tensor:
    """The optimum restricted to the best pair of tasks, by the official two-vector rule (the official
    solvers' start)."""
    t = gram.shape[0]
    best, alpha = float("inf"), torch.zeros(t, dtype=gram.dtype, device=gram.device)
    for i in range(t):
        for j in range(i + 1, t):
            a = _official_pair_weight(gram[i, i], gram[i, j], gram[j, j])
            value = float(a * a * gram[i, i] + 2 * a * (1 - a) * gram[i, j] + (1 - a) ** 2 * gram[j, j])
            if value < best:
                best = value
                alpha = torch.zeros(t, dtype=gram.dtype, device=gram.device)
                alpha[i], alpha[j] = a, 1 - a
    return alpha


def project_to_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex (sort-based)."""
    u = torch.sort(y, descending=True).values
    css = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(y) + 1, dtype=y.dtype, device=y.device)
    rho = int(torch.nonzero(u - css / k > 0)[-1])
    return (y - css[rho] / (rho + 1)).clamp_min(0.0)


def projected_gradient_min_norm(gram: torch.Tensor, tol: float = 1e-5, max_iter: int = 250) -> torch.Tensor:
    """The official training loop's solver (`find_min_norm_element`): from the best pair, step along the
    negative gradient projected on the simplex's tangent plane as far as the first weight reaching 0 or 1,
    project onto the simplex, and line-search exactly between the two points; stop when the weights move less
    than `tol` (L1; the previous point is returned, as there) or after `max_iter` iterations."""
    alpha = _best_pair(gram)
    n = len(alpha)
    for _ in range(max_iter):
        grad = -(gram @ alpha)
        proj = grad - grad.sum() / n
        steps = torch.cat([-alpha[proj < 0] / proj[proj < 0], (1 - alpha[proj > 0]) / proj[proj > 0]])
        steps = steps[steps > 1e-7]
        t = min(1.0, float(steps.min())) if len(steps) else 1.0
        candidate = project_to_simplex(alpha + t * proj)
        g11, g12, g22 = alpha @ gram @ alpha, alpha @ gram @ candidate, candidate @ gram @ candidate
        gamma = _official_pair_weight(g11, g12, g22)
        new = gamma * alpha + (1 - gamma) * candidate
        if float((new - alpha).abs().sum()) < tol:
            return alpha
        alpha = new
    return alpha


def _affine_minimiser(gram_s: torch.Tensor) -> torch.Tensor:
    """argmin_w w^T G_S w subject to sum(w) = 1 (no sign constraint), via the KKT system."""
    k = gram_s.shape[0]
    kkt = torch.zeros(k + 1, k + 1, dtype=gram_s.dtype, device=gram_s.device)
    kkt[:k, :k] = gram_s
    kkt[:k, k] = 1.0
    kkt[k, :k] = 1.0
    rhs = torch.zeros(k + 1, dtype=gram_s.dtype, device=gram_s.device)
    rhs[k] = 1.0
    solution = torch.linalg.lstsq(kkt, rhs[:, None]).solution[:, 0]
    return solution[:k]


def active_set_min_norm(gram: torch.Tensor, tol: float = 1e-10, max_iter: int = 1000) -> torch.Tensor:
    """Wolfe's min-norm-point algorithm on a Gram matrix: exact in finitely many steps.

    Major cycle: add the task whose gradient most violates the optimality condition <d, g_t> >= ||d||^2.
    Minor cycle: move to the affine minimiser of the current support, dropping tasks whose weight hits zero.
    """
    t = gram.shape[0]
    # Work at unit scale: the KKT system mixes Gram entries with the constraint's ones, and a least-squares
    # solve of an unscaled system (entries ~1e8 or ~1e-12) loses the constraint. Scaling the Gram matrix
    # leaves the minimiser unchanged.
    gram = gram / gram.diagonal().max().clamp_min(torch.finfo(gram.dtype).tiny)
    scale = 1.0
    first = int(torch.argmin(gram.diagonal()))
    support = [first]
    alpha = torch.zeros(t, dtype=gram.dtype, device=gram.device)
    alpha[first] = 1.0
    steps = 0
    while steps < max_iter:
        steps += 1
        g_alpha = gram @ alpha
        norm_sq = alpha @ g_alpha
        j = int(torch.argmin(g_alpha))
        if float(g_alpha[j] - norm_sq) >= -tol * scale or j in support:
            return alpha
        support.append(j)
        while steps < max_iter:  # minor cycle
            steps += 1
            idx = torch.tensor(support, device=gram.device)
            w = _affine_minimiser(gram[idx][:, idx])
            if bool((w > tol).all()):
                alpha = torch.zeros_like(alpha)
                alpha[idx] = w
                break
            lam = alpha[idx]
            shrinking = w <= tol
            theta = torch.min(lam[shrinking] / (lam[shrinking] - w[shrinking]).clamp_min(1e-300)).clamp(0.0, 1.0)
            lam = (lam + theta * (w - lam)).clamp_min(0.0)
            support = [s for s, v in zip(support, lam.tolist(), strict=True) if v > tol]
            alpha = torch.zeros_like(alpha)
            alpha[idx] = torch.where(lam > tol, lam, torch.zeros_like(lam))
            alpha = alpha / alpha.sum()
    return alpha


def frank_wolfe_min_norm(gram: torch.Tensor, tol: float = 1e-5, max_iter: int = 250) -> torch.Tensor:
    """The paper's Algorithm 2 (`find_min_norm_element_FW`): start from the best pair, exact line search
    towards the best vertex; stops when the weights move less than `tol` or after `max_iter` iterations."""
    alpha = _best_pair(gram)
    for _ in range(max_iter):
        g_alpha = gram @ alpha
        j = int(torch.argmin(g_alpha))
        v1v1, v1v2, v2v2 = alpha @ g_alpha, g_alpha[j], gram[j, j]
        gamma = _official_pair_weight(v1v1, v1v2, v2v2)  # weight kept on the current point
        new = gamma * alpha
        new[j] += 1 - gamma
        change = float((new - alpha).abs().sum())
        alpha = new
        if change < tol:
            break
    return alpha


def min_norm_weights(
    grads: torch.Tensor, solver: Solver = "active_set", tol: float | None = None, max_iter: int | None = None
) -> torch.Tensor:
    """Weights alpha (T,) on the simplex minimising ||alpha^T grads||, for `grads` of shape (T, D).

    Works on the T x T Gram matrix in float64: two tasks on the gradients' device (closed form), more on the
    host (one copy of the Gram matrix; the solvers' steps are decided there); the gradients never leave it.
    """
    if grads.dim() != 2:
        raise ValueError(f"grads must be (T, D), got shape {tuple(grads.shape)}")
    g = grads.to(torch.float64)
    gram = g @ g.T
    t = gram.shape[0]
    if t == 1:
        return torch.ones(1, dtype=grads.dtype, device=grads.device)
    if t == 2:
        weight = _pair_weight if solver == "active_set" else _official_pair_weight
        a = weight(gram[0, 0], gram[0, 1], gram[1, 1])
        return torch.stack([a, 1 - a]).to(grads.dtype)
    with host_side():  # the solvers decide their steps on the host: the T x T Gram matrix is read once
        if solver == "active_set":
            alpha = active_set_min_norm(to_host(gram), tol=1e-10 if tol is None else tol, max_iter=max_iter or 1000)
        else:
            iterate = projected_gradient_min_norm if solver == "projected_gradient" else frank_wolfe_min_norm
            alpha = iterate(to_host(gram), tol=1e-5 if tol is None else tol, max_iter=max_iter or 250)
    return alpha.to(device=grads.device, dtype=grads.dtype)


Normalization = Literal["none", "l2", "loss", "loss+"]
HeadUpdate = Literal["scaled", "own"]


def normalize_grads(grads: torch.Tensor, losses: torch.Tensor, how: Normalization) -> torch.Tensor:
    """The official code's gradient normalisations: none, l2 (unit norm), loss (divide by the loss),
    loss+ (divide by loss times norm)."""
    if how == "none":
        return grads
    norms = grads.norm(dim=1).clamp_min(1e-12)
    if how == "l2":
        return grads / norms[:, None]
    if how == "loss":
        return grads / losses.clamp_min(1e-12)[:, None]
    return grads / (losses.clamp_min(1e-12) * norms)[:, None]


class _MinNormRule(UpdateRule):
    """Shared machinery of MGDA and MGDA-UB: solve, log the weights, descend along sum alpha_t L_t."""

    requires_shared_parameters = True
    combines_losses = True

    def task_gradients(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        """(T, D): the task gradients whose min-norm combination gives the weights."""
        raise NotImplementedError

    def objective(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        """sum_t alpha_t L_t: the official update, heads scaled by alpha_t (a rule composing with this one, as
        SRDML's `rule.aggregator=mgda`, descends it whatever `head_update` says)."""
        return (self.weights(self.task_gradients(losses, rep), losses) * losses).sum()

    def __init__(
        self,
        normalization: Normalization = "none",
        solver: Solver = "active_set",
        max_iter: int = 250,
        tol: float = 1e-5,
        head_update: HeadUpdate = "scaled",
    ):
        """`head_update`: `scaled` (official code) gives each task head alpha_t times its loss gradient; `own`
        (the paper's Algorithm 2) gives each head the unscaled gradient of its own task loss, while the shared
        parameters (MGDA) or the shared representation (MGDA-UB) get the min-norm combination either way."""
        if head_update not in ("scaled", "own"):
            raise MtlbenchError(f"rule.head_update must be 'scaled' or 'own', got {head_update!r}")
        self.normalization, self.solver, self.max_iter, self.tol = normalization, solver, max_iter, tol
        self.head_update = head_update
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._last: list[float] = []

    def weights(self, grads: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        grads = normalize_grads(grads, losses.detach(), self.normalization)
        iterative = self.solver != "active_set"
        alpha = min_norm_weights(
            grads, self.solver, self.tol if iterative else None, self.max_iter if iterative else None
        )
        alpha = self.last_alpha = alpha.detach()
        self._sum = alpha if self._sum is None else self._sum + alpha
        self._count += 1
        return alpha

    def on_epoch_start(self, epoch: int) -> bool:
        self._sum, self._count = None, 0
        return False

    def _mean(self) -> list[float]:
        if self._sum is not None:
            self._last = (self._sum / self._count).tolist()
        return self._last

    def epoch_log(self) -> dict[str, float]:
        return {f"alpha.{t.name}": v for t, v in zip(self.tasks, self._mean(), strict=True)}

    def method_state(self) -> dict[str, Any]:
        return {"task_weights": {t.name: v for t, v in zip(self.tasks, self._mean(), strict=True)}}

    def state_dict(self) -> dict[str, Any]:
        return {"last": self._mean()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last = list(state.get("last", []))


@UPDATE_RULES.register("mgda", "MGDA: min-norm weights of the task gradients w.r.t. all shared parameters")
class MGDA(_MinNormRule):
    name = "mgda"

    def task_gradients(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        return flat_task_gradients(losses, self.model.shared_parameters())

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        losses = task_losses(self.model(x), targets, self.tasks)
        if self.head_update == "own":  # shared: sum_t alpha_t g_t; every other parameter: its plain loss gradient
            aggregated_backward(self.model, losses, lambda grads: self.weights(grads, losses).to(grads.dtype) @ grads)
        else:
            self.objective(losses, None).backward()
        return losses.detach()


@UPDATE_RULES.register("mgda_ub", "MGDA-UB: min-norm weights of the task gradients w.r.t. the shared representation")
class MGDAUB(_MinNormRule):
    name = "mgda_ub"
    requires_shared_representation = True

    def task_gradients(self, losses: torch.Tensor, rep: torch.Tensor | None) -> torch.Tensor:
        assert rep is not None, "MGDA-UB differentiates w.r.t. the shared representation"
        return torch.stack([torch.autograd.grad(loss, rep, retain_graph=True)[0].reshape(-1) for loss in losses])

    def backward(self, x: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        rep = self.model.encode(x)
        rep_leaf = rep.detach().requires_grad_(True)
        losses = task_losses(self.model.decode(rep_leaf), targets, self.tasks)
        if self.head_update == "own":
            grads = self.task_gradients(losses, rep_leaf)
            rep_grad = (self.weights(grads, losses).to(grads.dtype) @ grads).view_as(rep)  # d(sum alpha L)/dA
            losses.sum().backward()  # each head its own loss gradient (rep_leaf.grad is not used)
            rep.backward(rep_grad)
        else:
            self.objective(losses, rep_leaf).backward()  # heads, and d(sum alpha L)/dA into rep_leaf.grad
            rep.backward(rep_leaf.grad)  # one backward through the trunk
        return losses.detach()


register_method(MethodSpec("mgda", "MGDA (Sener & Koltun 2018) on hard sharing", "hps", "mgda"))
register_method(MethodSpec("mgda_ub", "MGDA-UB (Sener & Koltun 2018) on hard sharing", "hps", "mgda_ub"))
