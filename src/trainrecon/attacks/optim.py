"""The reference optimisers as explicit update rules whose whole state is a dict of tensors.

Keeping the state explicit (not inside ``torch.optim``) lets a checkpoint hold it next to the iterate, so
a resumed run continues bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

State = dict[str, torch.Tensor]


@dataclass
class SGDMomentum:
    """``torch.optim.SGD(lr, momentum)``: buf <- mu buf + g (buf = g at the first step); p <- p - lr buf.

    ``max_step > 0`` bounds each row's step: p_j <- p_j - lr buf_j min(1, max_step / ||lr buf_j||) (a trust
    region per candidate; 0, the default, is the plain update)."""

    lr: float
    momentum: float
    max_step: float = 0.0

    def step(self, p: torch.Tensor, g: torch.Tensor, state: State) -> torch.Tensor:
        buf = state.get("buf")
        state["buf"] = g.clone() if buf is None else buf.mul_(self.momentum).add_(g)
        step = self.lr * state["buf"]
        if self.max_step > 0:
            rows = step.reshape(step.shape[0], -1).norm(dim=1).clamp_min(1e-300)
            step = step * (self.max_step / rows).clamp(max=1.0).reshape(-1, *[1] * (step.ndim - 1))
        return p - step


@dataclass
class Adam:
    """Adam (Kingma & Ba) with bias correction, as ``optax.adam`` / Loo's ``sparse_adam`` in bulk mode:
    m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; p <- p - lr m_hat / (sqrt(v_hat) + eps).

    Loo's sparse variant keeps a per-element step count and skips elements whose gradient is exactly zero;
    with every candidate in every step (bulk mode) no gradient is exactly zero and the two coincide.
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def step(self, p: torch.Tensor, g: torch.Tensor, state: State) -> torch.Tensor:
        if "m" not in state:
            state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            state["t"] = torch.zeros((), dtype=torch.float64)
        state["t"] += 1
        t = float(state["t"])
        state["m"].mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        state["v"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        m_hat = state["m"] / (1 - self.beta1**t)
        v_hat = state["v"] / (1 - self.beta2**t)
        return p - self.lr * m_hat / (v_hat.sqrt() + self.eps)


@dataclass
class RowAdam:
    """Adam with one second moment per row (per candidate) and a step count per row:
    m <- b1 m + (1-b1) g;  v_j <- b2 v_j + (1-b2) mean_k g_jk^2;  t_j <- t_j + 1;
    p_j <- p_j - lr m_hat_j / (sqrt(v_hat_j) + eps),  m_hat_j = m_j / (1 - b1^t_j),  v_hat_j = v_j / (1 - b2^t_j).

    Each candidate's step then has a root-mean-square of about lr whatever the size of its gradient.  The gradient
    of || theta - sum_i w_i g(x_i) ||^2 in x_j carries the factor w_j, so plain SGD moves candidates with small
    multipliers slowly; this update does not (issue 28's "per-candidate Adam").  The state is per row, so a
    candidate split, merged or reseeded carries or restarts its own."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-12

    def step(self, p: torch.Tensor, g: torch.Tensor, state: State) -> torch.Tensor:
        rows = p.shape[0]
        if "m" not in state:
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros(rows, dtype=p.dtype, device=p.device)
            state["t"] = torch.zeros(rows, dtype=torch.float64, device=p.device)
        state["t"] += 1
        t = state["t"]
        state["m"].mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        state["v"].mul_(self.beta2).add_(g.reshape(rows, -1).pow(2).mean(1), alpha=1 - self.beta2)
        m_hat = state["m"] / (1 - self.beta1**t).to(p.dtype).reshape(-1, *[1] * (p.ndim - 1))
        v_hat = state["v"] / (1 - self.beta2**t).to(p.dtype)
        return p - self.lr * m_hat / (v_hat.sqrt() + self.eps).reshape(-1, *[1] * (p.ndim - 1))


def cosine_factor(final: float, progress: float, start: float = 0.0) -> float:
    """The step's factor at ``progress`` in [0, 1] of a run (``attack.lr_final``, ``attack.lr_decay_start``):
    final + (1 - final) (1 + cos(pi q)) / 2 with q = (progress - start) / (1 - start) clipped to [0, 1], 1 until
    ``start`` and from there to ``final`` at the end (and after it)."""
    q = (progress - start) / (1.0 - start)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(max(q, 0.0), 1.0)))


def scaled_step(p: torch.Tensor, new: torch.Tensor, factor: float) -> torch.Tensor:
    """p + factor (new - p): an optimiser's update p -> new with its step scaled (its learning rate times
    ``factor``, for updates linear in lr: SGD with momentum, Adam, the per-candidate Adam); ``new`` itself
    at factor 1."""
    return new if factor == 1.0 else p + factor * (new - p)
