"""Victim training toward the KKT direction of the (multiclass) max-margin problem.

A homogeneous network trained on the logistic (cross-entropy) loss converges in direction to a KKT point of
    min ||theta||^2  s.t.  q_ij = f_{y_i}(x_i; theta) - f_j(x_i; theta) >= 1  (binary: y_i f(x_i) >= 1),
i.e. theta = sum_ij lambda_ij grad_theta q_ij, lambda >= 0 (Lyu & Li 2020; Ji & Telgarsky 2020).
Plain GD gets there only after ~1e6 epochs.  We instead work with the loss-normalised objective
log L(theta) = log mean_i l_i, l_i = log(1 + sum_j e^{-q_ij}), evaluated in log space
(log l = -q for large margins q, so nothing underflows), and grad log L = grad L / L:

1. **fit**: loss-normalised steps theta <- theta - fit_lr ||theta|| d/||d||, d = grad log L, until every
   margin is positive.  Scale free, so a small initialisation is left at once.
2. **anneal**: for each target margin Q in ``margin_schedule`` (an inverse temperature), rescale theta so
   that min_i q_i = Q (free for an L-homogeneous net: q scales as c^L) and minimise
   H(u) = log L(rho u / ||u||) over the direction u with L-BFGS at that fixed norm rho.  At a stationary point
   of H the gradient sum_i w_i y_i grad f(x_i), w = softmax(log l(q)), is parallel to theta: the KKT
   stationarity equation with lambda proportional to w, exact at any temperature; raising Q drives the
   weights of non-support points to zero (complementary slackness).

Progress is measured by the KKT residual (:func:`kkt_residual`): multipliers fitted by non-negative least
squares on the training set,  min_{lambda >= 0} ||theta - sum_i lambda_i grad q_i|| / ||theta|| (runner-up margin
for multiclass, see :mod:`trainrecon.models.stationarity`).
This residual is the floor any reconstruction can reach; ReLU kinks at the training points keep it above 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainreconError
from ..models import stationarity
from ..models.architecture import Architecture
from ..models import forward, unflatten
from ..runtime import progress
from .common import NetConfig, load_state, save_state, setup


@dataclass
class TrainConfig(NetConfig):
    """KKT-direction trainer settings (serialised into ``train.json``).

    ``fit_lr`` is the relative step ||delta theta|| / ||theta|| of the fitting phase; ``margin_schedule`` the
    target minimum margins of the annealing stages, each run for ``lbfgs_iters`` L-BFGS iterations.
    Default architecture: bias on the first layer only (Haim et al.), init 0.1 x LeCun.
    """

    fit_lr: float = 0.05
    max_fit_steps: int = 5000
    margin_schedule: list[float] = field(default_factory=lambda: [10.0, 100.0, 1000.0])
    lbfgs_iters: int = 400
    rescale_to_unit_margin: bool = True

    def __post_init__(self) -> None:
        self.complete(first_bias_only=True, init=0.1)
        if self.fit_lr <= 0 or self.max_fit_steps <= 0 or self.lbfgs_iters < 0:
            raise TrainreconError("train: fit_lr and max_fit_steps must be positive, lbfgs_iters >= 0")
        if any(q <= 0 for q in self.margin_schedule):
            raise TrainreconError(f"train.margin_schedule: margins must be positive, got {self.margin_schedule}")


def log_logistic(q: torch.Tensor) -> torch.Tensor:
    """log l(q) with l(q) = log(1 + e^{-q}), stable for any q (= -q - e^{-q}/2 + ... for large q)."""
    big = q > 30
    safe = torch.where(big, torch.zeros_like(q), q)
    return torch.where(big, -q, torch.log(torch.nn.functional.softplus(-safe)))


def margin_matrix(spec: Architecture, params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margins q_ij of the network on (x, y) (see :func:`trainrecon.models.stationarity.margin_matrix`)."""
    return stationarity.margin_matrix(forward(spec, params, x), y)


def kkt_residual(spec: Architecture, params, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """The victim's distance to the KKT form (runner-up margin for K > 2, an upper bound on the full
    multiclass residual and exactly the floor of the Buzaglo attack)."""
    return stationarity.KKT.residual(spec, params, x, y)


def margins(spec: Architecture, params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """q_i = min_j q_ij: y_i f(x_i) (binary) or f_{y_i}(x_i) - max_{j != y_i} f_j(x_i) (multiclass)."""
    return margin_matrix(spec, params, x, y).min(dim=1).values


def log_sample_losses(spec: Architecture, params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log l_i for the logistic (binary) or cross-entropy (multiclass) loss, in log space:
    l_i = log(1 + sum_j e^{-q_ij}) = log(1 + e^{-t_i}) with t_i = -logsumexp_j(-q_ij)."""
    q = margin_matrix(spec, params, x, y)
    return log_logistic(-torch.logsumexp(-q, dim=1))


def train_binary(cfg: TrainConfig, x, y, checkpoint_dir=None, device="cpu", log=print):
    """:func:`train_kkt` for a binary task (labels +-1, one output)."""
    return train_kkt(cfg, x, y, checkpoint_dir, device, log, n_classes=2)


def train_kkt(
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    checkpoint_dir: Path | None = None,
    device: torch.device | str = "cpu",
    log=print,
    n_classes: int = 2,
) -> tuple[Architecture, list[torch.Tensor], dict[str, Any]]:
    """Train a victim network (an MLP, or ``cfg.layers``) on centred images ``x`` toward the KKT direction of the
    (multiclass) margin problem, in memory; resumes from ``checkpoint_dir`` when given.

    ``n_classes = 2``: one output, labels +-1, logistic loss.  ``n_classes > 2``: K outputs, labels
    0..K-1, cross-entropy; the margins are q_ij = f_{y_i} - f_j and the same annealing applies.

    Returns the spec, the parameters (rescaled so that min_i q_i = 1 if ``cfg.rescale_to_unit_margin``)
    and a summary with the history of log-loss, normalised margin and KKT residual per stage.
    """
    dtype, spec, x, flat = setup(cfg, x, 1 if n_classes == 2 else n_classes, device)
    y = y.to(device=device, dtype=dtype)
    L = spec.homogeneity_degree()
    stage, history = 0, []
    state = load_state(checkpoint_dir, cfg, device, dtype, x, y)
    if state is not None:
        flat, stage, history = state[0]["theta"], int(state[1]["stage"]), list(state[1]["history"])
        log(f"resuming training after stage {stage}")

    def log_loss(th: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(log_sample_losses(spec, unflatten(spec, th), x, y), 0) - math.log(len(x))

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
        save_state(checkpoint_dir, {"theta": flat}, {"stage": done, "config": cfg, "history": history}, x, y)

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
            scale = d.abs().max()  # ||d|| of a tiny d underflows in float64: normalise by max |d_i| first
            if scale == 0:
                with torch.no_grad():
                    dead = int((margins(spec, unflatten(spec, th), x, y) == 0).sum())
                raise TrainreconError(
                    f"training stalled at fit step {steps}: the gradient vanished with {dead} of {len(x)} training "
                    "images at output 0 (dead ReLU units); try another train.seed, a larger train.init_scale or "
                    "wider layers")
            with torch.no_grad():
                d = d / scale
                flat = th - cfg.fit_lr * th.norm() * d / d.norm()
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
