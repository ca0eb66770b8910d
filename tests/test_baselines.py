"""Buzaglo multiclass / regression and Loo NTK objectives against dense float64 oracles."""

import dataclasses

import numpy as np
import pytest
import torch
from torch.func import grad, jacrev

from conftest import build_objective
from trainrecon.attacks.buzaglo import (BuzagloMulticlass, BuzagloMulticlassConfig, BuzagloRegression,
                                        BuzagloRegressionConfig, block_labels)
from trainrecon.attacks.loo import LooConfig, LooNTK, beta_schedule
from trainrecon.objective.weighted_sum import SquaredDistance
from trainrecon.models.mlp import MLPSpec, Surrogate
from trainrecon.models.parameters import flatten, forward, init_params, unflatten
from trainrecon.models.victim import Victim

D = 6
MC_SPEC = MLPSpec(widths=[D, 5, 4, 3], bias=[True, False, False])
BIN_SPEC = MLPSpec(widths=[D, 5, 4, 1], bias=[True, False, False])
NTK_SPEC = MLPSpec(widths=[D, 5, 4, 2], bias=[True, True, True])
MEAN = np.linspace(0.1, 0.6, D)


def victim(spec, seed, with_init=False):
    params = init_params(spec, [2.0] * spec.n_layers, seed=seed)
    params = [p + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + i), dtype=p.dtype)
              for i, p in enumerate(params)]  # nonzero biases
    init = init_params(spec, [1.5] * spec.n_layers, seed=seed + 7) if with_init else None
    return Victim(spec, params, MEAN.reshape(1, 1, D), init)


def box(X, lo, hi):
    return ((X - hi).clamp_min(0) ** 2).sum() + ((lo - X).clamp_min(0) ** 2).sum()


def dense_multiclass(theta_flat, X, lam, target, cfg, labels):
    sur = Surrogate("modified_relu", cfg.alpha)
    m = X.shape[0]

    def margin(out, j):
        y = int(labels[j])
        others = torch.cat([out[:y], out[y + 1:]])
        return (out[y] - others.max())[None]

    rows = [jacrev(lambda th, j=j: margin(forward(MC_SPEC, unflatten(MC_SPEC, th), X[j:j + 1], sur)[0], j))(theta_flat)
            for j in range(m)]
    G = torch.stack(rows)[:, 0]
    s = ((lam / m)[:, None] * G).sum(0)
    return ((target - s) ** 2).sum() + box(X, -1, 1) + 5 * ((cfg.lambda_min - lam).clamp_min(0) ** 2).sum()


def dense_regression(theta_flat, X, lam, target, cfg):
    sur = Surrogate("modified_relu", cfg.alpha)
    m = X.shape[0]
    G = torch.stack([jacrev(lambda th, j=j: forward(BIN_SPEC, unflatten(BIN_SPEC, th), X[j:j + 1], sur)[0, 0])(theta_flat)
                     for j in range(m)])
    s = ((lam / m)[:, None] * G).sum(0)
    return ((target - s) ** 2).sum() + box(X, -1, 1)


def dense_loo(theta_flat, X, alpha, target, beta):
    sur = Surrogate("softplus", beta)
    m, K = alpha.shape
    G = torch.stack([jacrev(lambda th, j=j: forward(NTK_SPEC, unflatten(NTK_SPEC, th), X[j:j + 1], sur)[0])(theta_flat)
                     for j in range(m)])  # (m, K, P)
    s = ((alpha / (m * K))[:, :, None] * G).sum((0, 1))
    mu = torch.as_tensor(MEAN)
    return ((target - s) ** 2).sum() + 0.1 * box(X, -mu, 1 - mu) / D


def random_point(m, K, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, D, generator=g, dtype=torch.float64) * 0.9
    X[0, 0] = 1.7  # outside the box, so the prior's gradient is exercised
    M = torch.rand(m, K, generator=g, dtype=torch.float64) if K else torch.rand(m, generator=g, dtype=torch.float64)
    return X, M


