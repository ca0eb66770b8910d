"""How close a victim is to the stationarity form an attack assumes: the floor of any reconstruction.

Every attack here fits   target = sum_i w_i g_i,   g_i = grad_theta <c_i, f(x_i; theta)>   (c_i in R^K picks
a scalar of the output: y_i for binary, e_{y_i} - e_{r_i} for the multiclass runner-up margin, e_k for NTK).
With the true training points, the best multipliers give the relative residual

    min_w || target - sum_i w_i g_i || / || target ||,     w >= 0 (KKT)  or  w free (weight decay, NTK),

computed from the Gram matrix J J^T (n x n), so the (n, P) Jacobian is never squared.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch.func import grad, vmap

from ..models.mlp import MLPSpec, flatten, forward, unflatten


def per_sample_grads(
    spec: MLPSpec, params, x: torch.Tensor, coef: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """J[i] = grad_theta <coef_i, f(x_i; theta)>, flattened: an (n, P) matrix (exact activation).

    ``coef`` has shape (n, K) (or (n,) for a single output).
    """
    coef = coef.reshape(len(x), -1).to(x.dtype)

    def f_single(flat, xi, ci):
        return (forward(spec, unflatten(spec, flat), xi[None])[0] * ci).sum()

    flat = flatten(params)
    g = vmap(grad(f_single), in_dims=(None, 0, 0))
    x = x.reshape(len(x), -1)
    return torch.cat([g(flat, x[i : i + chunk], coef[i : i + chunk]) for i in range(0, len(x), chunk)])


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


def nnls_gram(K: np.ndarray, b: np.ndarray, c0: float) -> tuple[np.ndarray, float]:
    """min_{w >= 0} ||t - J^T w||^2 from the Gram form (see :func:`gram_fit`)."""
    return gram_fit(K, b, c0, nonneg=True)


def stationarity_residual(
    spec: MLPSpec, params, x: torch.Tensor, coef: torch.Tensor, target=None, nonneg: bool = True, grads_at=None
) -> dict[str, Any]:
    """Relative residual min_w ||target - sum_i w_i grad <c_i, f(x_i)>|| / ||target||.

    ``target`` defaults to theta (KKT / weight decay); the per-sample gradients are taken at ``grads_at``
    (default ``params``; the initial parameters for the NTK form).  Returns the residual, the multipliers
    and how many are active (|w| > 1e-3 max|w|).
    """
    with torch.no_grad():
        J = per_sample_grads(spec, params if grads_at is None else grads_at, x, coef).double()
        t = flatten(params if target is None else target).double()
        K = (J @ J.T).cpu().numpy()
        b = (J @ t).cpu().numpy()
        c0 = float(t @ t)
    w, res2 = gram_fit(K, b, c0, nonneg)
    big = np.abs(w).max() if len(w) else 0.0
    active = int((np.abs(w) > 1e-3 * big).sum()) if big > 0 else 0
    return {"kkt_residual": math.sqrt(res2 / c0) if c0 > 0 else 0.0, "lambdas": w.tolist(), "n_active": active}


def margin_coef(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The c_i whose <c_i, f(x_i)> is the margin: y_i (binary, one output) or f_{y_i} - f_{r_i} with r_i the
    runner-up class (multiclass, Buzaglo et al.'s form)."""
    if out.shape[1] == 1:
        return y.reshape(-1, 1).to(out.dtype)
    yi = y.long().reshape(-1, 1)
    masked = out.detach().clone().scatter_(1, yi, -torch.inf)
    runner = masked.argmax(1, keepdim=True)
    c = torch.zeros_like(out)
    c.scatter_(1, yi, 1.0)
    c.scatter_(1, runner, -1.0)
    return c


def kkt_residual(spec: MLPSpec, params, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """KKT residual of the margin problem: min_{lambda>=0} ||theta - sum_i lambda_i grad q_i|| / ||theta||.

    q_i = y_i f(x_i) (binary) or f_{y_i}(x_i) - f_{r_i}(x_i) with r_i the runner-up class (multiclass; for
    K > 2 this restricts the full multiclass KKT sum over all j != y_i to the runner-up, so it is an upper
    bound on that residual and exactly the floor of the Buzaglo attack).
    """
    with torch.no_grad():
        coef = margin_coef(forward(spec, params, x.reshape(len(x), -1)), y)
    return stationarity_residual(spec, params, x, coef)
