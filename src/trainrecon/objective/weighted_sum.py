"""The common form of every reconstruction objective here: a loss of a weighted sum of per-sample features.

    J(X, M) = F( s ) + R(X, M),   s = sum_j sum_k w_jk(M) g_k(x_j),   g_k(x) = grad_theta phi_k(theta; x)

with candidates X (m, d), multipliers M, per-candidate weights w(M) (m, K), per-sample scalar features
phi(theta; x) in R^K (a stationarity form's features, evaluated with a smooth surrogate activation), an outer
loss F (pluggable; :class:`SquaredDistance` F(s) = sum_p ||target_p - s_p||^2 over every parameter tensor p is
what every method here uses by default, :class:`DeadZoneDistance` its version that forgives each parameter up to
a bound, ``attack.init_tolerance``, :class:`ProjectedDistance` its version blind to given directions,
``attack.remove_init = "project"``) and a prior R (box, multiplier penalty, total variation).

s is never formed per sample: s = grad_theta sum_jk w_jk phi_k(theta; x_j), one reverse pass.  With
u = dF/ds held fixed, the gradient is exact through the **per-candidate term**

    h_j(x) = sum_k w_jk <u, g_k(x)>,     dJ/dx_j = grad_x h_j(x_j),   dJ/dw_jk = <u, g_k(x_j)>,

so one code path serves one or many chunks of candidates (memory stays bounded at m = 1000 of 3072 dims):
for a single chunk, s comes out of the same double-backward pass; for several, s is accumulated first.
h_j is what sample splitting differentiates twice: its Hessian in x is candidate j's splitting matrix.
:meth:`WeightedSumObjective.per_candidate_term` evaluates every h_j at once by a forward-mode derivative of
phi along u in parameter space, differentiable in X.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, ClassVar, Protocol, Sequence

import torch
from torch.func import jvp

Params = Sequence[torch.Tensor]
PhiFn = Callable[[Params, torch.Tensor, torch.Tensor | None], torch.Tensor]  # (theta, X, labels) -> (m, K)
WeightFn = Callable[[torch.Tensor], torch.Tensor]  # multipliers -> (m, K)
PriorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (X, multipliers) -> scalar


class OuterLoss(Protocol):
    """F(s) over the parameter-shaped sum s, and its gradient u = dF/ds."""

    def value(self, s: Sequence[torch.Tensor]) -> torch.Tensor: ...

    def grad(self, s: Sequence[torch.Tensor]) -> list[torch.Tensor]: ...

    def value_and_grad(self, s: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(F(s), u) from one pass over the parameters: what every iteration of an attack asks."""
        ...

    def relative(self, value: float) -> float:
        """F(s) / F(0): the share of the target the weighted sum leaves unexplained (scale free)."""
        ...


