"""The stationarity forms: what a trained network's parameters are a weighted sum of.

Every reconstruction attack here inverts, and every victim trainer measures its distance to, one equation

    target = sum_i sum_k w_ik grad_theta phi_k(theta_at; x_i),      phi(x) = features(f(x), label)

| form            | features phi(x)                       | target              | theta_at            | w     |
|-----------------|---------------------------------------|---------------------|---------------------|-------|
| ``kkt``         | y f(x) (binary), f_y - f_r (K classes) | theta               | theta               | >= 0  |
| ``weight_decay``| f(x)                                  | theta               | theta               | free  |
| ``ntk``         | f_k(x), k = 1..K                      | theta_T - theta_0   | theta_T or theta_0  | free  |

r is the **runner-up** class max_{j != y} f_j(x) on forward values (Buzaglo et al.; its gradient reaches the
argmax only): the one runner-up margin of the project.  :meth:`StationarityForm.residual` fits w on the true
training points, min_w ||target - sum_ik w_ik g_ik|| / ||target||, from the Gram matrix J J^T: the floor any
reconstruction of that victim can reach.  The attacks (:mod:`trainrecon.attacks`) evaluate the same
``features`` with a smooth surrogate activation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import scipy.optimize
import torch
from torch.func import jacrev, vmap

from .architecture import Architecture
from .parameters import flatten, forward, unflatten


def runner_up(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Index (m, 1) of the runner-up class: argmax_{j != y} out_j, on forward values."""
    y = labels.long().reshape(-1, 1)
    return out.detach().scatter(1, y, -torch.inf).argmax(dim=1, keepdim=True)


