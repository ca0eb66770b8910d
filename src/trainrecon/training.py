"""Victim training toward the KKT direction of the max-margin problem.

A homogeneous network trained on the logistic loss converges in direction to a KKT point of
    min ||theta||^2  s.t.  y_i f(x_i; theta) >= 1,
i.e. theta = sum_i lambda_i y_i grad_theta f(x_i; theta), lambda_i >= 0 (Lyu & Li 2020; Ji & Telgarsky 2020).
Plain GD gets there only after ~1e6 epochs.  We instead work with the loss-normalised objective
log L(theta) = log mean_i l(q_i), l(q) = log(1 + e^{-q}), q_i = y_i f(x_i; theta), evaluated in log space
(log l(q) = -q for large q, so nothing underflows), and grad log L = grad L / L:

1. **fit**: loss-normalised steps theta <- theta - fit_lr ||theta|| d/||d||, d = grad log L, until every
   margin is positive.  Scale free, so a small initialisation is left at once.
2. **anneal**: for each target margin Q in ``margin_schedule`` (an inverse temperature), rescale theta so
   that min_i q_i = Q (free for an L-homogeneous net: q scales as c^L) and minimise
   H(u) = log L(rho u / ||u||) over the direction u with L-BFGS at that fixed norm rho.  At a stationary point
   of H the gradient sum_i w_i y_i grad f(x_i), w = softmax(log l(q)), is parallel to theta: the KKT
   stationarity equation with lambda proportional to w, exact at any temperature; raising Q drives the
   weights of non-support points to zero (complementary slackness).

Progress is measured by the KKT residual (:func:`kkt_residual`): multipliers fitted by non-negative least
squares on the training set,  min_{lambda >= 0} ||theta - sum_i lambda_i y_i grad f(x_i)|| / ||theta||.
This residual is the floor any reconstruction can reach; ReLU kinks at the training points keep it above 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch
from safetensors.torch import load_file
from torch.func import grad, vmap

from .config import load_json, save_json, to_dict
from .errors import TrainreconError
from .models.mlp import MLPSpec, flatten, forward, init_params, unflatten
from .models.victim import save_tensors
from .runtime import progress, resolve_dtype


@dataclass
class TrainConfig:
    """Victim trainer settings (serialised into ``train.json``).

    ``init_scale[i]`` multiplies the LeCun std 1/sqrt(fan_in) of layer i; ``fit_lr`` is the relative step
    ||delta theta|| / ||theta|| of the fitting phase; ``margin_schedule`` the target minimum margins of the
    annealing stages, each run for ``lbfgs_iters`` L-BFGS iterations.
    """

    hidden: list[int] = field(default_factory=lambda: [100, 100])
    bias: list[bool] = field(default_factory=list)
    activation: str = "relu"
    init_scale: list[float] = field(default_factory=list)
    fit_lr: float = 0.05
    max_fit_steps: int = 5000
    margin_schedule: list[float] = field(default_factory=lambda: [10.0, 100.0, 1000.0])
    lbfgs_iters: int = 400
    seed: int = 0
    dtype: str = "float64"
    rescale_to_unit_margin: bool = True

    def __post_init__(self) -> None:
        n_layers = len(self.hidden) + 1
        if not self.bias:
            self.bias = [True] + [False] * (n_layers - 1)  # Haim: first layer biased, the rest not
        if not self.init_scale:
            self.init_scale = [0.1] * n_layers
        if len(self.bias) != n_layers:
            raise TrainreconError(f"train.bias: need {n_layers} entries (one per layer), got {len(self.bias)}")
        if len(self.init_scale) != n_layers:
            raise TrainreconError(f"train.init_scale: need {n_layers} entries, got {len(self.init_scale)}")
        if self.fit_lr <= 0 or self.max_fit_steps <= 0 or self.lbfgs_iters < 0:
            raise TrainreconError("train: fit_lr and max_fit_steps must be positive, lbfgs_iters >= 0")
        if any(q <= 0 for q in self.margin_schedule):
            raise TrainreconError(f"train.margin_schedule: margins must be positive, got {self.margin_schedule}")
        resolve_dtype(self.dtype)

    def spec(self, input_shape: list[int], n_outputs: int = 1) -> MLPSpec:
        return MLPSpec(
            widths=[math.prod(input_shape), *self.hidden, n_outputs],
            bias=list(self.bias),
            activation=self.activation,  # type: ignore[arg-type]
            input_shape=list(input_shape),
        )


def log_logistic(q: torch.Tensor) -> torch.Tensor:
    """log l(q) with l(q) = log(1 + e^{-q}), stable for any q (= -q - e^{-q}/2 + ... for large q)."""
    big = q > 30
    safe = torch.where(big, torch.zeros_like(q), q)
    return torch.where(big, -q, torch.log(torch.nn.functional.softplus(-safe)))


def margins(spec: MLPSpec, params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """q_i = y_i f(x_i; theta) for a binary (single-output) network."""
    return y * forward(spec, params, x)[:, 0]


def per_sample_grads(spec: MLPSpec, params, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """J[i] = grad_theta f(x_i; theta), flattened: an (n, P) matrix (exact activation)."""

    def f_single(flat, xi):
        return forward(spec, unflatten(spec, flat), xi[None])[0, 0]

    flat = flatten(params)
    g = vmap(grad(f_single), in_dims=(None, 0))
    return torch.cat([g(flat, x[i : i + chunk]) for i in range(0, len(x), chunk)])


def nnls_gram(K: np.ndarray, b: np.ndarray, c0: float) -> tuple[np.ndarray, float]:
    """min_{lambda >= 0} c0 - 2 b.lambda + lambda^T K lambda through a square root of the Gram K.

    Returns (lambda, residual^2).  The residual is c0 - ||c||^2 + rnorm^2, so relative residuals below
    ~1e-8 (the square root of machine epsilon) are not resolved.  Uses K = V diag(e) V^T, A = diag(sqrt e) V^T, c = diag(1/sqrt e) V^T b
    so that ||A lambda - c||^2 = lambda^T K lambda - 2 b.lambda + ||c||^2 (b lies in the range of K).
    """
    e, V = np.linalg.eigh(K)
    keep = e > max(e.max(), 0.0) * 1e-13
    A = np.sqrt(e[keep])[:, None] * V[:, keep].T
    c = (V[:, keep].T @ b) / np.sqrt(e[keep])
    lam, rnorm = scipy.optimize.nnls(A, c, maxiter=50 * len(b))
    res2 = max(c0 - float(c @ c), 0.0) + rnorm**2
    return lam, res2


def kkt_residual(spec: MLPSpec, params, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Relative KKT residual min_{lambda>=0} ||theta - sum_i lambda_i y_i grad f(x_i)|| / ||theta||.

    Also returns the multipliers (at the given scale of theta) and how many are active (> 1e-3 max).
    """
    with torch.no_grad():
        J = per_sample_grads(spec, params, x).double() * y.double()[:, None]
        theta = flatten(params).double()
        K = (J @ J.T).cpu().numpy()
        b = (J @ theta).cpu().numpy()
        c0 = float(theta @ theta)
    lam, res2 = nnls_gram(K, b, c0)
    active = int((lam > 1e-3 * lam.max()).sum()) if lam.max() > 0 else 0
    return {"kkt_residual": math.sqrt(res2 / c0), "lambdas": lam.tolist(), "n_active": active}


