"""Sample splitting (Shen, Wang, Qian & Lei, arXiv 2602.08723): curvature-aware refinement of any objective
J = F(s) + R,  s = sum_j w_j g(x_j).

With u = dF/ds held fixed, candidate j's **splitting matrix** is the Hessian in x of its per-candidate term

    S_j = Hess_x h_j(x_j),   h_j(x) = sum_k w_jk <u, g_k(x)>      (:meth:`WeightedSumObjective.per_candidate_term`).

Replacing (x_j, w_j) by (x_j + eps v, w_j / 2) and (x_j - eps v, w_j / 2) leaves s unchanged to first order and
changes F by (eps^2 / 2) v^T S_j v + O(eps^3) (plus the prior's change, which the line search includes), so a
negative eigenvalue of S_j is a descent direction where gradient descent has stalled.

* :func:`splitting_hvp`: S_j v_j for every candidate at once, forward-over-reverse (``torch.func.jvp`` of
  ``torch.func.grad`` of sum_j h_j): the Hessian of the sum is block diagonal, so one call serves all blocks.
  No d x d matrix is formed.
* :func:`smallest_eigenpairs`: batched Lanczos with full reorthogonalisation on those HVPs (every candidate's
  Krylov space built together), returning each block's smallest Ritz value, vector and residual.
* :func:`second_order_report`: the run's epsilon-second-order status: ||grad J|| and min_j lambda_min(S_j),
  with how many candidates are below the threshold.
* :func:`split_round`: score candidates, split the best ones along their eigenvector (or a random direction,
  the control), eps by an exact line search on the true loss, keep a split only if J decreases; children
  inherit the parent's optimiser state; m grows to a cap or stays fixed by removing the candidate whose exact
  removal cost is smallest.  Every split is logged (candidate, eigenvalue, eps, predicted and actual change).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import grad, jvp

from ..objective.candidates import CandidateSet
from ..objective.weighted_sum import WeightedSumObjective
from .settings import SplitConfig


def splitting_hvp(obj: WeightedSumObjective, X: torch.Tensor, W: torch.Tensor, u, V: torch.Tensor,
                  labels: torch.Tensor | None = None, positions: list[int] | None = None) -> torch.Tensor:
    """Rows j of the result are S_j V_j (each S_j the Hessian of h_j at x_j): one forward-over-reverse call per
    chunk of candidates (``obj.chunk_size``; the Hessian of the sum is block diagonal, so chunks are exact) and per
    part of u (``obj.hvp_parts``: a simulation's trajectory in segments, whose products add up). ``positions``: the
    rows' places in the candidate set (0, 1, ... by default), for an objective whose term depends on the place
    (a simulation's batches)."""
    W, X = W.detach(), X.detach()
    labels = obj.labels if labels is None else labels
    places = list(range(X.shape[0])) if positions is None else list(positions)
    out = torch.zeros_like(V)
    for sl in obj._chunks(X.shape[0]):
        lab = None if labels is None else labels[sl]
        for part in obj.hvp_parts(u):
            def total(x, sl=sl, lab=lab, part=part):
                return obj.per_candidate_term(x, W[sl], part, lab, rows=places[sl]).sum()

            out[sl] += jvp(grad(total), (X[sl],), (V[sl],))[1]
    return out


def smallest_eigenpairs(hvp, m: int, d: int, steps: int, like: torch.Tensor, seed: int = 0
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smallest eigenvalue, unit eigenvector and Ritz residual ||S v - mu v|| of m symmetric d x d blocks given
    by ``hvp(V)`` (rows V_j -> S_j V_j), by batched Lanczos with full reorthogonalisation (k = min(steps, d)).
    A block whose Lanczos matrix is not finite (its curvature overflowed) gets NaN and a zero vector."""
    k = min(steps, d)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(m, d, generator=g, dtype=torch.float64).to(like)
    q = q / q.norm(dim=1, keepdim=True)
    Q = torch.zeros(m, k, d, dtype=like.dtype, device=like.device)
    alpha = torch.zeros(m, k, dtype=like.dtype, device=like.device)
    beta = torch.zeros(m, k, dtype=like.dtype, device=like.device)
    done = torch.zeros(m, dtype=torch.bool, device=like.device)
    steps_of = torch.full((m,), k, dtype=torch.long, device=like.device)
    for i in range(k):
        Q[:, i] = q
        w = hvp(q)
        alpha[:, i] = (w * q).sum(1)
        # full reorthogonalisation against every previous Lanczos vector (twice is enough)
        for _ in range(2):
            w = w - torch.einsum("mk,mkd->md", torch.einsum("mkd,md->mk", Q[:, : i + 1], w), Q[:, : i + 1])
        b = w.norm(dim=1)
        if i + 1 < k:
            beta[:, i] = b
            newly = (~done) & (b <= 1e-10 * alpha[:, : i + 1].abs().amax(1).clamp_min(1e-300))
            steps_of[newly] = i + 1
            done |= newly
            q = torch.where(done[:, None], torch.zeros_like(w), w / b.clamp_min(1e-300)[:, None])
    mus, vecs = [], []
    for j in range(m):  # small k x k tridiagonal problems
        kk = int(steps_of[j])
        T = torch.diag(alpha[j, :kk]) + torch.diag(beta[j, : kk - 1], 1) + torch.diag(beta[j, : kk - 1], -1)
        if not bool(torch.isfinite(T).all()):  # the objective's curvature overflowed here: no eigenpair, NaN
            mus.append(torch.full((), float("nan"), dtype=like.dtype, device=like.device))
            vecs.append(torch.zeros(d, dtype=like.dtype, device=like.device))
            continue
        ev, evec = torch.linalg.eigh(T)
        mus.append(ev[0])
        vecs.append(evec[:, 0] @ Q[j, :kk])
    mu = torch.stack(mus)
    v = torch.stack(vecs)
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    resid = (hvp(v) - mu[:, None] * v).norm(dim=1)
    return mu, v, resid


def splitting_eigenpairs(obj: WeightedSumObjective, cands: CandidateSet, steps: int, seed: int = 0):
    """(lambda_min(S_j), eigenvector, Ritz residual) for every candidate, at the current u."""
    X, M = cands.x.detach(), cands.multipliers.detach()
    W = obj.weights(M).detach()
    u = obj.u(X, M)
    return smallest_eigenpairs(lambda V: splitting_hvp(obj, X, W, u, V, cands.labels), cands.m, X.shape[1], steps, X, seed)


def second_order_report(obj: WeightedSumObjective, cands: CandidateSet, threshold: float, steps: int = 20,
                        seed: int = 0) -> dict[str, Any]:
    """The run's epsilon-SOSP status: gradient norm and the smallest splitting eigenvalue over candidates."""
    values, gx, gm = obj.value_and_grad(cands.x, cands.multipliers)
    mu, _, resid = splitting_eigenpairs(obj, cands, steps, seed)
    mu_np = mu.detach().cpu().double().numpy()
    finite = np.isfinite(mu_np)  # a candidate whose curvature overflowed has none (not a crash at the run's end)
    return {
        "loss": values["total"],
        "grad_norm": float(torch.sqrt((gx**2).sum() + (gm**2).sum())),
        "grad_norm_x": float(gx.norm()),
        "grad_norm_multipliers": float(gm.norm()),
        "min_splitting_eigenvalue": float(np.nanmin(mu_np)) if finite.any() else None,
        "median_splitting_eigenvalue": float(np.nanmedian(mu_np)) if finite.any() else None,
        "threshold": threshold,
        "candidates_below_threshold": int((mu_np < -threshold).sum()),
        "candidates_without_eigenvalue": int((~finite).sum()),
        "m": cands.m,
        "lanczos_steps": steps,
        "max_ritz_residual": float(resid.max()),
    }


def exact_loss(obj: WeightedSumObjective, s: list[torch.Tensor], cands: CandidateSet) -> float:
    """J = F(s) + R(X, M) for a candidate set whose weighted sum is ``s``."""
    with torch.no_grad():
        return float(obj.outer.value(s) + obj.prior(cands.x, cands.multipliers))


def contribution(obj: WeightedSumObjective, cands: CandidateSet, rows: list[int]) -> list[torch.Tensor]:
    """sum over ``rows`` of w_j g(x_j): those candidates' share of s."""
    sub = cands.take(rows)
    o = obj if sub.labels is None else _with_labels(obj, sub.labels)
    return o.feature_sum(sub.x, obj.weights(sub.multipliers))


def _with_labels(obj: WeightedSumObjective, labels: torch.Tensor) -> WeightedSumObjective:
    return dataclasses.replace(obj, labels=labels)


def kink_alignment(obj: WeightedSumObjective, x: torch.Tensor, v: torch.Tensor, nearest: int = 5) -> float:
    """max |cos(v, w_k)| over the ``nearest`` first-layer units whose hyperplane w_k . x + b_k = 0 is closest to
    x: near 1 when the split straddles a (smoothed) ReLU kink rather than separating two images.  The first layer
    comes from the objective's architecture (``obj.first_layer``: a matrix or a convolution); NaN when the network
    does not start with an affine layer."""
    if obj.first_layer is not None:
        layer = obj.first_layer([p.detach() for p in obj.theta])
        if layer is None:
            return float("nan")
        with torch.no_grad():
            norms = layer.row_norms.clamp_min(1e-300)
            dist = (layer.pre(x.detach()[None])[0] / norms).abs()
            idx = torch.argsort(dist)[:nearest]
            return float((layer.linear(v.detach()[None])[0][idx] / (norms[idx] * v.norm().clamp_min(1e-300))).abs().max())
    W1 = obj.theta[0].detach()
    b1 = obj.theta[1].detach() if len(obj.theta) > 1 and obj.theta[1].shape == W1.shape[:1] else torch.zeros_like(W1[:, 0])
    norms = W1.norm(dim=1).clamp_min(1e-300)
    dist = ((W1 @ x.detach() + b1) / norms).abs()
    idx = torch.argsort(dist)[:nearest]
    return float(((W1[idx] @ v.detach()) / (norms[idx] * v.norm().clamp_min(1e-300))).abs().max())


class SetLoss:
    """J of the candidate sets a splitting round tries.  For a weighted sum J = F(s) + R, s changes only by the
    contributions of the candidates a split replaces, so a trial costs the split candidate's features only
    (``state`` is s); any other objective (the training simulation, :mod:`trainrecon.objective.simulation`) is
    evaluated afresh on the trial set (``state`` is None)."""

    def __init__(self, obj, cands: CandidateSet) -> None:
        self.obj = obj
        self.linear = isinstance(obj, WeightedSumObjective)
        self.state = obj.feature_sum(cands.x.detach(), obj.weights(cands.multipliers.detach())) if self.linear else None
        self.J = self.of(cands, self.state)
        self._u = None  # u at the current set, computed once per accepted set

    def of(self, cands: CandidateSet, state) -> float:
        """J of ``cands``, whose weighted sum is ``state`` (a weighted sum) or which is evaluated afresh."""
        if self.linear:
            return exact_loss(self.obj, state, cands)
        o = self.obj if cands.labels is None else _with_labels(self.obj, cands.labels)
        return o.loss_of(cands.x.detach(), cands.multipliers.detach())

    def u(self, cands: CandidateSet):
        """u = dF/ds at the round's current set (the weighted sum's), or the objective's own (the simulation's
        trajectory and adjoints), once per accepted set: ``cands`` is that set (it changes only by :meth:`accept`)."""
        if self._u is None:
            if self.linear:
                self._u = self.obj.outer.grad(self.state)
            else:
                o = self.obj if cands.labels is None else _with_labels(self.obj, cands.labels)
                self._u = o.u(cands.x, cands.multipliers)
        return self._u

    def replaced(self, cands: CandidateSet, rows: list[int], trial: CandidateSet, new_rows: list[int], state=None):
        """(state, J) of ``trial``: ``cands`` with its ``rows`` replaced by ``trial``'s ``new_rows`` (none: removed);
        ``state`` is ``cands``' (default: the round's current one)."""
        state = self.state if state is None else state
        if not self.linear:
            return None, self.of(trial, None)
        new = [a - b for a, b in zip(state, contribution(self.obj, cands, rows))]
        if new_rows:
            new = [a + c for a, c in zip(new, contribution(self.obj, trial, new_rows))]
        return new, self.of(trial, new)

    def accept(self, state, J: float) -> None:
        self.state, self.J, self._u = state, J, None


def removal_costs(loss: SetLoss, cands: CandidateSet) -> torch.Tensor:
    """Exact J(without j) - J for every candidate j (F of s minus j's contribution, prior without j)."""
    out = torch.empty(cands.m, dtype=torch.float64)
    for j in range(cands.m):
        keep = cands.take([i for i in range(cands.m) if i != j])
        out[j] = loss.replaced(cands, [j], keep, [])[1] - loss.J
    return out


@dataclass
class RoundResult:
    cands: CandidateSet
    log: list[dict[str, Any]]
    seconds: float
    unsplittable: int = 0  # candidates passed over: halving the multiplier raises the prior, or a kink direction
    images: torch.Tensor | None = None  # (accepted, 3, d): parent, child +, child - at the split


def split_round(obj: WeightedSumObjective, cands: CandidateSet, cfg: SplitConfig, round_index: int,
                curvature: WeightedSumObjective | None = None) -> RoundResult:
    """One round of the refinement (see the module docstring).  The objective must be built for ``cands``;
    ``curvature`` (default ``obj``) is the objective whose splitting matrices choose the directions
    (``cfg.curvature``); the line search and acceptance always use ``obj``."""
    t0 = time.time()
    curv = obj if curvature is None else curvature
    X, M = cands.x.detach(), cands.multipliers.detach()
    loss = SetLoss(obj, cands)
    if cfg.direction == "eigen" or cfg.score == "eigenvalue":
        mu, V, _ = splitting_eigenpairs(curv, cands, cfg.lanczos_steps, cfg.seed + round_index)
    else:  # the random-direction control ranked by multiplier needs no eigenpairs
        mu, V = torch.full((cands.m,), float("nan"), dtype=X.dtype, device=X.device), torch.empty_like(X)
    if cfg.direction == "random":
        g = torch.Generator().manual_seed(cfg.seed + 10_000 + round_index)
        V = torch.randn(V.shape, generator=g, dtype=torch.float64).to(V)
        V = V / V.norm(dim=1, keepdim=True)
    per_round = cfg.per_round or max(2, cands.m0 // 10)
    weight = M.abs() if M.ndim == 1 else M.abs().sum(1)
    order = torch.argsort(mu) if cfg.score == "eigenvalue" else torch.argsort(-weight)
    cap = int(math.floor(cfg.max_factor * cands.m0))
    log: list[dict[str, Any]] = []
    tried = skipped = 0
    images: list[torch.Tensor] = []
    ids = cands.ids.clone()
    costs = removal_costs(loss, cands) if cfg.mode == "fixed" else None
    u_curv = None
    for j0 in order.tolist():
        if tried >= per_round or (cfg.mode == "grow" and cands.m >= cap):
            break
        if cfg.score == "eigenvalue" and cfg.direction == "eigen" and not float(mu[j0]) < 0:  # NaN: none
            break  # no negative curvature left: nothing to gain to second order
        where = (cands.ids == ids[j0]).nonzero()
        if not len(where):
            continue  # removed by an earlier split of this round
        j = int(where[0])  # position now (earlier splits append, removals shift)
        if cfg.skip_kinks and kink_alignment(obj, cands.x[j], V[j0]) > cfg.skip_kinks:
            skipped += 1  # the direction only straddles a ReLU kink
            continue
        zero = cands.split(j, V[j0], 0.0)
        with torch.no_grad():  # s is unchanged at eps = 0: only the prior moves (halved multipliers, a doubled box term)
            jump = float(obj.prior(zero.x, zero.multipliers) - obj.prior(cands.x, cands.multipliers))
        if jump > 1e-3 * max(loss.J, 1e-300):
            skipped += 1  # halving this multiplier costs more than a split can gain (the lambda_min penalty)
            continue
        tried += 1
        xj, v = cands.x[j], V[j0]
        if curv is obj:
            u = loss.u(cands)
        else:  # the curvature model's own u, recomputed only after an accepted split changed the candidates
            if u_curv is None:
                model = curv if cands.labels is None else _with_labels(curv, cands.labels)
                u_curv = model.u(cands.x, cands.multipliers)
            u = u_curv
        pred_curv = float(v @ splitting_hvp(curv, cands.x[j : j + 1], curv.weights(cands.multipliers[j : j + 1]),
                                            u, v[None], None if cands.labels is None else cands.labels[j : j + 1],
                                            positions=[j])[0])
        best = None
        for rel in cfg.eps_grid:
            eps = rel * float(xj.norm().clamp_min(1e-12))
            trial = cands.split(j, v, eps)
            s_new, J_new = loss.replaced(cands, [j], trial, [j, trial.m - 1])
            if best is None or J_new < best[0]:
                best = (J_new, eps, trial, s_new)
        J_new, eps, trial, s_new = best
        removed = None
        if cfg.mode == "fixed":  # keep m: drop the candidate (not the parent) whose removal costs least
            alive = {int(i): p for p, i in enumerate(trial.ids.tolist())}
            order_cost = [k for k in torch.argsort(costs).tolist() if int(ids[k]) in alive and k != j0]
            if order_cost:
                removed = int(ids[order_cost[0]])
                r = alive[removed]
                kept = trial.take([i for i in range(trial.m) if i != r])
                s_new, J_new = loss.replaced(trial, [r], kept, [], s_new)
                trial = kept
        # "continue" acceptance judges the whole round after a look-ahead (:class:`.hooks.SplittingHook`)
        accepted = J_new < loss.J * (1 - cfg.min_gain) or cfg.acceptance == "continue"
        align = kink_alignment(obj, xj, v)
        if accepted:
            images.append(torch.stack([xj, xj + eps * v, xj - eps * v]).detach().cpu().double())
        log.append({"kink_alignment": align, **{"round": round_index, "candidate": int(ids[j0]), "eigenvalue": float(mu[j0]),
                    "rayleigh_quotient": pred_curv, "eps": eps, "eps_relative": eps / float(xj.norm().clamp_min(1e-12)),
                    "predicted_change": 0.5 * eps**2 * pred_curv, "actual_change": J_new - loss.J,
                    "accepted": bool(accepted), "direction": cfg.direction, "removed": removed}})
        if accepted:
            cands, u_curv = trial, None
            loss.accept(s_new, J_new)
    return RoundResult(cands, log, time.time() - t0, skipped, torch.stack(images) if images else None)


__all__ = ["SplitConfig", "second_order_report", "smallest_eigenpairs", "split_round", "splitting_eigenpairs",
           "splitting_hvp", "removal_costs"]