@dataclass
class SquaredDistance:
    """F(s) = sum_p ||target_p - s_p||^2,  u = 2 (s - target)."""

    target: list[torch.Tensor]

    #: F is ||A (target - s)||^2 for a linear map A (:meth:`whiten`): least squares in the weights applies
    quadratic: ClassVar[bool] = True

    def whiten(self, r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """A r for parameter-shaped r: the identity here."""
        return list(r)

    def value(self, s: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(((t - si) ** 2).sum() for t, si in zip(self.target, s))

    def grad(self, s: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """u alone, from :meth:`value_and_grad` (each loss writes its gradient once)."""
        return self.value_and_grad(s)[1]

    def value_and_grad(self, s: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """r = s - target, F = sum_p ||r_p||^2, u = 2 r."""
        r = [si - t for si, t in zip(s, self.target)]
        value = sum((ri * ri).sum() for ri in r)
        return value, [ri.mul_(2) for ri in r]

    @cached_property
    def _norm(self) -> float:
        return float(sum((t.double() ** 2).sum() for t in self.target))

    @property
    def baseline(self) -> float:
        """F(0): what the weighted sum has to explain (the scale a prior's weight is relative to)."""
        return self._norm

    def relative(self, value: float) -> float:
        return value / self._norm if self._norm > 0 else float("inf")


@dataclass
class DeadZoneDistance(SquaredDistance):
    """F(s) = sum_p sum_k (|target_pk - s_pk| - b_p)_+^2,  u = 2 sign(s - target) (|s - target| - b_p)_+.

    Each parameter of tensor p is forgiven up to b_p: what is left in theta of an initialisation theta_0 with
    |theta_0| <= b_p (PyTorch's default U(-b, b)) that no weighted sum of gradients need explain.  b_p = 0 is
    :class:`SquaredDistance`.  ``relative`` divides by F(0), the target's own excess over the zone."""

    tolerance: list[float]

    quadratic: ClassVar[bool] = False  # the dead zone makes F piecewise quadratic in s

    def __post_init__(self) -> None:
        if len(self.tolerance) != len(self.target):
            raise ValueError(f"{len(self.tolerance)} tolerances for {len(self.target)} parameter tensors")

    def value(self, s: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(((t - si).abs() - b).clamp_min(0).pow(2).sum() for t, si, b in zip(self.target, s, self.tolerance))

    def value_and_grad(self, s: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """r = s - target, e = (|r| - b)_+, F = sum e^2, u = 2 e sign(r)."""
        r = [si - t for si, t in zip(s, self.target)]
        e = [(ri.abs() - b).clamp_min(0) for ri, b in zip(r, self.tolerance)]
        value = sum((ei * ei).sum() for ei in e)
        return value, [2 * ei * ri.sign() for ei, ri in zip(e, r)]

    @cached_property
    def _norm(self) -> float:
        return float(self.value([torch.zeros_like(t) for t in self.target]))


@dataclass
class ProjectedDistance(SquaredDistance):
    """F(s) = sum_p ||P_p (target_p - s_p)||^2 = min over c_p of sum_p ||target_p - c_p d_p - s_p||^2,
    u = -2 P_p (target_p - s_p), with P_p = I - d_p d_p^T / ||d_p||^2 the projection that removes direction d_p
    from parameter tensor p (a zero d_p removes nothing).

    With d = theta_0 this is the stationarity residual blind to how much of the initialisation training kept:
    c_p = 0 is the plain residual of theta_T, c_p = 1 that of the displacement theta_T - theta_0, and anything
    between is weight decay's shrinking of theta_0 (``attack.remove_init = "project"``).  F stays quadratic in
    s, so every part of the weighted-sum machinery (u, the per-candidate term, splitting) holds unchanged."""

    directions: list[torch.Tensor]

    def __post_init__(self) -> None:
        if len(self.directions) != len(self.target):
            raise ValueError(f"{len(self.directions)} directions for {len(self.target)} parameter tensors")
        self._unit = [d / d.norm() if d.norm() > 0 else torch.zeros_like(d) for d in self.directions]

    def project(self, r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """P_p r_p for every parameter tensor p."""
        return [ri - e * (ri * e).sum() for ri, e in zip(r, self._unit)]

    def whiten(self, r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """A r = P r (:meth:`project`)."""
        return self.project(r)

    def value(self, s: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum((pr ** 2).sum() for pr in self.project([t - si for t, si in zip(self.target, s)]))

    def value_and_grad(self, s: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """P r with r = s - target, F = sum ||P r||^2, u = 2 P r."""
        pr = self.project([si - t for si, t in zip(s, self.target)])
        value = sum((p * p).sum() for p in pr)
        return value, [p.mul_(2) for p in pr]

    @cached_property
    def _norm(self) -> float:
        return float(sum((pr.double() ** 2).sum() for pr in self.project(self.target)))


@dataclass
class TensorWeighted:
    """F(s) = inner(c s) with c_p = sqrt(gamma_p) per parameter tensor p, the inner loss built on the scaled target
    c target: for the squared distance sum_p gamma_p ||target_p - s_p||^2, the residual of each tensor p counted
    gamma_p times (``attack.deep_weight``; the projected distance alike, since its projection is per tensor).
    u = c inner.grad(c s); ``target`` is the unscaled one (what a refit explains); ``baseline`` and ``relative``
    are the weighted F's."""

    inner: SquaredDistance
    scale: list[float]
    target: list[torch.Tensor]

    def __post_init__(self) -> None:
        if not len(self.scale) == len(self.target) == len(self.inner.target):
            raise ValueError(f"{len(self.scale)} scales for {len(self.target)} parameter tensors")

    @property
    def quadratic(self) -> bool:
        return self.inner.quadratic

    def _scaled(self, r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [ri if c == 1 else c * ri for c, ri in zip(self.scale, r)]

    def whiten(self, r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.inner.whiten(self._scaled(r))

    def value(self, s: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.inner.value(self._scaled(s))

    def grad(self, s: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.value_and_grad(s)[1]

    def value_and_grad(self, s: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        value, u = self.inner.value_and_grad(self._scaled(s))
        return value, self._scaled(u)

    @property
    def baseline(self) -> float:
        return self.inner.baseline

    def relative(self, value: float) -> float:
        return self.inner.relative(value)


@dataclass
class SummedCopies:
    """F(s_1, ..., s_k) = inner(s_1 + ... + s_k) over k blocks of parameter tensors, u = (u, ..., u) with
    u = inner.grad(s_1 + ... + s_k): the features evaluated at k parameter points theta_1 .. theta_k (the blocks of
    the objective's theta), their gradients added before the inner loss scores them (Loo's kernel at theta_0 and
    theta_T at once, ``kernel_at = "both"``)."""

    inner: SquaredDistance
    copies: int

    def _total(self, s: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        p = len(s) // self.copies
        return [sum(s[i + k * p] for k in range(self.copies)) for i in range(p)]

    def value(self, s: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.inner.value(self._total(s))

    def grad(self, s: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.value_and_grad(s)[1]

    def value_and_grad(self, s: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        value, u = self.inner.value_and_grad(self._total(s))
        return value, u * self.copies

    @property
    def target(self) -> list[torch.Tensor]:
        return self.inner.target

    @property
    def baseline(self) -> float:
        return self.inner.baseline

    def relative(self, value: float) -> float:
        return self.inner.relative(value)


def weighted_directional(phi: PhiFn, theta: Params, u: Sequence[torch.Tensor], X: torch.Tensor, W: torch.Tensor,
                         labels: torch.Tensor | None) -> torch.Tensor:
    """h_j = sum_k W_jk D_theta phi_k(theta; x_j)[u] = sum_k W_jk <u, grad_theta phi_k(theta; x_j)> for every row of
    X, shape (m,): the directional derivative of phi along u in parameter space (forward mode), weighted;
    differentiable in X and W."""
    _, tangent = jvp(lambda *params: phi(list(params), X, labels), tuple(theta), tuple(u))
    return (W * tangent).sum(dim=1)


@dataclass
class WeightedSumObjective:
    """J(X, M) = F(s) + prior(X, M), s = grad_theta sum_jk w_jk(M) phi_k(theta; x_j).

    ``theta`` are the parameters at which features are evaluated (theta_T, or theta_0 for the NTK kernel at
    initialisation); ``outer`` what the weighted sum is scored by (its target is theta_T for KKT and
    weight decay, theta_T - theta_0 for NTK).  ``first_layer`` (optional) maps theta to the network's first
    layer as an affine map with its units' row norms (``models.architecture.FirstLayer``), or None where the
    network does not start affine: what sample splitting's kink diagnostics read; without it they take
    theta[0] as the first-layer matrix.  ``autocast`` (``attack.autocast``): a dtype (bfloat16) in which the
    passes through phi run under ``torch.autocast`` on X's device (matrix products in it, accumulated in
    float32: AMX on Intel CPUs that have it, tensor cores on CUDA); s, F, u and the prior stay in X's dtype.
    None (the default): every operation in X's dtype.  ``fused`` (``attack.compile``): a
    :class:`~trainrecon.objective.fused.CompiledPass` built for this objective's phi and outer loss, which
    computes F(s), dJ/dX and dJ/dW of one chunk in one compiled graph; used where the candidates are one chunk
    (the eager passes where it is None or has failed).  ``fused_prior``: a
    :class:`~trainrecon.objective.fused.CompiledPrior` of ``prior``, which computes (R, dR/dX, dR/dM) in one
    compiled graph (autograd of the eager prior where it is None or has failed).
    """

    theta: list[torch.Tensor]
    outer: OuterLoss
    phi: PhiFn
    weights: WeightFn
    prior: PriorFn
    labels: torch.Tensor | None
    chunk_size: int = 0
    first_layer: Callable[[list[torch.Tensor]], object] | None = None
    autocast: torch.dtype | None = None
    fused: Callable | None = None
    fused_prior: Callable | None = None

    def _reduced(self, X: torch.Tensor):
        """The context the passes through phi run in (``autocast``)."""
        return torch.autocast(X.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None)

    def _chunks(self, m: int) -> list[slice]:
        c = self.chunk_size if 0 < self.chunk_size < m else m
        return [slice(i, min(i + c, m)) for i in range(0, m, c)]

    def _lab(self, sl: slice) -> torch.Tensor | None:
        return None if self.labels is None else self.labels[sl]

    def feature_sum(self, X: torch.Tensor, W: torch.Tensor) -> list[torch.Tensor]:
        """s = sum_j sum_k W_jk grad_theta phi_k(theta; x_j), accumulated over chunks (no graph kept)."""
        theta = [p.detach().requires_grad_(True) for p in self.theta]
        s = [torch.zeros_like(p) for p in theta]
        for sl in self._chunks(X.shape[0]):
            with self._reduced(X):
                out = (self.phi(theta, X[sl].detach(), self._lab(sl)) * W[sl].detach()).sum()
                grads = torch.autograd.grad(out, theta, allow_unused=True)
            for acc, g in zip(s, grads):
                if g is not None:
                    acc += g
        return s

    def value_and_grad(self, X: torch.Tensor, M: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Returns ({'total', 'stationarity', 'relative_stationarity', 'prior'}, dJ/dX, dJ/dM);
        relative_stationarity = F(s) / F(0)."""
        X = X.detach().requires_grad_(True)
        M = M.detach().requires_grad_(True)
        W = self.weights(M)
        Wd = W.detach()
        chunks = self._chunks(X.shape[0])
        done = (None if self.fused is None or len(chunks) > 1
                else self.fused([p.detach() for p in self.theta], X.detach(), Wd, self.labels))
        stat, gx, gw = done if done is not None else self._passes(X.detach(), Wd, chunks)
        (gm,) = torch.autograd.grad(W, M, grad_outputs=gw, allow_unused=True)
        gm = torch.zeros_like(M) if gm is None else gm
        prior_done = None if self.fused_prior is None else self.fused_prior(X.detach(), M.detach())
        if prior_done is not None:
            prior, px, pm = prior_done
        else:
            prior = self.prior(X, M)
            px, pm = torch.autograd.grad(prior, [X, M], allow_unused=True) if prior.requires_grad else (None, None)
        gx = gx + (px if px is not None else 0)
        gm = gm + (pm if pm is not None else 0)
        values = {"stationarity": float(stat.detach()), "prior": float(prior.detach())}
        values["total"] = values["stationarity"] + values["prior"]
        values["relative_stationarity"] = self.outer.relative(values["stationarity"])
        return values, gx.detach(), gm.detach()

    def _passes(self, X: torch.Tensor, Wd: torch.Tensor, chunks: list[slice]):
        """(F(s), dJ/dX, dJ/dW) by the eager passes: per chunk, s's reverse pass kept as a graph (s accumulated over
        the chunks first where there are several), then the reverse pass of h = <s_chunk, u>."""
        theta = [p.detach().requires_grad_(True) for p in self.theta]
        s = self.feature_sum(X, Wd) if len(chunks) > 1 else None
        stat, u = (None, None) if s is None else self.outer.value_and_grad(s)
        gx = torch.zeros_like(X)
        gw = torch.zeros_like(Wd)
        for sl in chunks:
            xc = X[sl].detach().requires_grad_(True)
            wc = Wd[sl].clone().requires_grad_(True)
            with self._reduced(X):
                out = (self.phi(theta, xc, self._lab(sl)) * wc).sum()
                gs = torch.autograd.grad(out, theta, create_graph=True, allow_unused=True)
            gs = [torch.zeros_like(p) if g is None else g for p, g in zip(theta, gs)]
            if s is None:  # one chunk: this pass's sum is the whole s
                s = [g.detach() for g in gs]
                stat, u = self.outer.value_and_grad(s)
            with self._reduced(X):
                h = sum((g * ui).sum() for g, ui in zip(gs, u))
                gxc, gwc = torch.autograd.grad(h, [xc, wc], allow_unused=True)
            if gxc is not None:
                gx[sl] = gxc
            gw[sl] = gwc
        return stat, gx, gw

    def normal_equations(self, X: torch.Tensor, max_bytes: float | None = None):
        """The weights' least-squares problem for fixed candidates X, F being quadratic (||A (target - s)||^2):

            F(sum_jk W_jk g_jk) = c0 - 2 b.w + w^T K w,   w = vec(W),   g_jk = grad_theta phi_k(theta; x_j),
            K = (A G)(A G)^T,   b = (A G)(A target),   c0 = ||A target||^2,

        over the rows g_jk (m K of them, row j K + k, float64 numpy).  Returns (K, b, c0, K_outputs), or a one-line
        reason why not: F not quadratic (a dead zone, summed copies), or the rows would take more than
        ``max_bytes``.  Solving it (NNLS or least squares) is :func:`trainrecon.models.stationarity.gram_fit`."""
        if not getattr(self.outer, "quadratic", False):
            return f"the stationarity term ({type(self.outer).__name__}) is not a plain quadratic in the weights"
        theta = [p.detach().requires_grad_(True) for p in self.theta]
        n_params = sum(p.numel() for p in theta)
        X = X.detach()
        k = self.phi(theta, X[:1], self._lab(slice(0, 1))).shape[1]
        if max_bytes is not None and 8.0 * X.shape[0] * k * n_params > max_bytes:
            return (f"the per-candidate gradients ({X.shape[0] * k} x {n_params} floats) would take more than "
                    f"{max_bytes / 2**30:.1f} GiB")
        rows = torch.empty(X.shape[0] * k, n_params, dtype=torch.float64, device=X.device)
        for j in range(X.shape[0]):  # a backward pass per candidate and output: no vmap over custom activations
            out = self.phi(theta, X[j:j + 1], self._lab(slice(j, j + 1)))[0]
            for c in range(k):
                gs = torch.autograd.grad(out[c], theta, retain_graph=c + 1 < k, allow_unused=True)
                gs = self.outer.whiten([torch.zeros_like(p) if g is None else g for p, g in zip(theta, gs)])
                rows[j * k + c] = torch.cat([g.reshape(-1) for g in gs]).double()
        t = torch.cat([v.reshape(-1) for v in self.outer.whiten([p.detach() for p in self.outer.target])]).double()
        return (rows @ rows.T).cpu().numpy(), (rows @ t).cpu().numpy(), float(t @ t), k

    def u(self, X: torch.Tensor, M: torch.Tensor) -> list[torch.Tensor]:
        """u = dF/ds at the current candidates."""
        return self.outer.grad(self.feature_sum(X, self.weights(M)))

    def hvp_parts(self, u: Sequence[torch.Tensor]) -> list[Sequence[torch.Tensor]]:
        """u in one part (a simulation's trajectory comes in several: its Hessian-vector products are sums)."""
        return [u]

    def per_candidate_term(self, X: torch.Tensor, W: torch.Tensor, u: Sequence[torch.Tensor],
                           labels: torch.Tensor | None = None, rows: Sequence[int] | None = None) -> torch.Tensor:
        """h_j = sum_k W_jk <u, grad_theta phi_k(theta; x_j)> for every row of X, shape (m,), differentiable in X:
        the directional derivative of phi along u in parameter space (forward mode), weighted.  ``labels``
        default to the objective's (pass the rows' own labels when X is a subset or a perturbed copy); ``rows``
        (the candidates' positions in the set) changes nothing here: every term is the same function of x."""
        labels = self.labels if labels is None else labels
        return weighted_directional(self.phi, [p.detach() for p in self.theta], [ui.detach() for ui in u], X, W,
                                    labels)
