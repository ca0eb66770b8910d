"""Two-layer polynomial networks f(x) = sum_k a_k (w_k . x)^alpha trained toward the KKT direction, and their KKT
residual: the trainer of the identifiability experiments, registered as ``polynomial``.

A victim is an MLP d-K-1 without biases and activation ``power`` (degree alpha): ``layers.0.weight`` = W (K, d),
``layers.1.weight`` = a (1, K).

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
from pathlib import Path
from typing import Any

import torch

from ..config import check_numbers
from ..errors import TrainreconError
from ..models.mlp import MLPSpec
from ..models.stationarity import gram_report
from ..runtime import progress
from .common import load_state, save_state
from .kkt import log_logistic


def poly_spec(d: int, width: int, alpha: int, input_shape: list[int] | None = None) -> MLPSpec:
    """The network d-K-1 without biases, activation t -> t^alpha, on inputs of ``input_shape`` (d values; default
    [1, 1, d]): ``layers.0.weight`` = W (K, d), ``layers.1.weight`` = a (1, K)."""
    return MLPSpec(widths=[d, width, 1], bias=[False, False], activation="power",
                   input_shape=list(input_shape) if input_shape is not None else [1, 1, d], degree=alpha)


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
    return gram_report((J @ J.T).cpu().numpy(), (J @ theta).cpu().numpy(), float(theta @ theta), nonneg=True)


MAX_DEGREE = 12  # beyond it t^alpha over- or underflows float64 for any useful scale


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

    def spec(self, input_shape: list[int], n_outputs: int = 1) -> MLPSpec:
        """The network this config trains on inputs of ``input_shape`` (one output: a binary task)."""
        if n_outputs != 1:
            raise TrainreconError(f"train: a two-layer polynomial network has one output; the task needs {n_outputs} "
                                  "(give it a binary task: odd_even or vehicles_animals)")
        return poly_spec(math.prod(input_shape), self.width, self.alpha, input_shape)


def train_polynomial(cfg: PolyTrainConfig, X: torch.Tensor, y: torch.Tensor, log=print,
                     checkpoint_dir: Path | None = None, device: torch.device | str = "cpu"):
    """Train on X (n, d), y (n,) of +-1; returns (a, W, summary).  Balanced init |w_k|^2 = alpha a_k^2 when both
    layers train.

    The summary's ``history`` tracks log-loss, normalised margin and KKT residual at ten points of training; at
    each a checkpoint goes into ``checkpoint_dir`` (when given), and a rerun resumes the last one (the same
    config and data only: :func:`.common.load_state`) and ends with the same network, bit for bit."""
    X, y = X.to(device=device, dtype=torch.float64), y.to(device=device, dtype=torch.float64)
    n, d = X.shape
    g = torch.Generator().manual_seed(cfg.seed)
    W = (torch.randn(cfg.width, d, generator=g, dtype=torch.float64) * cfg.init_scale / math.sqrt(d)).to(device)
    signs = torch.where(torch.arange(cfg.width) % 2 == 0, 1.0, -1.0).double().to(device)
    if cfg.train_second_layer:
        a = signs * W.norm(dim=1) / math.sqrt(cfg.alpha)
    else:
        a = signs / math.sqrt(cfg.width)
    start, history = 0, []
    state = load_state(checkpoint_dir, cfg, device, torch.float64, X, y)
    if state is not None:
        a, W, start, history = state[0]["a"], state[0]["W"], int(state[1]["step"]), list(state[1]["history"])
        log(f"resuming training at step {start}")
    t0 = time.time()

    def log_loss(a_, W_):
        q = y * poly_f(a_, W_, X, cfg.alpha)
        return torch.logsumexp(log_logistic(q), 0) - math.log(n)

    every = max(cfg.steps // 10, 1)
    bar = progress(cfg.steps, "train", initial=start)
    for t in range(start, cfg.steps + 1):
        if t % every == 0 or t == cfg.steps:
            if t > start or not history:
                with torch.no_grad():
                    q = y * poly_f(a, W, X, cfg.alpha)
                    res = poly_kkt_residual(a, W, X, y, cfg.alpha, cfg.train_second_layer)["kkt_residual"]
                history.append({"step": t, "log_loss": float(log_loss(a, W)), "min_margin_over_norm":
                                float(q.min()) / float(torch.cat([a, W.reshape(-1)]).norm()) ** (cfg.alpha + 1),
                                "kkt_residual": res})
            if t > start:
                save_state(checkpoint_dir, {"a": a, "W": W}, {"step": t, "config": cfg, "history": history}, X, y)
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
        bar.update(1)
    bar.close()
    q = y * poly_f(a, W, X, cfg.alpha)
    qmin = float(q.min())
    scale = 1.0
    if qmin > 0:  # rescale to unit minimum margin
        scale = qmin ** (-1.0 / (cfg.alpha + 1)) if cfg.train_second_layer else qmin ** (-1.0 / cfg.alpha)
        if cfg.train_second_layer:
            a = a * scale
        W = W * scale
    q = y * poly_f(a, W, X, cfg.alpha)
    res = poly_kkt_residual(a, W, X, y, cfg.alpha, cfg.train_second_layer)
    summary = {"train_accuracy": float((q > 0).double().mean()), "min_margin": float(q.min()),
               "margin_spread": float(q.max() / q.min()) if float(q.min()) > 0 else None,
               "kkt_residual": res["kkt_residual"], "n_active": res["n_active"], "lambdas": res["lambdas"],
               "rescale_factor": scale, "seconds": time.time() - t0, "history": history}
    log(f"trained polynomial net: accuracy {summary['train_accuracy']:.3f}, KKT residual {res['kkt_residual']:.3g} "
        f"({res['n_active']} active of {n})")
    return a, W, summary


def fit_polynomial(cfg: PolyTrainConfig, x: torch.Tensor, y: torch.Tensor, checkpoint_dir: Path | None = None,
                   device: torch.device | str = "cpu", log=print, n_classes: int = 2
                   ) -> tuple[MLPSpec, list[torch.Tensor], dict[str, Any]]:
    """The registered trainer (``train --trainer polynomial``): :func:`train_polynomial` on a binary task's
    centred images ``x`` (n, C, H, W), flattened, labels +-1; returns (spec, [W, a[None]], summary) as every
    trainer does."""
    spec = cfg.spec(list(x.shape[1:]), 1 if n_classes == 2 else n_classes)
    a, W, s = train_polynomial(cfg, x.reshape(len(x), -1), y, log, checkpoint_dir, device)
    final = {k: s[k] for k in ("train_accuracy", "min_margin", "margin_spread", "kkt_residual", "n_active")}
    return spec, [W, a[None]], {"final": final, "rescale_factor": s["rescale_factor"], "seconds": s["seconds"],
                                "history": s["history"], "nnls_lambdas": s["lambdas"]}


__all__ = ["MAX_DEGREE", "PolyTrainConfig", "fit_polynomial", "poly_f", "poly_grads", "poly_kkt_residual", "poly_spec",
           "train_polynomial"]
