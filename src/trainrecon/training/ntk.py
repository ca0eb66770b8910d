"""NTK-regime victims (Loo et al. 2023): wide MLPs trained briefly by full-batch SGD with momentum on MSE.

Loo's victim: Dense(W) - act - Dense(W) - act - Dense(K), **all layers biased**, LeCun-normal weights and
zero biases, loss (1/(nK)) sum_ik 0.5 (f_k(x_i) - y_ik)^2 with y = +-1 (binary) or one-hot - 0.1 (K-way),
``optax.sgd(lr, momentum=0.9)``, stopped at loss < 1e-10.  In the kernel regime every update lies in the span
of the per-sample gradients, so

    theta_T - theta_0 = sum_ik alpha_ik grad_theta f_k(x_i; theta_0)      (approximately; exactly if linear),

which the Loo attack inverts.  The initial parameters are saved with the final ones (``init.*`` tensors), and the
recipe in ``recipe.json`` (:class:`~trainrecon.models.recipe.Recipe`): both of the owner's threat levels.
``lr = 0`` picks 1 / lambda_max of the Gauss-Newton matrix at theta_0 (power iteration on J^T J / (nK)),
a stable step for momentum 0.9; the reference uses lr 4e-5 at width 2048 for up to 1e6 epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.func import jvp, vjp

from ..errors import TrainreconError
from ..models.architecture import Architecture
from ..models import forward, unflatten
from ..runtime import progress
from .common import NetConfig, load_state, save_state, setup
from ..models.recipe import Recipe
from ..models.stationarity import NTK


@dataclass
class NTKTrainConfig(NetConfig):
    """Loo et al.'s victim trainer: all layers biased, LeCun init, MSE, full-batch SGD with momentum."""

    hidden: list[int] = field(default_factory=lambda: [512, 512])
    lr: float = 0.0
    momentum: float = 0.9
    max_epochs: int = 20000
    loss_tol: float = 1e-10
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        self.complete(first_bias_only=False, init=1.0)
        if self.lr < 0 or not 0 <= self.momentum < 1:
            raise TrainreconError("train.lr must be >= 0 (0 = automatic) and train.momentum in [0, 1)")
        if self.max_epochs <= 0 or self.checkpoint_every <= 0:
            raise TrainreconError("train.max_epochs and train.checkpoint_every must be positive")


def regression_targets(y: torch.Tensor, n_classes: int, dtype) -> torch.Tensor:
    """(n, K) targets: +-1 for a binary task (K = 1), one-hot - 0.1 for K classes (Loo ``data.py``)."""
    if n_classes == 2:
        return y.to(dtype).reshape(-1, 1)
    return torch.nn.functional.one_hot(y.long(), n_classes).to(dtype) - 0.1


def gauss_newton_top_eigenvalue(spec: Architecture, flat: torch.Tensor, x: torch.Tensor, iters: int = 30) -> float:
    """lambda_max of J^T J / (nK), J = d f(X; theta) / d theta (n K x P), by power iteration on jvp/vjp."""

    def f(th):
        return forward(spec, unflatten(spec, th), x)

    g = torch.Generator().manual_seed(0)
    v = torch.randn(flat.shape, generator=g, dtype=torch.float64).to(flat)
    lam = 0.0
    out, pullback = vjp(f, flat)
    scale = out.numel()
    for _ in range(iters):
        v = v / v.norm()
        _, jv = jvp(f, (flat,), (v,))
        (w,) = pullback(jv)
        lam = float((w * v).sum()) / scale
        v = w
    return lam


def train_ntk(
    cfg: NTKTrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    checkpoint_dir: Path | None = None,
    device: torch.device | str = "cpu",
    log=print,
    n_classes: int = 2,
) -> tuple[Architecture, list[torch.Tensor], dict[str, Any]]:
    """Train Loo's victim; the summary carries ``init_params`` (theta_0) for the victim folder."""
    dtype, spec, x, flat0 = setup(cfg, x, 1 if n_classes == 2 else n_classes, device)
    target = regression_targets(y, n_classes, dtype).to(device)
    lr = cfg.lr or 1.0 / gauss_newton_top_eigenvalue(spec, flat0, x)
    flat, buf, epoch, history = flat0.clone(), torch.zeros_like(flat0), 0, []
    state = load_state(checkpoint_dir, cfg, device, dtype, x, y)
    if state is not None:
        flat, buf = state[0]["theta"], state[0]["momentum"]
        epoch, history = int(state[1]["epoch"]), list(state[1]["history"])
        log(f"resuming training at epoch {epoch}")

    def loss_fn(th: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((forward(spec, unflatten(spec, th), x) - target) ** 2).mean()

    def save(ep: int) -> None:
        save_state(checkpoint_dir, {"theta": flat, "momentum": buf},
                   {"epoch": ep, "config": cfg, "history": history, "lr": lr}, x, y)

    t0 = time.time()
    bar = progress(cfg.max_epochs, "train", initial=epoch)
    loss = float("inf")
    while epoch < cfg.max_epochs:
        th = flat.requires_grad_(True)
        value = loss_fn(th)
        (g,) = torch.autograd.grad(value, th)
        loss = float(value.detach())
        if not torch.isfinite(value):
            raise TrainreconError(f"training diverged at epoch {epoch}; set a smaller train.lr")
        if loss < cfg.loss_tol:
            break
        with torch.no_grad():
            buf = buf.mul_(cfg.momentum).add_(g)  # optax.sgd(momentum): trace = g + mu trace
            flat = th.detach() - lr * buf
        epoch += 1
        bar.update(1)
        if epoch % cfg.checkpoint_every == 0:
            history.append({"epoch": epoch, "loss": loss, "seconds": time.time() - t0})
            bar.set_postfix(loss=f"{loss:.3g}")
            save(epoch)
    bar.close()
    flat = flat.detach()
    history.append({"epoch": epoch, "loss": loss, "seconds": time.time() - t0})
    save(epoch)
    params, init = unflatten(spec, flat), unflatten(spec, flat0)
    at_init = NTK.residual(spec, params, x, init=init, grads_at=init)
    at_final = NTK.residual(spec, params, x, init=init)
    with torch.no_grad():
        acc = forward(spec, params, x)
        acc = float(((acc[:, 0] * target[:, 0]) > 0).double().mean()) if spec.n_outputs == 1 else float(
            (acc.argmax(1) == target.argmax(1)).double().mean())
    final = {"epochs": epoch, "loss": loss, "lr": lr, "train_accuracy": acc,
             "relative_change": float((flat - flat0).norm() / flat0.norm()),
             "kkt_residual": at_final["kkt_residual"], "ntk_residual_at_init": at_init["kkt_residual"]}
    log(f"trained: {epoch} epochs, loss {loss:.3g}, accuracy {acc:.3f}, ||theta_T - theta_0|| / ||theta_0|| "
        f"{final['relative_change']:.2e}, span residual {at_final['kkt_residual']:.3g} (gradients at theta_T), "
        f"{at_init['kkt_residual']:.3g} (at theta_0)")
    # the recipe as torch.optim states it: 0.5 x MSE at lr is MSE at lr / 2; full batch, one step per epoch
    recipe = Recipe("sgd", lr / 2, "mse", batch_size=0, steps=max(epoch, 1), momentum=cfg.momentum,
                    label_offset=0.0 if n_classes == 2 else 0.1)
    return spec, params, {"final": final, "history": history, "seconds": time.time() - t0, "init_params": init,
                          "recipe": recipe}
