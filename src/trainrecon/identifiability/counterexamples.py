"""Demonstration of alpha = 2 non-identifiability (the exact-recovery demos run through ``pipeline.identify_demo``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .exact_kkt import build_exact_kkt
from .certified import IdentifyConfig, PolyNet, compare_to_truth, identify, kkt_fit


def alpha2_counterexample(n: int = 4, d: int = 10, seed: int = 0) -> dict[str, Any]:
    """Two different data sets with the same KKT equations and the same margins (alpha = 2).

    Build an exact KKT network for data X (non-orthogonal).  Its moment matrix T = sum_i lambda_i y_i x_i x_i^T
    has eigenvectors q_j with eigenvalues e_j; the data set x'_j = t_j q_j, y'_j = sign(e_j),
    lambda'_j = |e_j| / t_j^2 (t_j from y'_j f(x'_j) = 1) gives the same T, hence the same stationarity
    equations theta = sum lambda y grad f(x), and unit margins: a second, orthogonal data set.
    """
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, d)) + 0.5
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    p = build_exact_kkt(V, y, 2, seed=seed)
    net = PolyNet(p.a, p.W, 2)
    T = (p.X.T * (p.lam * p.y)) @ p.X
    e, Q = np.linalg.eigh(T)
    keep = np.argsort(-np.abs(e))[:n]
    y2 = np.sign(e[keep])
    Q = Q[:, keep].T
    t = (1.0 / (y2 * net.f(Q))) ** 0.5
    X2 = t[:, None] * Q
    lam2 = np.abs(e[keep]) / t**2
    match = compare_to_truth(X2, p.X)
    return {
        "alpha": 2, "n": n, "d": d,
        "kkt_residual_original": kkt_fit(net, p.X, p.lam * p.y),
        "kkt_residual_alternative": kkt_fit(net, X2, lam2 * y2),
        "margins_original": (p.y * net.f(p.X)).tolist(),
        "margins_alternative": (y2 * net.f(X2)).tolist(),
        "min_relative_distance_between_sets": min(match["rel_errors"]),
        "mean_one_minus_cos_between_sets": match["mean_one_minus_cos"],
        "identify_verdict": identify(net, IdentifyConfig(polish=False), scale_recorded=True)["verdict"],
    }
