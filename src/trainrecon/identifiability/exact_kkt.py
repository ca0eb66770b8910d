"""Exact KKT points of max-margin two-layer polynomial networks, built for given data directions.

For f(x) = sum_k a_k (w_k . x)^alpha, the max-margin KKT conditions with multipliers lambda_i >= 0 read

    a_k = T(w_k^alpha),   w_k = alpha a_k T(w_k^(alpha-1), .),   y_i f(x_i) = 1 (active i),
    T = sum_i lambda_i y_i x_i^(x)alpha.

Every KKT neuron lies on a Z-eigenvector of T: T(u^(alpha-1), .) = mu u, |u| = 1, and then w = c u with
c = (alpha mu^2)^(-1/(2 alpha - 2)), a = c^alpha mu.  Construction (non-iterative in the data): take unit
directions v_i, labels y_i and weights beta_i > 0; form T = sum_i beta_i y_i v_i^(x)alpha; put one neuron on
each real Z-eigen-direction of T (found by Newton's method from many random starts, deduplicated); then the
scales x_i = t_i v_i with t_i = (y_i f(v_i))^(-1/alpha) make every margin exactly 1, and
lambda_i = beta_i / t_i^alpha keeps T unchanged.  This needs y_i f(v_i) > 0 for every i; other draws of beta
are tried when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TrainreconError
from ..runtime import require_memory
from ..training.polynomial import MAX_DEGREE
from .symmetric import rank_one_sum, tensor_powers


def z_eigenpairs(T: np.ndarray, starts: int = 400, seed: int = 0, tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Real Z-eigenpairs (u, mu), mu != 0, of a symmetric tensor, up to the sign symmetry of its order.

    Newton's method on F(u, mu) = [T(u^(alpha-1)) - mu u, (1 - u.u) / 2], batched over ``starts`` random unit
    vectors.  Returns U (p, r) and mu (p,).  For odd alpha (u, mu) ~ (-u, -mu) and mu > 0 is kept; for even
    alpha (u, mu) ~ (-u, mu) and the largest coordinate of u is made positive.
    """
    alpha, r = T.ndim, T.shape[0]
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(starts, r))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    T1 = T.reshape(r, -1)  # (r, r^(alpha-1))
    T2 = T.reshape(r * r, -1)  # (r^2, r^(alpha-2))
    mu = np.einsum("sr,sr->s", U, tensor_powers(U, alpha - 1) @ T1.T)
    eye = np.eye(r)
    for _ in range(100):
        G = tensor_powers(U, alpha - 1) @ T1.T  # (S, r)
        F = np.concatenate([G - mu[:, None] * U, (1 - (U * U).sum(1, keepdims=True)) / 2], axis=1)
        if np.abs(F).max() < tol:
            break
        H = (alpha - 1) * (tensor_powers(U, alpha - 2) @ T2.T).reshape(-1, r, r)
        Jac = np.zeros((len(U), r + 1, r + 1))
        Jac[:, :r, :r] = H - mu[:, None, None] * eye
        Jac[:, :r, r] = -U
        Jac[:, r, :r] = -U
        try:
            delta = np.linalg.solve(Jac, -F[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            delta = np.stack([np.linalg.lstsq(J, -f, rcond=None)[0] for J, f in zip(Jac, F)])
        U, mu = U + delta[:, :r], mu + delta[:, r]
    G = tensor_powers(U, alpha - 1) @ T1.T
    ok = (np.linalg.norm(G - mu[:, None] * U, axis=1) < 1e-10) & (np.abs((U * U).sum(1) - 1) < 1e-10) & (np.abs(mu) > 1e-10)
    found_u: list[np.ndarray] = []
    found_mu: list[float] = []
    for u, m in zip(U[ok], mu[ok]):
        if alpha % 2 == 1 and m < 0:
            u, m = -u, -m
        if alpha % 2 == 0:
            u = u * np.sign(u[np.argmax(np.abs(u))])
        if any(np.linalg.norm(u - v) < 1e-7 for v in found_u):
            continue
        found_u.append(u)
        found_mu.append(m)
    return np.array(found_u).reshape(-1, r), np.array(found_mu)


@dataclass
class ExactKKTPoint:
    """A network (a, W) at an exact KKT point of max-margin for data (X, y) with multipliers lam."""

    a: np.ndarray
    W: np.ndarray
    X: np.ndarray
    y: np.ndarray
    lam: np.ndarray
    alpha: int


def neurons_from_tensor(T: np.ndarray, basis: np.ndarray, starts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One KKT neuron per real Z-eigen-direction of T (given in the coordinates of ``basis`` (d, r))."""
    alpha = T.ndim
    U, mu = z_eigenpairs(T, starts, seed)
    c = (alpha * mu**2) ** (-1.0 / (2 * alpha - 2))
    W = (c[:, None] * U) @ basis.T
    a = c**alpha * mu
    return a, W


#: the construction's size limits, checked before any work: tensor entries n r^alpha built per try (time and
#: memory, ~1 s per 3e7 on a CPU core) and multiply-adds of the Newton search over all tries
MAX_SAMPLE_ENTRIES = 2e7
MAX_NEWTON_WORK = 5e10


def check_size(n: int, d: int, alpha: int, starts: int = 400, tries: int = 20) -> None:
    """Refuse, in one line and before any work, a construction too large to finish in minutes or to fit in
    memory: n samples in d dimensions span r = min(n, d) directions; every try builds the n rank-one terms
    v_i^(x)alpha (n r^alpha numbers) and runs 100 Newton steps from ``starts`` points (starts r^alpha each)."""
    if not 2 <= alpha <= MAX_DEGREE:
        raise TrainreconError(f"alpha: need a degree in [2, {MAX_DEGREE}], got {alpha}")
    r = min(n, d)
    entries, newton = float(n) * float(r) ** alpha, tries * 100.0 * starts * float(r) ** alpha
    if entries > MAX_SAMPLE_ENTRIES:
        raise TrainreconError(f"exact KKT point: n = {n} samples of degree alpha = {alpha} on {r} directions are "
                              f"{entries:.2g} tensor entries per try (limit {MAX_SAMPLE_ENTRIES:.0e}); use fewer "
                              "samples (--n), dimensions (--d) or a lower degree")
    if newton > MAX_NEWTON_WORK:
        raise TrainreconError(f"exact KKT point: degree alpha = {alpha} on r = min(n, d) = {r} directions needs about "
                              f"{newton:.2g} operations (limit {MAX_NEWTON_WORK:.0e}); use fewer samples (--n) or "
                              "dimensions (--d) or a lower degree")
    require_memory(8 * (2 * n * r**alpha + 4 * r**alpha + 4 * starts * r ** (alpha - 1) + starts * r * r + 2 * n * d),
                   f"an exact KKT point of degree {alpha} on {r} directions")


def build_exact_kkt(
    V: np.ndarray, y: np.ndarray, alpha: int, seed: int = 0, starts: int = 400, tries: int = 20
) -> ExactKKTPoint:
    """An exact KKT network whose active training points lie on the directions of the rows of V (n, d)."""
    V = np.asarray(V, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = V.shape
    if not 2 <= alpha <= MAX_DEGREE:
        raise TrainreconError(f"alpha: need a degree in [2, {MAX_DEGREE}], got {alpha}")
    check_size(n, d, alpha, starts, tries)
    Vn = V / np.linalg.norm(V, axis=1, keepdims=True)
    Q, _ = np.linalg.qr(Vn.T)  # (d, n) orthonormal basis of the data span
    Vq = Vn @ Q
    rng = np.random.default_rng(seed)
    for attempt in range(tries):
        beta = np.ones(n) if attempt == 0 else rng.uniform(0.5, 2.0, size=n)
        T = rank_one_sum(beta * y, Vq, alpha)
        a, W = neurons_from_tensor(T, Q, starts, seed + attempt)
        fv = ((Vn @ W.T) ** alpha) @ a
        if len(a) and np.all(y * fv > 0):
            t = (y * fv) ** (-1.0 / alpha)
            return ExactKKTPoint(a=a, W=W, X=t[:, None] * Vn, y=y, lam=beta / t**alpha, alpha=alpha)
    raise TrainreconError("could not build an exact KKT point for these directions (some margin sign is wrong "
                          "for every draw of the multipliers); try other data")
