"""Two-layer polynomial networks f(x) = sum_k a_k (w_k . x)^alpha: data, training toward the KKT direction,
and the KKT residual.

A victim is stored in the usual folder as an MLP d-K-1 without biases and activation ``power`` (degree alpha):
``layers.0.weight`` = W (K, d), ``layers.1.weight`` = a (1, K).

Training (both layers, or W only with a fixed second layer a_k = +-1/sqrt(K)) is loss-normalised gradient
descent on the logistic loss, in log space so that nothing underflows:

    theta <- theta - eta_t ||theta|| d / ||d||,   d = grad_theta log L(theta),   eta_t = lr / sqrt(1 + t / 100),
    log L = logsumexp_i log l(y_i f(x_i)) - log n.

At the end the network is rescaled so that min_i y_i f(x_i) = 1 (f scales as c^(alpha+1) in the two-layer
case, c^alpha with a fixed second layer).  The KKT residual is
min_{lambda >= 0} ||theta - sum_i lambda_i y_i grad_theta f(x_i)|| / ||theta|| over the trained parameters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..config import check_numbers
from ..data.tasks import default_data_dir, load_split
from ..errors import TrainreconError
from ..runtime import require_memory
from ..models.mlp import MLPSpec
from ..training.kkt import log_logistic
from ..models.stationarity import gram_fit


def poly_spec(d: int, width: int, alpha: int) -> MLPSpec:
    return MLPSpec(widths=[d, width, 1], bias=[False, False], activation="power", input_shape=[1, 1, d], degree=alpha)


def poly_f(a: torch.Tensor, W: torch.Tensor, X: torch.Tensor, alpha: int) -> torch.Tensor:
    """f(x) = sum_k a_k (w_k . x)^alpha for each row of X."""
    return ((X @ W.T) ** alpha) @ a


def poly_grads(a: torch.Tensor, W: torch.Tensor, X: torch.Tensor, alpha: int, train_a: bool = True) -> torch.Tensor:
    """Per-sample gradients, flattened (n, K + K d) or (n, K d): d f / d a_k = (w_k . x)^alpha,
    d f / d w_k = alpha a_k (w_k . x)^(alpha - 1) x."""
    Z = X @ W.T
    gW = (alpha * a * Z ** (alpha - 1))[:, :, None] * X[:, None, :]
    parts = [Z**alpha] if train_a else []
    return torch.cat(parts + [gW.reshape(len(X), -1)], dim=1)


def poly_kkt_residual(a, W, X, y, alpha: int, train_a: bool = True) -> dict[str, Any]:
    """min_{lambda >= 0} ||theta - sum_i lambda_i y_i grad f(x_i)|| / ||theta|| (theta = (a, W) or W)."""
    J = poly_grads(a, W, X, alpha, train_a) * y[:, None]
    theta = torch.cat(([a] if train_a else []) + [W.reshape(-1)])
    K = (J @ J.T).cpu().numpy()
    b = (J @ theta).cpu().numpy()
    c0 = float(theta @ theta)
    lam, res2 = gram_fit(K, b, c0, nonneg=True)
    big = lam.max() if len(lam) else 0.0
    return {"kkt_residual": math.sqrt(res2 / c0), "lambdas": lam.tolist(),
            "n_active": int((lam > 1e-3 * big).sum()) if big > 0 else 0}


MAX_DEGREE = 12  # beyond it t^alpha over- or underflows float64 for any useful scale


@dataclass
class PolyDataConfig:
    """Inputs for polynomial victims: points on the unit sphere or Gaussian in R^d, or real images
    (sklearn digits / MNIST) reduced to d dimensions by PCA and scaled to unit mean norm.  Labels are
    balanced +-1 (alternating) for synthetic data and even/odd for digits."""

    kind: Literal["sphere", "gaussian", "digits", "mnist"] = "sphere"
    n: int = 3
    d: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "data")
        if self.n <= 0 or self.d <= 0:
            raise TrainreconError(f"data.n and data.d must be positive, got n={self.n}, d={self.d}")
        require_memory(8 * 4 * self.n * self.d, f"data with n = {self.n} samples in d = {self.d} dimensions")


def make_poly_data(cfg: PolyDataConfig, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, d), y (n,)) as float64 / +-1."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.kind in ("sphere", "gaussian"):
        X = rng.normal(size=(cfg.n, cfg.d))
        if cfg.kind == "sphere":
            X /= np.linalg.norm(X, axis=1, keepdims=True)
        y = np.where(np.arange(cfg.n) % 2 == 0, 1.0, -1.0)
        return X, y
    imgs, labels = load_split(cfg.kind, "train", default_data_dir() if data_dir is None else data_dir)
    pool = imgs[:2000].reshape(min(2000, len(imgs)), -1)
    pool = pool - pool.mean(0)
    _, _, Vt = np.linalg.svd(pool, full_matrices=False)
    if cfg.d > Vt.shape[0]:
        raise TrainreconError(f"data.d: {cfg.kind} has only {Vt.shape[0]} principal directions in the pool")
    Z = pool @ Vt[: cfg.d].T
    Z /= np.linalg.norm(Z, axis=1).mean()
    idx = rng.choice(len(Z), size=cfg.n, replace=False)
    return Z[idx], np.where(labels[:2000][idx] % 2 == 0, -1.0, 1.0)


@dataclass
class PolyTrainConfig:
    """Normalised-GD trainer for two-layer polynomial networks (see the module docstring)."""

    alpha: int = 3
    width: int = 50
    train_second_layer: bool = True
    init_scale: float = 0.3
    lr: float = 0.1
    steps: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "train")
        if not 2 <= self.alpha <= MAX_DEGREE:
            raise TrainreconError(f"train.alpha: need a degree in [2, {MAX_DEGREE}], got {self.alpha}")
        if self.width <= 0 or self.steps < 0 or self.lr <= 0 or self.init_scale <= 0:
            raise TrainreconError("train.width, train.lr and train.init_scale must be positive, train.steps >= 0")


def train_polynomial(cfg: PolyTrainConfig, X: torch.Tensor, y: torch.Tensor, log=print):
    """Returns (a, W, summary).  Balanced init |w_k|^2 = alpha a_k^2 when both layers train.

    The summary's ``history`` tracks log-loss, normalised margin and KKT residual at ten points of training."""
    X, y = X.double(), y.double()
    n, d = X.shape
    g = torch.Generator().manual_seed(cfg.seed)
    W = torch.randn(cfg.width, d, generator=g, dtype=torch.float64) * cfg.init_scale / math.sqrt(d)
    signs = torch.where(torch.arange(cfg.width) % 2 == 0, 1.0, -1.0).double()
    if cfg.train_second_layer:
        a = signs * W.norm(dim=1) / math.sqrt(cfg.alpha)
    else:
        a = signs / math.sqrt(cfg.width)
    t0 = time.time()

    def log_loss(a_, W_):
        q = y * poly_f(a_, W_, X, cfg.alpha)
        return torch.logsumexp(log_logistic(q), 0) - math.log(n)

    history = []
    every = max(cfg.steps // 10, 1)
    for t in range(cfg.steps + 1):
        if t % every == 0 or t == cfg.steps:
            with torch.no_grad():
                q = y * poly_f(a, W, X, cfg.alpha)
                res = poly_kkt_residual(a, W, X, y, cfg.alpha, cfg.train_second_layer)["kkt_residual"]
            history.append({"step": t, "log_loss": float(log_loss(a, W)), "min_margin_over_norm":
                            float(q.min()) / float(torch.cat([a, W.reshape(-1)]).norm()) ** (cfg.alpha + 1),
                            "kkt_residual": res})
        if t == cfg.steps:
            break
        W_ = W.clone().requires_grad_(True)
        a_ = a.clone().requires_grad_(cfg.train_second_layer)
        params = [a_, W_] if cfg.train_second_layer else [W_]
        grads = torch.autograd.grad(log_loss(a_, W_), params)
        dn = torch.sqrt(sum((gr**2).sum() for gr in grads)).clamp_min(1e-300)
        tn = torch.sqrt(sum((p.detach() ** 2).sum() for p in params))
        eta = cfg.lr / math.sqrt(1 + t / 100)
        with torch.no_grad():
            if cfg.train_second_layer:
                a = a - eta * tn * grads[0] / dn
                W = W - eta * tn * grads[1] / dn
            else:
                W = W - eta * tn * grads[0] / dn
        if not torch.isfinite(W).all():
            raise TrainreconError(f"polynomial training diverged at step {t}; lower train.lr")
    q = y * poly_f(a, W, X, cfg.alpha)
    qmin = float(q.min())
    if qmin > 0:  # rescale to unit minimum margin
        if cfg.train_second_layer:
            c = qmin ** (-1.0 / (cfg.alpha + 1))
            a, W = a * c, W * c
        else:
            W = W * qmin ** (-1.0 / cfg.alpha)
    q = y * poly_f(a, W, X, cfg.alpha)
    res = poly_kkt_residual(a, W, X, y, cfg.alpha, cfg.train_second_layer)
    summary = {"train_accuracy": float((q > 0).double().mean()), "min_margin": float(q.min()),
               "margin_spread": float(q.max() / q.min()) if float(q.min()) > 0 else None,
               "kkt_residual": res["kkt_residual"], "n_active": res["n_active"], "lambdas": res["lambdas"],
               "seconds": time.time() - t0, "history": history}
    log(f"trained polynomial net: accuracy {summary['train_accuracy']:.3f}, KKT residual {res['kkt_residual']:.3g} "
        f"({res['n_active']} active of {n})")
    return a, W, summary
