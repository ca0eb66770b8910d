"""Regression victims with weight decay (Buzaglo et al. 2023): MSE or Huber loss on +-1 targets.

The victim minimises   J(theta) = (1/n) sum_i l(f(x_i; theta), y_i) + (wd / 2) ||theta||^2
(``torch.optim.SGD(weight_decay=wd)`` on the mean loss in the reference).  At a stationary point

    theta = sum_i lambda_i grad_theta f(x_i; theta),   lambda_i = -l'(f(x_i), y_i) / (n wd),

the form the Buzaglo regression attack fits with free multipliers.  The reference runs 1e6 epochs of GD;
here full-batch L-BFGS (float64) runs in chunks of ``lbfgs_chunk`` iterations with a checkpoint after each,
until the relative gradient ||grad J|| / (wd ||theta||) falls below ``grad_tol``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import TrainreconError
from ..models.architecture import Architecture
from ..models import forward, unflatten
from ..runtime import progress
from .common import NetConfig, load_state, save_state, setup
from ..models.stationarity import WEIGHT_DECAY


@dataclass
class RegressionTrainConfig(NetConfig):
    """Weight-decay regression trainer (Buzaglo et al.'s regression victim: MSE, wd 7.5e-4).

    Default architecture: bias on the first layer only, LeCun init (scale 1).
    """

    loss: Literal["mse", "huber"] = "mse"
    weight_decay: float = 7.5e-4
    max_iters: int = 1500
    lbfgs_chunk: int = 250
    grad_tol: float = 1e-8

    def __post_init__(self) -> None:
        self.complete(first_bias_only=True, init=1.0)
        if self.weight_decay <= 0:
            raise TrainreconError(f"train.weight_decay: must be positive, got {self.weight_decay}")
        if self.max_iters <= 0 or self.lbfgs_chunk <= 0:
            raise TrainreconError("train.max_iters and train.lbfgs_chunk must be positive")


def sample_loss(kind: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample l(f, y): (f - y)^2 (MSE) or the Huber loss with delta 1."""
    if kind == "mse":
        return (f - y) ** 2
    return F.huber_loss(f, y, reduction="none", delta=1.0)


def train_regression(
    cfg: RegressionTrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    checkpoint_dir: Path | None = None,
    device: torch.device | str = "cpu",
    log=print,
    n_classes: int = 2,
) -> tuple[Architecture, list[torch.Tensor], dict[str, Any]]:
    """Fit a one-output MLP to +-1 targets with weight decay; returns (spec, params, summary)."""
    if n_classes != 2:
        raise TrainreconError("task.task: regression victims take a binary task (+-1 targets), not multiclass")
    dtype, spec, x, flat = setup(cfg, x, 1, device)
    y = y.to(device=device, dtype=dtype)
    done, history = 0, []
    state = load_state(checkpoint_dir, cfg, device, dtype, x, y)
    if state is not None:
        flat, done, history = state[0]["theta"], int(state[1]["iterations"]), list(state[1]["history"])
        log(f"resuming training after {done} L-BFGS iterations")

    def objective(th: torch.Tensor) -> torch.Tensor:
        f = forward(spec, unflatten(spec, th), x)[:, 0]
        return sample_loss(cfg.loss, f, y).mean() + 0.5 * cfg.weight_decay * (th * th).sum()

    def value_and_rel_grad(th: torch.Tensor) -> tuple[float, float]:
        """J(theta) and ||grad J|| / (wd ||theta||), from one evaluation."""
        t = th.detach().requires_grad_(True)
        value = objective(t)
        (g,) = torch.autograd.grad(value, t)
        return float(value.detach()), float(g.norm() / (cfg.weight_decay * t.detach().norm()).clamp_min(1e-300))

    t0 = time.time()
    bar = progress(cfg.max_iters, "train", initial=done)
    while done < cfg.max_iters and (not history or history[-1]["relative_gradient"] > cfg.grad_tol):
        u = flat.clone().requires_grad_(True)
        steps = min(cfg.lbfgs_chunk, cfg.max_iters - done)
        opt = torch.optim.LBFGS([u], lr=1.0, max_iter=steps, history_size=50, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-14, tolerance_change=1e-16)

        def closure():
            opt.zero_grad()
            v = objective(u)
            v.backward()
            return v

        opt.step(closure)
        flat = u.detach()
        if not torch.isfinite(flat).all():
            raise TrainreconError("training diverged; lower train.init_scale")
        done += steps
        value, relative_gradient = value_and_rel_grad(flat)
        with torch.no_grad():
            f = forward(spec, unflatten(spec, flat), x)[:, 0]
            entry = {"iterations": done, "objective": value, "relative_gradient": relative_gradient,
                     "train_mse": float(((f - y) ** 2).mean()), "sign_accuracy": float((f * y > 0).double().mean()),
                     "seconds": time.time() - t0}
        history.append(entry)
        log(f"  {done} iterations: objective {entry['objective']:.6g}, relative gradient {entry['relative_gradient']:.2e}")
        bar.update(steps)
        save_state(checkpoint_dir, {"theta": flat}, {"iterations": done, "config": cfg, "history": history}, x, y)
    bar.close()
    params = unflatten(spec, flat)
    res = WEIGHT_DECAY.residual(spec, params, x)
    final = {**history[-1], "kkt_residual": res["kkt_residual"], "n_active": res["n_active"],
             "train_accuracy": history[-1]["sign_accuracy"]}
    log(f"trained: sign accuracy {final['sign_accuracy']:.3f}, train MSE {final['train_mse']:.4g}, "
        f"stationarity residual {res['kkt_residual']:.2e}")
    return spec, params, {"final": final, "history": history, "seconds": time.time() - t0}
