"""Symmetric CP decomposition T = sum_i c_i v_i^(x)alpha: Jennrich's algorithm, then least-squares refinement.

Jennrich (Harshman 1970; Leurgans, Ross & Abel 1993): compress T to its R-dimensional mode-1 range, contract
alpha - 3 modes with a random g (an order-3 tensor with the same components, weights c_i (v_i.g)^(alpha-3)),
form M_a = T3(., ., a), M_b = T3(., ., b) for random a, b; the eigenvectors of M_a M_b^+ are the v_i when they
are linearly independent (R <= r).  The weights c follow by linear least squares.  Several random draws are
made and the best fit kept; L-BFGS on ||T - sum c_i v_i^(x)alpha||^2 / ||T||^2 then polishes.
"""

from __future__ import annotations

import numpy as np
import torch

from .symmetric import contract, tensor_powers


def multilinear(T: np.ndarray, U: np.ndarray) -> np.ndarray:
    """T x_1 U^T x_2 U^T ... : every mode of T mapped by U^T (U has orthonormal columns (r, R))."""
    for _ in range(T.ndim):
        T = np.tensordot(T, U, axes=([0], [0]))
    return T


def cp_fit(T: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares weights c for unit rows V (R, r) and the relative residual ||T - sum c v^alpha|| / ||T||."""
    A = tensor_powers(V, T.ndim).T  # (r^alpha, R)
    c, *_ = np.linalg.lstsq(A, T.reshape(-1), rcond=None)
    res = np.linalg.norm(A @ c - T.reshape(-1)) / max(np.linalg.norm(T), 1e-300)
    return c, float(res)


def jennrich(T: np.ndarray, R: int, draws: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Returns (V (R, r) unit rows, c (R,), relative fit residual) of T ~ sum_i c_i v_i^(x)alpha."""
    alpha, r = T.ndim, T.shape[0]
    Uc = np.linalg.svd(T.reshape(r, -1), full_matrices=False)[0][:, :R]
    Tc = multilinear(T, Uc)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(draws):
        T3 = contract(Tc, rng.normal(size=R), alpha - 3) if alpha > 3 else Tc
        Ma = contract(T3, rng.normal(size=R), 1)
        Mb = contract(T3, rng.normal(size=R), 1)
        _, vecs = np.linalg.eig(Ma @ np.linalg.pinv(Mb))
        V = np.real(vecs).T @ Uc.T  # (R, r)
        V /= np.linalg.norm(V, axis=1, keepdims=True).clip(1e-300)
        c, res = cp_fit(T, V)
        if best is None or res < best[2]:
            best = (V, c, res)
    return best


def refine_cp(T: np.ndarray, V: np.ndarray, c: np.ndarray, iters: int = 300) -> tuple[np.ndarray, np.ndarray, float]:
    """L-BFGS on (c, V) of ||T - sum_i c_i v_i^(x)alpha||^2 / ||T||^2 (float64); returns unit V, c, residual."""
    alpha = T.ndim
    Tt = torch.as_tensor(T.reshape(-1))
    scale = float(Tt.norm()) or 1.0
    Vt = torch.as_tensor(V).clone().requires_grad_(True)
    ct = torch.as_tensor(c).clone().requires_grad_(True)

    def model():
        P = torch.ones(Vt.shape[0], 1, dtype=Vt.dtype)
        for _ in range(alpha):
            P = (P[:, :, None] * Vt[:, None, :]).reshape(Vt.shape[0], -1)
        return ct @ P

    opt = torch.optim.LBFGS([Vt, ct], lr=1.0, max_iter=iters, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-15, tolerance_change=1e-18)

    def closure():
        opt.zero_grad()
        loss = ((model() - Tt) ** 2).sum() / scale**2
        loss.backward()
        return loss

    opt.step(closure)
    V2 = Vt.detach().numpy()
    V2 = V2 / np.linalg.norm(V2, axis=1, keepdims=True)
    return (V2, *cp_fit(T, V2))  # weights refitted for the unit directions