def margin_matrix(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Margins q_ij: (m, 1) with q = y f(x) for one output; (m, K) with q_ij = f_y - f_j for K outputs, +inf in
    the label's own column (so it never counts as a constraint)."""
    if out.shape[1] == 1:
        return labels.reshape(-1, 1).to(out.dtype) * out
    y = labels.long().reshape(-1, 1)
    return (out.gather(1, y) - out).scatter(1, y, torch.inf)


def margin(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(m, 1): y f(x) for one output, f_y - f_r (runner-up r) for several."""
    if out.shape[1] == 1:
        return labels.reshape(-1, 1).to(out.dtype) * out
    y = labels.long().reshape(-1, 1)
    return out.gather(1, y) - out.gather(1, runner_up(out, labels))


def gram_fit(K: np.ndarray, b: np.ndarray, c0: float, nonneg: bool) -> tuple[np.ndarray, float]:
    """min_w c0 - 2 b.w + w^T K w  (= ||t - J^T w||^2 with K = J J^T, b = J t, c0 = ||t||^2).

    ``nonneg``: w >= 0 by NNLS, else the minimum-norm least-squares w.  Returns (w, residual^2).  Uses
    K = V diag(e) V^T, A = diag(sqrt e) V^T, c = diag(1/sqrt e) V^T b so that ||A w - c||^2 = w^T K w - 2 b.w
    + ||c||^2; the residual is c0 - ||c||^2 + rnorm^2, so relative residuals below ~1e-8 are not resolved.
    """
    e, V = np.linalg.eigh(K)
    keep = e > max(e.max(), 0.0) * 1e-13
    A = np.sqrt(e[keep])[:, None] * V[:, keep].T
    c = (V[:, keep].T @ b) / np.sqrt(e[keep])
    if nonneg:
        w, rnorm = scipy.optimize.nnls(A, c, maxiter=50 * len(b))
    else:
        w = V[:, keep] @ (c / np.sqrt(e[keep]))
        rnorm = 0.0
    return w, max(c0 - float(c @ c), 0.0) + rnorm**2


def active_count(w: np.ndarray) -> int:
    """How many multipliers are active: |w_i| > 1e-3 max |w| (none when every one is 0)."""
    big = float(np.abs(w).max()) if len(w) else 0.0
    return int((np.abs(w) > 1e-3 * big).sum()) if big > 0 else 0


def gram_report(K: np.ndarray, b: np.ndarray, c0: float, nonneg: bool) -> dict[str, Any]:
    """:func:`gram_fit` as a stationarity report: the relative residual sqrt(res^2 / c0) (``kkt_residual``), the
    multipliers (``lambdas``) and how many are active (:func:`active_count`)."""
    w, res2 = gram_fit(K, b, c0, nonneg)
    return {"kkt_residual": math.sqrt(res2 / c0) if c0 > 0 else 0.0, "lambdas": w.tolist(), "n_active": active_count(w)}


def nnls_gram(K: np.ndarray, b: np.ndarray, c0: float) -> tuple[np.ndarray, float]:
    """min_{w >= 0} ||t - J^T w||^2 from the Gram form (see :func:`gram_fit`)."""
    return gram_fit(K, b, c0, nonneg=True)


@dataclass(frozen=True)
class StationarityForm:
    """One row of the module's table: which features, which target, where the gradients are taken, and
    whether the multipliers are constrained to be non-negative."""

    name: Literal["kkt", "weight_decay", "ntk"]

    @property
    def nonneg(self) -> bool:
        return self.name == "kkt"

    @property
    def target_removes_init(self) -> bool:
        """Whether the target is theta_T - theta_0 (NTK) rather than theta itself, which still holds theta_0."""
        return self.name == "ntk"

    def features(self, out: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """phi (m, K') from network outputs (m, K) and candidate labels (margins need them)."""
        return margin(out, labels) if self.name == "kkt" else out

    def target(self, params: Sequence[torch.Tensor], init: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
        if self.target_removes_init:
            if init is None:
                raise ValueError("the NTK form needs the initial parameters")
            return [p - p0 for p, p0 in zip(params, init)]
        return list(params)

    def per_sample_grads(self, spec: Architecture, params, x: torch.Tensor, labels: torch.Tensor | None,
                         chunk: int = 0, into: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
        """J (n K', P): row (i, k) is grad_theta phi_k(theta; x_i), exact activation, flattened, computed ``chunk``
        inputs at a time (0: as many as make :data:`CHUNK_BYTES` of rows) and written into one tensor as they come,
        scaled by ``weight``; with ``into`` (n K', P) added to it in place (an average over kernel points without
        a second copy of J)."""
        x = x.reshape(len(x), -1)
        lab = torch.zeros(len(x), dtype=x.dtype, device=x.device) if labels is None else labels.to(x.device)

        def phi_single(flat, xi, yi):
            return self.features(forward(spec, unflatten(spec, flat), xi[None]), yi[None])[0]

        jac = vmap(jacrev(phi_single), in_dims=(None, 0, 0))
        flat = flatten(params)
        P = flat.numel()
        n0 = min(chunk or 1, len(x))  # the first block: its rows per input size the rest
        first = jac(flat, x[:n0], lab[:n0]).reshape(-1, P)
        k = first.shape[0] // n0  # rows per input (K')
        step = chunk or max(1, CHUNK_BYTES // (k * P * first.element_size()))
        J = torch.zeros(len(x) * k, P, dtype=first.dtype, device=first.device) if into is None else into
        J[: first.shape[0]].add_(first, alpha=weight)
        for i in range(n0, len(x), step):
            J[i * k: (i + step) * k].add_(jac(flat, x[i: i + step], lab[i: i + step]).reshape(-1, P), alpha=weight)
        return J

    def residual(self, spec: Architecture, params, x: torch.Tensor, labels: torch.Tensor | None = None,
                 init=None, grads_at=None, target=None, blind_to=None) -> dict[str, Any]:
        """Relative residual min_w ||target - sum_ik w_ik grad phi_k(x_i)|| / ||target|| on the true points, with
        the multipliers (n K' values) and how many are active (|w| > 1e-3 max|w|).  ``grads_at`` (default
        ``params``) is where the gradients are taken: the initial parameters for the NTK form at theta_0, or a
        tuple of parameter lists whose gradients are averaged (the kernel at theta_0 and theta_T).
        ``target`` replaces the form's own (a list of parameter tensors); ``blind_to`` (per parameter tensor, a
        direction d_p) measures the residual with each d_p projected out, min over c_p of ||target - c_p d_p - s||
        (an attack's ``remove_init = "project"``)."""
        with torch.no_grad():
            points = grads_at if isinstance(grads_at, tuple) else (params if grads_at is None else grads_at,)
            J = None
            for point in points:  # the average of the points' J, summed in place
                J = self.per_sample_grads(spec, point, x, labels, into=J, weight=1.0 / len(points))
            J = J.double()
            t = flatten(self.target(params, init) if target is None else target).double()
            if blind_to is not None:  # P t and P J^T, P the projection off every d_p (block diagonal)
                sizes = [d.numel() for d in blind_to]
                for d, (a, b) in zip(blind_to, zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes))):
                    e = d.reshape(-1).double().to(J.device)
                    if e.norm() > 0:
                        e = e / e.norm()
                        t[a:b] -= e * (t[a:b] @ e)
                        J[:, a:b].addr_(J[:, a:b] @ e, e, alpha=-1)  # in place: no (rows, size) temporary
            K = (J @ J.T).cpu().numpy()
            b = (J @ t).cpu().numpy()
            c0 = float(t @ t)
        return gram_report(K, b, c0, self.nonneg)


#: how many bytes of J's rows :meth:`StationarityForm.per_sample_grads` computes at once (a block of inputs)
CHUNK_BYTES = 2 ** 26

KKT = StationarityForm("kkt")
WEIGHT_DECAY = StationarityForm("weight_decay")
NTK = StationarityForm("ntk")
