"""Symmetric tensors of order alpha on R^r: rank-one sums, contractions, the monomial basis.

T(u^k, .) contracts k modes of T with u.  A symmetric T is parameterised by one value c_m per multi-index
m in N^r, |m| = alpha (``monomials``); its polynomial is T(z^alpha) = sum_m mult(m) c_m z^m with
mult(m) = alpha! / prod_j m_j!, and  T(z^(alpha-1), e_j) = (1/alpha) d/dz_j T(z^alpha).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def tensor_powers(V: np.ndarray, k: int) -> np.ndarray:
    """The rows v_i^(x)k of ``V`` (n, r), flattened: an (n, r^k) array (k = 0 gives ones)."""
    out = np.ones((V.shape[0], 1))
    for _ in range(k):
        out = (out[:, :, None] * V[:, None, :]).reshape(V.shape[0], -1)
    return out


def rank_one_sum(weights: np.ndarray, vectors: np.ndarray, alpha: int) -> np.ndarray:
    """T = sum_i weights_i v_i^(x)alpha for the rows v_i of ``vectors`` (n, r); a dense (r,)*alpha array."""
    r = vectors.shape[1]
    return (np.asarray(weights, dtype=np.float64) @ tensor_powers(vectors, alpha)).reshape((r,) * alpha)


def contract(T: np.ndarray, u: np.ndarray, times: int) -> np.ndarray:
    """T(u^times, .): contract the last ``times`` modes of T with u."""
    for _ in range(times):
        T = T @ u
    return T


def monomials(r: int, alpha: int) -> np.ndarray:
    """Exponent matrix E (C, r) of all multi-indices with |m| = alpha, C = binom(r + alpha - 1, alpha)."""
    rows = []
    for combo in itertools.combinations_with_replacement(range(r), alpha):
        rows.append(np.bincount(combo, minlength=r))
    return np.array(rows, dtype=np.int64).reshape(-1, r)


def multiplicities(E: np.ndarray) -> np.ndarray:
    alpha = int(E[0].sum())
    return np.array([math.factorial(alpha) / np.prod([math.factorial(int(k)) for k in m]) for m in E])


def n_monomials(r: int, alpha: int) -> int:
    return math.comb(r + alpha - 1, alpha)


def gradient_design(Z: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Rows D[(k, j), m] with  T(z_k^(alpha-1), e_j) = sum_m D[(k, j), m] c_m  for each row z_k of Z (K, r).

    D[(k, j), m] = mult(m) m_j z_k^(m - e_j) / alpha.  Returned shape (K r, C).
    """
    K, r = Z.shape
    alpha = int(E[0].sum())
    mult = multiplicities(E)
    out = np.zeros((K, r, len(E)))
    for j in range(r):
        has = E[:, j] > 0
        Ej = E[has].copy()
        Ej[:, j] -= 1
        vals = np.prod(Z[:, None, :] ** Ej[None, :, :], axis=2)  # (K, C_j)
        out[:, j, has] = vals * (mult[has] * E[has, j] / alpha)[None, :]
    return out.reshape(K * r, len(E))


def to_dense(c: np.ndarray, E: np.ndarray) -> np.ndarray:
    """The dense symmetric tensor whose entry at any index tuple with counts m is c_m."""
    r, alpha = E.shape[1], int(E[0].sum())
    lookup = {tuple(m): i for i, m in enumerate(E)}
    T = np.empty((r,) * alpha)
    for idx in itertools.product(range(r), repeat=alpha):
        T[idx] = c[lookup[tuple(np.bincount(idx, minlength=r))]]
    return T


def from_dense(T: np.ndarray, E: np.ndarray) -> np.ndarray:
    """c_m = the mean of T over all index tuples with counts m (the symmetric part's coordinates)."""
    r = E.shape[1]
    sums = np.zeros(len(E))
    counts = np.zeros(len(E))
    lookup = {tuple(m): i for i, m in enumerate(E)}
    for idx in itertools.product(range(r), repeat=T.ndim):
        i = lookup[tuple(np.bincount(idx, minlength=r))]
        sums[i] += T[idx]
        counts[i] += 1
    return sums / counts


def unfolding_spectrum(T: np.ndarray) -> np.ndarray:
    """Singular values of the mode-1 unfolding (r x r^(alpha-1))."""
    return np.linalg.svd(T.reshape(T.shape[0], -1), compute_uv=False)


def gap_rank(s: np.ndarray, sentinel: float = 1e-6) -> int:
    """Rank at the largest ratio gap s_i / s_(i+1) of a spectrum, with a sentinel sentinel * s_0 appended so a
    flat spectrum counts as full rank."""
    if len(s) == 0 or s[0] <= 0:
        return 0
    ext = np.append(s / s[0], sentinel)
    ext = np.maximum(ext, 1e-300)
    ratios = ext[:-1] / ext[1:]
    return int(np.argmax(ratios) + 1)