@pytest.mark.parametrize("chunk", [0, 2])
def test_buzaglo_multiclass_matches_dense_oracle(chunk):
    v = victim(MC_SPEC, 1)
    cfg = BuzagloMulticlassConfig(alpha=5.0, lambda_min=0.4, chunk_size=chunk, box_space="centred")
    m = 6
    obj, cands = build_objective(BuzagloMulticlass, v, cfg, m)
    labels = cands.labels.numpy()
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    X, lam = random_point(m, 0, 3)
    out = forward(MC_SPEC, v.params, X)
    top2 = out.scatter(1, torch.as_tensor(labels)[:, None], -torch.inf).topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).abs().min() > 1e-3  # no ties: the max has one gradient
    values, gx, gl = obj.value_and_grad(X, lam)
    th = flatten(v.params)
    ref = dense_multiclass(th, X, lam, th, cfg, labels)
    rgx, rgl = grad(dense_multiclass, argnums=(1, 2))(th, X, lam, th, cfg, labels)
    assert values["total"] == pytest.approx(float(ref), rel=1e-12)
    assert torch.allclose(gx, rgx, rtol=1e-9, atol=1e-12) and torch.allclose(gl, rgl, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [0, 4])
def test_buzaglo_regression_matches_dense_oracle(chunk):
    v = victim(BIN_SPEC, 3)
    cfg = BuzagloRegressionConfig(alpha=7.0, chunk_size=chunk, box_space="centred")
    m = 5
    obj, cands = build_objective(BuzagloRegression, v, cfg, m)
    assert cands.labels is None
    X, lam = random_point(m, 0, 4)
    lam = lam - 0.5  # free sign
    values, gx, gl = obj.value_and_grad(X, lam)
    th = flatten(v.params)
    ref = dense_regression(th, X, lam, th, cfg)
    rgx, rgl = grad(dense_regression, argnums=(1, 2))(th, X, lam, th, cfg)
    assert values["total"] == pytest.approx(float(ref), rel=1e-12)
    assert torch.allclose(gx, rgx, rtol=1e-9, atol=1e-12) and torch.allclose(gl, rgl, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel_at,it", [("final", 0), ("final", 30000), ("init", 50000)])
def test_loo_matches_dense_oracle(kernel_at, it):
    v = victim(NTK_SPEC, 5, with_init=True)
    cfg = LooConfig(dtype="float64", kernel_at=kernel_at)
    m = 4
    obj, _ = build_objective(LooNTK, v, cfg, m, it)
    X, alpha = random_point(m, 2, 6)
    values, gx, ga = obj.value_and_grad(X, alpha)
    at = flatten(v.params if kernel_at == "final" else v.init_params)
    target = flatten(v.params) - flatten(v.init_params)
    beta = beta_schedule(cfg, it)
    ref = dense_loo(at, X, alpha, target, beta)
    rgx, rga = grad(dense_loo, argnums=(1, 2))(at, X, alpha, target, beta)
    assert values["total"] == pytest.approx(float(ref), rel=1e-12)
    assert torch.allclose(gx, rgx, rtol=1e-9, atol=1e-12) and torch.allclose(ga, rga, rtol=1e-9, atol=1e-12)


def test_loo_beta_schedule_is_the_references():
    cfg = LooConfig()
    assert beta_schedule(cfg, 0) == 11.0
    assert beta_schedule(cfg, 20000) == pytest.approx(20.0)
    assert beta_schedule(cfg, 40000) == pytest.approx(110.0)
    assert beta_schedule(cfg, 46000) == 200.0


def exact_point(obj, X_true, M_true):
    """The objective with target = the exact weighted sum of features at the known points."""
    return dataclasses.replace(obj, outer=SquaredDistance(obj.feature_sum(X_true, obj.weights(M_true))))


@pytest.mark.parametrize("method", ["multiclass", "regression", "loo"])
def test_exact_stationary_point_has_zero_objective(method):
    g = torch.Generator().manual_seed(11)
    m = 6
    X_true = torch.rand(m, D, generator=g, dtype=torch.float64) * 0.3 - 0.05  # inside every box
    if method == "multiclass":
        obj, _ = build_objective(BuzagloMulticlass, victim(MC_SPEC, 12), BuzagloMulticlassConfig(alpha=5.0, lambda_min=0.1, box_space="centred"), m)
        M_true = torch.rand(m, generator=g, dtype=torch.float64) + 0.5  # above lambda_min: no penalty
    elif method == "regression":
        obj, _ = build_objective(BuzagloRegression, victim(BIN_SPEC, 13), BuzagloRegressionConfig(alpha=5.0, box_space="centred"), m)
        M_true = torch.randn(m, generator=g, dtype=torch.float64)
    else:
        obj, _ = build_objective(LooNTK, victim(NTK_SPEC, 14, with_init=True), LooConfig(dtype="float64"), m)
        M_true = torch.rand(m, 2, generator=g, dtype=torch.float64) - 0.5
    obj = exact_point(obj, X_true, M_true)
    values, gx, gm = obj.value_and_grad(X_true, M_true)
    assert values["total"] < 1e-28
    assert gx.abs().max() < 1e-13 and gm.abs().max() < 1e-13
    values2, _, _ = obj.value_and_grad(X_true + 0.05, M_true)
    assert values2["total"] > 1e-6


def test_block_labels_refuse_uneven_blocks():
    from trainrecon.errors import TrainreconError

    assert block_labels(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(TrainreconError, match="attack.m"):
        block_labels(7, 3)


def test_pixel_box_keeps_candidates_in_the_pixel_range():
    """box_space 'pixel': the prior is sum (x - (1 - mu))_+^2 + (-mu - x)_+^2, zero exactly on [-mu, 1 - mu]."""
    from trainrecon.attacks.haim import kkt_prior

    mu = torch.as_tensor(MEAN)
    prior = kkt_prior(BuzagloRegressionConfig(box_space="pixel"), mu)
    lam = torch.zeros(2, dtype=torch.float64)
    inside = torch.stack([-mu, 1 - mu])
    assert float(prior(inside, lam)) == 0.0
    X = torch.stack([-mu - 0.3, 1 - mu + 0.2])
    assert float(prior(X, lam)) == pytest.approx(D * (0.3**2 + 0.2**2), rel=1e-12)
    centred = kkt_prior(BuzagloRegressionConfig(box_space="centred"))  # the reference: [-1, 1] on the centred x
    assert float(centred(X, lam)) == pytest.approx(float(((X.abs() - 1).clamp_min(0) ** 2).sum()), rel=1e-12)


def test_repulsion_prior_penalises_only_near_copies():
    """repel: the prior adds repel * sum_{a<b} (cos(x_a, x_b) - repel_cos)_+^2, checked against a loop over
    pairs in float64 (a copy pays, an orthogonal candidate does not), and its gradient pushes a copy away."""
    from trainrecon.attacks.haim import kkt_prior
    from trainrecon.attacks.method import repulsion_penalty

    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 12, generator=g, dtype=torch.float64)
    X = torch.cat([base, base[:1] + 0.05 * torch.randn(1, 12, generator=g, dtype=torch.float64)])  # 3 is near 0
    want = 0.0
    for a in range(4):
        for b in range(a + 1, 4):
            c = float(X[a] @ X[b] / (X[a].norm() * X[b].norm()))
            want += max(c - 0.9, 0.0) ** 2
    assert want > 0
    assert float(repulsion_penalty(X, 0.9)) == pytest.approx(want, rel=1e-12)
    assert float(repulsion_penalty(torch.eye(3, 12, dtype=torch.float64), 0.9)) == 0.0  # orthogonal: free
    lam = torch.ones(4, dtype=torch.float64)
    plain = kkt_prior(BuzagloRegressionConfig(box=100.0, box_space="centred"))
    repel = kkt_prior(BuzagloRegressionConfig(box=100.0, box_space="centred", repel=2.0, repel_cos=0.9))
    assert float(repel(X, lam) - plain(X, lam)) == pytest.approx(2.0 * want, rel=1e-12)
    Xg = X.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(repulsion_penalty(Xg, 0.9), Xg)
    stepped = X - 1e-2 * gx
    assert float(repulsion_penalty(stepped, 0.9)) < float(repulsion_penalty(X, 0.9))
    from trainrecon.errors import TrainreconError

    with pytest.raises(TrainreconError, match="repel_cos"):
        BuzagloRegressionConfig(repel_cos=1.0)