def _state_paths(folder: Path) -> tuple[Path, Path]:
    return folder / "train_checkpoint.safetensors", folder / "train_checkpoint.json"


def train_binary(
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    checkpoint_dir: Path | None = None,
    device: torch.device | str = "cpu",
    log=print,
) -> tuple[MLPSpec, list[torch.Tensor], dict[str, Any]]:
    """Train a binary (one-output) MLP on +-1 labels toward the KKT direction; resumes from checkpoint_dir.

    Returns the spec, the parameters (rescaled so that min_i q_i = 1 if ``cfg.rescale_to_unit_margin``)
    and a summary with the history of log-loss, normalised margin and KKT residual per stage.
    """
    dtype = resolve_dtype(cfg.dtype)
    spec = cfg.spec(list(x.shape[1:]), 1)
    x = x.to(device=device, dtype=dtype).reshape(len(x), -1)
    y = y.to(device=device, dtype=dtype)
    L = spec.homogeneity_degree()
    flat = flatten(init_params(spec, cfg.init_scale, cfg.seed, dtype)).to(device)
    stage, history = 0, []
    if checkpoint_dir is not None:
        st, js = _state_paths(checkpoint_dir)
        if st.is_file() and js.is_file():
            meta = load_json(js)
            if meta.get("config") != to_dict(cfg):
                raise TrainreconError(f"{js}: checkpoint was made with a different training config; use a new folder")
            flat = load_file(str(st))["theta"].clone().to(device=device, dtype=dtype)
            stage, history = int(meta["stage"]), list(meta["history"])
            log(f"resuming training after stage {stage}")

    def log_loss(th: torch.Tensor) -> torch.Tensor:
        q = margins(spec, unflatten(spec, th), x, y)
        return torch.logsumexp(log_logistic(q), 0) - math.log(len(q))

    def record(name: str, th: torch.Tensor, extra: dict[str, Any]) -> None:
        with torch.no_grad():
            ps = unflatten(spec, th)
            q = margins(spec, ps, x, y)
            norm = float(th.norm())
            entry = {
                "stage": name,
                "log_loss": float(log_loss(th)),
                "train_accuracy": float((q > 0).double().mean()),
                "min_margin": float(q.min()),
                "normalized_margin": float(q.min()) / norm**L if L else None,
                "theta_norm": norm,
                **extra,
            }
        entry["kkt_residual"] = kkt_residual(spec, ps, x, y)["kkt_residual"]
        entry["seconds"] = time.time() - t0
        history.append(entry)
        log(f"  {name}: log-loss {entry['log_loss']:.4g}, min margin {entry['min_margin']:.4g}, "
            f"KKT residual {entry['kkt_residual']:.4f}")

    def checkpoint(done: int) -> None:
        if checkpoint_dir is None:
            return
        st, js = _state_paths(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_tensors(st, {"theta": flat})
        save_json(js, {"stage": done, "config": cfg, "history": history})

    t0 = time.time()
    n_stages = 1 + len(cfg.margin_schedule)
    bar = progress(n_stages, "train", initial=stage)
    if stage == 0:
        steps = 0
        for steps in range(1, cfg.max_fit_steps + 1):
            th = flat.detach().requires_grad_(True)
            d = torch.autograd.grad(log_loss(th), th)[0]
            if not torch.isfinite(d).all():
                raise TrainreconError(f"training diverged at fit step {steps}; lower train.fit_lr")
            with torch.no_grad():
                flat = th - cfg.fit_lr * th.norm() * d / d.norm().clamp_min(1e-300)
                if margins(spec, unflatten(spec, flat), x, y).min() > 0:
                    break
        record("fit", flat, {"steps": steps})
        stage = 1
        checkpoint(stage)
        bar.update(1)
    for k in range(stage - 1, len(cfg.margin_schedule)):
        Q = cfg.margin_schedule[k]
        with torch.no_grad():
            qmin = margins(spec, unflatten(spec, flat), x, y).min()
            if L and qmin > 0:
                flat = flat * (Q / qmin) ** (1.0 / L)
            rho = flat.norm()
        u = (flat / rho).clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [u], lr=1.0, max_iter=cfg.lbfgs_iters, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=1e-12, tolerance_change=1e-15,
        )

        def closure():
            opt.zero_grad()
            v = log_loss(rho * u / u.norm())
            v.backward()
            return v

        if cfg.lbfgs_iters > 0:
            opt.step(closure)
        with torch.no_grad():
            flat = (rho * u / u.norm()).detach()
        if not torch.isfinite(flat).all():
            raise TrainreconError(f"training diverged in stage Q={Q}")
        record(f"Q={Q:g}", flat, {"target_margin": Q})
        stage = k + 2
        checkpoint(stage)
        bar.update(1)
    bar.close()
    final = dict(history[-1])
    params = unflatten(spec, flat.detach())
    scale = 1.0
    if cfg.rescale_to_unit_margin and L and final["min_margin"] > 0:
        scale = final["min_margin"] ** (-1.0 / L)
        params = [p * scale for p in params]
    kkt = kkt_residual(spec, params, x, y)
    summary = {
        "final": {**final, "kkt_residual": kkt["kkt_residual"], "n_active": kkt["n_active"]},
        "rescale_factor": scale,
        "seconds": time.time() - t0,
        "history": history,
        "nnls_lambdas": kkt["lambdas"],
    }
    log(
        f"trained: accuracy {final['train_accuracy']:.3f}, "
        f"KKT residual {kkt['kkt_residual']:.4f} ({kkt['n_active']} active multipliers of {len(x)})"
    )
    return spec, params, summary
