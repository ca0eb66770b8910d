"""The common form of every reconstruction objective here: a loss of a weighted sum of per-sample features.

    J(X, M) = F( s ),   s = sum_j sum_k w_jk(M) g_k(x_j),   g_k(x) = grad_theta phi_k(theta; x)
              + R(X, M)

with candidates X (m, d), multipliers M, per-candidate weights w(M) (m, K), per-sample scalar features
phi(theta; x) in R^K (the network output, a margin, ... evaluated with a smooth surrogate activation),
F(s) = sum_p ||target_p - s_p||^2 over every parameter tensor p, and a prior R (box, multiplier penalty).

s is never formed per sample: s = grad_theta sum_jk w_jk phi_k(theta; x_j), one reverse pass.  The gradient
with respect to the candidates uses u = dF/ds = 2 (s - target) held fixed:

    dJ/dx_j = sum_k w_jk grad_x <u, g_k(x_j)>,   dJ/dw_jk = <u, g_k(x_j)>,

which is exact, and lets the sum be accumulated over chunks of candidates so that memory stays bounded
(m = 1000 candidates of 3072 dims).  With a single chunk the usual double backward is used (one pass).
The same fixed-u directional term <u, g(x)> is what sample splitting differentiates twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Params = Sequence[torch.Tensor]
PhiFn = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]  # (theta, X, labels) -> (m, K)
WeightFn = Callable[[torch.Tensor], torch.Tensor]  # multipliers -> (m, K)
PriorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (X, multipliers) -> scalar


@dataclass
class WeightedSumObjective:
    """J(X, M) = sum_p ||target_p - s_p||^2 + prior(X, M), s = grad_theta sum_jk w_jk(M) phi_k(theta; x_j).

    ``theta`` are the parameters at which features are evaluated (theta_T; the victim); ``target`` what the
    weighted sum must reproduce (theta_T for KKT, theta_T - theta_0 for NTK).
    """

    theta: list[torch.Tensor]
    target: list[torch.Tensor]
    phi: PhiFn
    weights: WeightFn
    prior: PriorFn
    labels: torch.Tensor
    chunk_size: int = 0

    def _chunks(self, m: int) -> list[slice]:
        c = self.chunk_size if 0 < self.chunk_size < m else m
        return [slice(i, min(i + c, m)) for i in range(0, m, c)]

    def feature_sum(self, X: torch.Tensor, W: torch.Tensor) -> list[torch.Tensor]:
        """s = sum_j sum_k W_jk grad_theta phi_k(theta; x_j), accumulated over chunks (no graph kept)."""
        theta = [p.detach().requires_grad_(True) for p in self.theta]
        s = [torch.zeros_like(p) for p in theta]
        for sl in self._chunks(X.shape[0]):
            out = (self.phi(theta, X[sl].detach(), self.labels[sl]) * W[sl].detach()).sum()
            for acc, g in zip(s, torch.autograd.grad(out, theta, allow_unused=True)):
                if g is not None:
                    acc += g
        return s

    def stationarity(self, s: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(((t - si) ** 2).sum() for t, si in zip(self.target, s))

    def value_and_grad(self, X: torch.Tensor, M: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """Returns ({'total', 'stationarity', 'prior'}, dJ/dX, dJ/dM)."""
        X = X.detach().requires_grad_(True)
        M = M.detach().requires_grad_(True)
        theta = [p.detach().requires_grad_(True) for p in self.theta]
        W = self.weights(M)
        chunks = self._chunks(X.shape[0])
        if len(chunks) == 1:
            out = (self.phi(theta, X, self.labels) * W).sum()
            s = torch.autograd.grad(out, theta, create_graph=True, allow_unused=True)
            s = [torch.zeros_like(p) if g is None else g for p, g in zip(theta, s)]
            stat = self.stationarity(s)
            prior = self.prior(X, M)
            gx, gm = torch.autograd.grad(stat + prior, [X, M])
        else:
            Wd = W.detach()
            s = self.feature_sum(X, Wd)
            stat = self.stationarity(s)
            u = [2 * (si - t) for si, t in zip(s, self.target)]
            gx = torch.zeros_like(X)
            gw = torch.zeros_like(Wd)
            for sl in chunks:
                xc = X[sl].detach().requires_grad_(True)
                wc = Wd[sl].clone().requires_grad_(True)
                out = (self.phi(theta, xc, self.labels[sl]) * wc).sum()
                gs = torch.autograd.grad(out, theta, create_graph=True, allow_unused=True)
                h = sum((g * ui).sum() for g, ui in zip(gs, u) if g is not None)
                gxc, gwc = torch.autograd.grad(h, [xc, wc])
                gx[sl] = gxc
                gw[sl] = gwc
            (gm,) = torch.autograd.grad(W, M, grad_outputs=gw)
            prior = self.prior(X, M)
            px, pm = torch.autograd.grad(prior, [X, M], allow_unused=True)
            gx = gx + (px if px is not None else 0)
            gm = gm + (pm if pm is not None else 0)
        values = {"stationarity": float(stat.detach()), "prior": float(prior.detach())}
        values["total"] = values["stationarity"] + values["prior"]
        return values, gx.detach(), gm.detach()
