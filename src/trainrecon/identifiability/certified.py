"""Certified, non-iterative reconstruction from a two-layer polynomial network (Shen, Wang, Qian & Lei 2026).

For f(x) = sum_k a_k (w_k . x)^alpha at a KKT point of max-margin, every neuron satisfies

    T(u_k^(alpha-1), .) = w_k / (alpha a_k |w_k|^(alpha-1)),   u_k = w_k / |w_k|,   T = sum_i lambda_i y_i x_i^(x)alpha.

``identify`` (1) finds the significant neurons, their span B (r dims) and their distinct directions;
(2) solves these equations jointly over *symmetric* T on span B (monomial coordinates, minimum-norm least
squares) and compares the rank of the system with the dimension binom(r + alpha - 1, alpha) it needs;
(3) reads the rank R of T from the gap in its unfolding's spectrum; (4) decomposes T by Jennrich's
algorithm and refines the CP fit; (5) turns each component c_i v_i^(x)alpha into a sample: y_i = sign(c_i),
x_i = t_i v_i with y_i f(x_i) = margin, lambda_i = |c_i| / t_i^alpha; (6) checks end to end that
theta = sum_i lambda_i y_i grad_theta f(x_i); (7) optionally polishes the KKT objective from there.

Verdict: **identified** only if alpha >= 3, the neurons have more distinct directions than the dimension r of
their span, the KKT residual and the margins of the final samples are within ``tol``, and the answer is
unique: globally (the joint system has full column rank) or locally (the Jacobian of the KKT equations in the
samples has full column rank).  Otherwise **not certified**, with the reason.  The report also says whether the
neurons' (alpha-1)-th powers span Sym^(alpha-1) of the span (the Gram condition), which rules out samples
partly outside it.  Ambiguities
that no algorithm can remove are stated: for odd alpha (x, y) and (-x, -y) are the same term; for even alpha
x and -x are; the common scale of all x_i is fixed only by the margin (exact when the victim is stored at unit
minimum margin, as trainrecon's are; otherwise the x_i are right up to one common factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch.func import jacrev

from ..config import check_numbers
from ..errors import TrainreconError
from ..models.victim import Victim
from .jennrich import jennrich, refine_cp
from ..training.polynomial import MAX_DEGREE, poly_f, poly_grads
from .symmetric import gap_rank, gradient_design, monomials, n_monomials, tensor_powers, to_dense, unfolding_spectrum

IDENTIFIED = "identified"
NOT_CERTIFIED = "not certified"


@dataclass
class IdentifyConfig:
    """Thresholds of :func:`identify`.

    ``neuron_threshold``: a neuron is significant if |w_k| >= threshold max_k |w_k|; ``span_tol``: relative
    singular value below which the neuron span is cut; ``rank_tol``: relative singular value for the rank of
    the interpolation system; ``tol``: the residual a certificate allows; ``margin``: the margin y f(x) the
    samples are scaled to (None: 1, and the scale is reported as known only if the victim records a
    rescaling to unit minimum margin).
    """

    neuron_threshold: float = 0.1
    span_tol: float = 1e-3
    rank_tol: float = 1e-9
    tol: float = 1e-6
    max_design_entries: int = 30_000_000
    jennrich_draws: int = 5
    refine: bool = True
    polish: bool = True
    polish_iters: int = 500
    margin: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "identify")
        if self.jennrich_draws < 1 or self.polish_iters < 0 or self.max_design_entries < 1:
            raise TrainreconError("identify.jennrich_draws and max_design_entries must be >= 1, polish_iters >= 0")
        if not 0 < self.neuron_threshold <= 1:
            raise TrainreconError("identify.neuron_threshold must be in (0, 1]")
        if self.tol <= 0 or self.span_tol <= 0 or self.rank_tol <= 0:
            raise TrainreconError("identify.tol, span_tol and rank_tol must be positive")
        if self.margin is not None and self.margin <= 0:
            raise TrainreconError(f"identify.margin: must be positive, got {self.margin}")


@dataclass
class PolyNet:
    a: np.ndarray  # (K,)
    W: np.ndarray  # (K, d)
    alpha: int
    second_layer_trained: bool = True

    def f(self, X: np.ndarray) -> np.ndarray:
        """f(x) = sum_k a_k (w_k . x)^alpha for each row of X."""
        return poly_f(torch.as_tensor(self.a), torch.as_tensor(self.W), torch.as_tensor(X), self.alpha).numpy()

    def grads(self, X: np.ndarray) -> np.ndarray:
        """Per-sample gradient of f with respect to the trained parameters, flattened (n, P)."""
        return poly_grads(torch.as_tensor(self.a), torch.as_tensor(self.W), torch.as_tensor(X), self.alpha,
                          self.second_layer_trained).numpy()

    def theta(self) -> np.ndarray:
        return np.concatenate(([self.a] if self.second_layer_trained else []) + [self.W.reshape(-1)])


def poly_from_victim(victim: Victim) -> PolyNet:
    spec = victim.spec
    if getattr(spec, "activation", None) != "power" or spec.n_layers != 2 or any(spec.bias) or spec.n_outputs != 1:
        raise TrainreconError("identify: needs a two-layer polynomial victim (model.json: activation 'power', "
                              "widths [d, K, 1], no biases)")
    W = victim.params[0].double().numpy()
    a = victim.params[1].double().numpy()[0]
    if not 2 <= spec.degree <= MAX_DEGREE:
        raise TrainreconError(f"identify: model.json.degree is {spec.degree}; identification needs a degree in "
                              f"[2, {MAX_DEGREE}] (degree 1 is a linear network: its KKT equations hold one vector)")
    if not np.any(W) or not np.any(a):
        which = "first-layer weights" if not np.any(W) else "second-layer weights"
        raise TrainreconError(f"identify: model.safetensors: the {which} are all zero; the network is the zero "
                              "function and its KKT equations say nothing of the data")
    trained = bool(victim.train_info.get("trainer", {}).get("train_second_layer", True))
    return PolyNet(a=a, W=W, alpha=spec.degree, second_layer_trained=trained)


def distinct_directions(U: np.ndarray, tol: float = 1e-6) -> int:
    """Number of distinct lines among unit rows of U (u and -u count once)."""
    reps: list[np.ndarray] = []
    for u in U:
        if all(1 - abs(float(u @ v)) > tol for v in reps):
            reps.append(u)
    return len(reps)


def kkt_fit(net: PolyNet, X: np.ndarray, b: np.ndarray) -> float:
    """||theta - sum_i b_i grad f(x_i)|| / ||theta|| (b_i = lambda_i y_i)."""
    theta = net.theta()
    return float(np.linalg.norm(theta - b @ net.grads(X)) / np.linalg.norm(theta)) if len(X) else 1.0


def samples_from_components(net: PolyNet, V: np.ndarray, c: np.ndarray, margin: float):
    """x_i = t_i v_i, y_i = sign(c_i), t_i = (margin / (y_i f(v_i)))^(1/alpha), lambda_i = |c_i| / t_i^alpha.
    Returns X, y, lambda and a mask of components whose margin sign is consistent (y_i f(v_i) > 0)."""
    y = np.sign(c)
    fv = net.f(V) * y
    ok = fv > 0
    t = np.where(ok, (margin / np.where(ok, fv, 1.0)) ** (1.0 / net.alpha), np.nan)
    X = t[:, None] * V
    lam = np.abs(c) / t**net.alpha
    return X, y, lam, ok


def kkt_residual_vector(net: PolyNet, margin: float, sign: torch.Tensor):
    """r(X, b) = [(theta - sum_i b_i grad f(x_i)) / ||theta||,  sign_i f(x_i) - margin] as a function of the
    flat vector (X, b): the KKT stationarity and margin equations in the samples."""
    a = torch.as_tensor(net.a)
    W = torch.as_tensor(net.W)
    theta = torch.as_tensor(net.theta())
    tn = theta.norm()
    al, R, d = net.alpha, len(sign), net.W.shape[1]

    def residual(z: torch.Tensor) -> torch.Tensor:
        X, b = z[: R * d].reshape(R, d), z[R * d :]
        Zx = X @ W.T
        gW = (b[:, None] * al * a * Zx ** (al - 1)).T @ X  # sum_i b_i d f(x_i) / d W, (K, d)
        parts = ([(b[:, None] * Zx**al).sum(0)] if net.second_layer_trained else []) + [gW.reshape(-1)]
        f = (Zx**al) @ a
        return torch.cat([(theta - torch.cat(parts)) / tn, sign * f - margin])

    return residual


def polish(net: PolyNet, X0: np.ndarray, b0: np.ndarray, margin: float, iters: int):
    """Levenberg-Marquardt (scipy) on the KKT equations in the samples, from the algebraic answer.

    Returns (X, b, ||residual||, singular values of the Jacobian at the answer).  The Jacobian has
    R (d + 1) columns; full column rank means the answer is an isolated solution (locally identified).
    """
    sign = torch.as_tensor(np.sign(b0))
    res = kkt_residual_vector(net, margin, sign)
    jac = jacrev(res)
    z0 = np.concatenate([X0.reshape(-1), b0])
    fun = lambda z: res(torch.as_tensor(z)).numpy()  # noqa: E731
    jfun = lambda z: jac(torch.as_tensor(z)).numpy()  # noqa: E731
    out = scipy.optimize.least_squares(fun, z0, jac=jfun, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15,
                                       max_nfev=iters)
    R, d = len(b0), X0.shape[1]
    sv = np.linalg.svd(jfun(out.x), compute_uv=False)
    return out.x[: R * d].reshape(R, d), out.x[R * d :], float(np.linalg.norm(out.fun)), sv


def neurons_as_data(net: PolyNet, keep: np.ndarray, margin: float) -> np.ndarray:
    """The trivial baseline: each significant neuron direction, scaled so that |f(x)| = margin."""
    U = net.W[keep] / np.linalg.norm(net.W[keep], axis=1, keepdims=True)
    fu = np.abs(net.f(U))
    return (margin / np.maximum(fu, 1e-300))[:, None] ** (1.0 / net.alpha) * U


def identify(net: PolyNet, cfg: IdentifyConfig = IdentifyConfig(), scale_recorded: bool = False) -> dict[str, Any]:
    """Run the certified reconstruction; returns a report dict with arrays under 'samples' and 'baseline'."""
    al = net.alpha
    margin = 1.0 if cfg.margin is None else cfg.margin
    norms = np.linalg.norm(net.W, axis=1)
    keep = norms >= cfg.neuron_threshold * norms.max()
    Ws, as_ = net.W[keep], net.a[keep]
    _, S, Vt = np.linalg.svd(Ws, full_matrices=False)
    r = int((S > cfg.span_tol * S[0]).sum())
    B = Vt[:r].T  # (d, r)
    Z = Ws @ B
    zn = np.linalg.norm(Z, axis=1)
    U = Z / zn[:, None]
    n_dir = distinct_directions(U)
    needed = n_monomials(r, al)
    rep: dict[str, Any] = {
        "alpha": al,
        "d": int(net.W.shape[1]),
        "width": int(net.W.shape[0]),
        "second_layer_trained": net.second_layer_trained,
        "significant_neurons": int(keep.sum()),
        "distinct_directions": n_dir,
        "neuron_span": r,
        "neuron_span_spectrum": (S / S[0]).tolist(),
        "system_unknowns": needed,
        "system_equations": int(len(U) * r),
        "scale": ("from the given margin" if cfg.margin is not None else
                  "from unit margins (the victim records a rescaling to unit minimum margin)" if scale_recorded else
                  "up to one common factor (the victim's margin scale is unknown; x_i assume margin 1)"),
        "sign": ("odd alpha: each (x_i, y_i) only up to a joint flip (x, y) -> (-x, -y)" if al % 2 else
                 "even alpha: y_i identified, x_i only up to x -> -x"),
    }
    reasons: list[str] = []
    if al < 3:
        reasons.append(f"alpha = {al}: the moment tensor is a matrix, whose rank-one decompositions are not unique, "
                       "so the samples are not identifiable from the KKT equations")
    if len(U) * r * needed > cfg.max_design_entries:
        reasons.append(f"interpolation system too large ({len(U) * r} x {needed}); raise identify.max_design_entries")
        rep.update({"verdict": NOT_CERTIFIED, "reasons": reasons, "samples": None,
                    "baseline": neurons_as_data(net, keep, margin)})
        return rep
    E = monomials(r, al)
    D = gradient_design(U, E)
    rhs = (Z / (al * as_ * zn ** (al - 1))[:, None]).reshape(-1)
    sv = np.linalg.svd(D, compute_uv=False)
    rank = int((sv > cfg.rank_tol * sv[0]).sum())
    c, *_ = np.linalg.lstsq(D, rhs, rcond=cfg.rank_tol)
    interp = float(np.linalg.norm(D @ c - rhs) / np.linalg.norm(rhs))
    T = to_dense(c, E)
    spec = unfolding_spectrum(T)
    R = gap_rank(spec)
    rep.update({"system_rank": rank, "system_condition": float(sv[0] / sv[min(rank, len(sv)) - 1]) if rank else None,
                "interpolation_residual": interp, "tensor_spectrum": (spec / spec[0]).tolist(), "tensor_rank": R})
    if al >= 3:
        V, coef, cp_res = jennrich(T, R, cfg.jennrich_draws, cfg.seed)
    else:  # one of the infinitely many decompositions of a matrix: its eigenvectors
        evals, evecs = np.linalg.eigh(T)
        top = np.argsort(-np.abs(evals))[:R]
        V, coef = evecs[:, top].T, evals[top]
        cp_res = float(np.linalg.norm(T - (V.T * coef) @ V) / np.linalg.norm(T))
    rep["cp_residual_jennrich"] = cp_res
    if cfg.refine and al >= 3:
        V, coef, cp_res = refine_cp(T, V, coef)
    rep["cp_residual"] = cp_res
    X, y, lam, ok = samples_from_components(net, V @ B.T, coef, margin)
    if not ok.all():
        reasons.append(f"{int((~ok).sum())} components have margin sign opposite to their weight: not a KKT point")
    X, y, lam = X[ok], y[ok], lam[ok]
    end = kkt_fit(net, X, lam * y)
    rep["kkt_fit_algebraic"] = end
    local_rank = None
    if cfg.polish and len(X) and al >= 3:
        Xp, bp, value, jsv = polish(net, X, lam * y, margin, cfg.polish_iters)
        fit_p = kkt_fit(net, Xp, bp)
        local_rank = int((jsv > 1e-8 * jsv[0]).sum())
        rep.update({"kkt_fit_polished": fit_p, "polish_residual": value, "jacobian_rank": local_rank,
                    "jacobian_columns": int(len(jsv)), "jacobian_condition": float(jsv[0] / max(jsv[-1], 1e-300))})
        if fit_p < end:
            X, y, lam, end = Xp, np.sign(bp), np.abs(bp), fit_p
    margins = y * net.f(X) if len(X) else np.zeros(0)
    # the certificate: residuals at the final answer, and uniqueness (global from the linear system, or local)
    if al >= 3 and len(X):
        if not end < cfg.tol or not np.all(np.abs(margins - margin) < cfg.tol * margin):
            reasons.append(f"KKT residual {end:.2e} at the recovered samples is above tolerance {cfg.tol:.0e} (or "
                           "their margins differ from the margin): the network is not at an exact KKT point of "
                           "these samples, which are approximations")
        isolated = local_rank is not None and local_rank == len(X) * (rep["d"] + 1)
        if n_dir <= r:
            reasons.append(f"the neurons point in only {n_dir} distinct directions within their {r}-dimensional "
                           f"span: at least {len(X)} samples, others may lie outside the span of the neurons")
        elif rank < needed and not isolated:
            reasons.append(f"interpolation system rank {rank} < {needed} and the samples are not an isolated "
                           f"solution: the {n_dir} distinct neuron directions do not determine the data; at least "
                           f"{len(X)} samples, others may lie outside the span of the neurons")
    if not len(X):
        reasons.append("no consistent component was recovered")
    gram = np.linalg.svd(tensor_powers(U, al - 1), compute_uv=False) if al >= 2 else np.ones(1)
    gram_rank = int((gram > 1e-9 * gram[0]).sum())
    gram_needed = n_monomials(r, al - 1)
    rep.update({"gram_rank": gram_rank, "gram_needed": gram_needed,
                "outside_span_ruled_out": bool(gram_rank == gram_needed)})
    scope = ("; the neuron powers span Sym^(alpha-1), which also rules out samples outside the span"
             if gram_rank == gram_needed else
             f"; unique among samples in the span of the neurons (Gram rank {gram_rank} < {gram_needed}: samples "
             "partly outside the span are not ruled out)")
    rep["certificate"] = (None if reasons else ("global: the joint interpolation system has full rank"
                          if rank == needed else "local: the recovered samples are an isolated exact solution of the "
                          "KKT equations (Jacobian of full column rank); the linear system alone leaves "
                          f"{needed - rank} dimensions of T free") + scope)
    rep["verdict"] = IDENTIFIED if not reasons else NOT_CERTIFIED
    rep["reasons"] = reasons
    rep["n_recovered"] = int(len(X))
    rep["kkt_fit_final"] = end
    rep["recovered_margins"] = margins.tolist()
    rep["samples"] = {"x": X, "y": y, "lambda": lam}
    rep["baseline"] = neurons_as_data(net, keep, margin)
    return rep


def compare_to_truth(X_rec: np.ndarray | None, X_true: np.ndarray, active: np.ndarray | None = None) -> dict[str, Any]:
    """Match recovered to true samples (Hungarian on 1 - |cos|), align signs, report errors over the active ones.

    Unmatched true samples count as cos 0 and relative error 1.
    """
    Xt = X_true if active is None else X_true[active]
    n = len(Xt)
    if X_rec is None or len(X_rec) == 0 or n == 0:
        return {"n_true": n, "matched": 0, "max_rel_error": 1.0 if n else 0.0, "mean_one_minus_cos": 1.0 if n else 0.0,
                "recovered_cos_ge_0.99": 0}
    cos = (Xt / np.linalg.norm(Xt, axis=1, keepdims=True)) @ (X_rec / np.linalg.norm(X_rec, axis=1, keepdims=True)).T
    rows, cols = scipy.optimize.linear_sum_assignment(1 - np.abs(cos))
    err = np.ones(n)
    one_minus = np.ones(n)
    for i, j in zip(rows, cols):
        s = np.sign(cos[i, j]) or 1.0
        err[i] = np.linalg.norm(s * X_rec[j] - Xt[i]) / np.linalg.norm(Xt[i])
        one_minus[i] = max(0.0, 1 - abs(cos[i, j]))
    return {"n_true": n, "matched": int(len(rows)), "max_rel_error": float(err.max()), "rel_errors": err.tolist(),
            "mean_one_minus_cos": float(one_minus.mean()), "recovered_cos_ge_0.99": int((one_minus <= 0.01).sum())}


__all__ = ["IdentifyConfig", "PolyNet", "identify", "compare_to_truth", "poly_from_victim", "IDENTIFIED", "NOT_CERTIFIED"]
