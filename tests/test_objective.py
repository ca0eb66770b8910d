import dataclasses

import pytest
import torch
from torch.func import grad, jacrev

from conftest import build_objective
from trainrecon.attacks.haim import Haim, HaimConfig, haim_labels
from trainrecon.objective.weighted_sum import SquaredDistance
from trainrecon.models.mlp import MLPSpec, Surrogate
from trainrecon.models.parameters import flatten, forward, init_params, unflatten
from trainrecon.models.victim import Victim

SPEC = MLPSpec(widths=[6, 5, 4, 1], bias=[True, False, False])
CFG = HaimConfig(alpha=5.0, lambda_min=0.3, box_space="centred", tv=0.0, deep_weight=1.0)  # the oracle's box and prior


def haim_objective(spec, params, cfg, m):
    return build_objective(Haim, Victim(spec, params), cfg, m)[0]


def dense_loss(theta_flat, X, lam, target_flat, m, gamma=None):
    """Oracle: per-sample gradients g_j formed explicitly, s = (1/m) sum lam_j y_j g_j; ``gamma`` weighs each
    parameter's squared residual (None: 1)."""
    y = haim_labels(m, torch.float64, "cpu")
    sur = Surrogate("modified_relu", CFG.alpha)

    def phi_j(th, xj):
        return forward(SPEC, unflatten(SPEC, th), xj[None], sur)[0, 0]

    G = torch.stack([jacrev(phi_j)(theta_flat, X[j]) for j in range(m)])  # (m, P)
    s = ((lam * y / m)[:, None] * G).sum(0)
    box = ((X - 1).clamp_min(0) ** 2).sum() + ((-1 - X).clamp_min(0) ** 2).sum()
    weight = 1.0 if gamma is None else gamma
    return (weight * (target_flat - s) ** 2).sum() + box + 5 * ((CFG.lambda_min - lam).clamp_min(0) ** 2).sum()


@pytest.mark.parametrize("chunk", [0, 3])
def test_value_and_gradient_match_dense_oracle(chunk):
    torch.manual_seed(0)
    params = init_params(SPEC, [2.0, 2.0, 2.0], seed=3)
    m = 6
    X = torch.randn(m, 6, dtype=torch.float64) * 0.9
    lam = torch.rand(m, dtype=torch.float64)
    obj = dataclasses.replace(haim_objective(SPEC, params, CFG, m), chunk_size=chunk)
    values, gx, gl = obj.value_and_grad(X, lam)
    theta = flatten(params)
    ref = dense_loss(theta, X, lam, theta, m)
    ref_gx, ref_gl = grad(dense_loss, argnums=(1, 2))(theta, X, lam, theta, m)
    assert values["total"] == pytest.approx(float(ref), rel=1e-12)
    assert torch.allclose(gx, ref_gx, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gl, ref_gl, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk", [0, 3])
def test_deep_weight_counts_every_layer_after_the_first_gamma_times(chunk):
    """attack.deep_weight = gamma: F = sum_p gamma_p ||t_p - s_p||^2 with gamma_p = 1 on the first layer's weight
    and bias and gamma on the rest (dense float64 oracle: value, gradients in X and the multipliers, F(0))."""
    torch.manual_seed(1)
    params = init_params(SPEC, [2.0, 2.0, 2.0], seed=5)
    m, gamma = 6, 0.3
    X = torch.randn(m, 6, dtype=torch.float64) * 0.9
    lam = torch.rand(m, dtype=torch.float64)
    cfg = dataclasses.replace(CFG, deep_weight=gamma)
    obj = dataclasses.replace(haim_objective(SPEC, params, cfg, m), chunk_size=chunk)
    values, gx, gl = obj.value_and_grad(X, lam)
    theta = flatten(params)
    first = params[0].numel() + params[1].numel()  # layers.0.weight and layers.0.bias
    weight = torch.ones(len(theta), dtype=torch.float64)
    weight[first:] = gamma
    ref = dense_loss(theta, X, lam, theta, m, weight)
    ref_gx, ref_gl = grad(dense_loss, argnums=(1, 2))(theta, X, lam, theta, m, weight)
    assert values["total"] == pytest.approx(float(ref), rel=1e-12)
    assert torch.allclose(gx, ref_gx, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gl, ref_gl, rtol=1e-9, atol=1e-12)
    assert obj.outer.baseline == pytest.approx(float((weight * theta ** 2).sum()), rel=1e-12)
    # the unweighted objective differs, and gamma = 1 is it
    plain = haim_objective(SPEC, params, CFG, m).value_and_grad(X, lam)[0]["total"]
    assert abs(plain - values["total"]) > 1e-3 * abs(plain)
    same = haim_objective(SPEC, params, dataclasses.replace(CFG, deep_weight=1.0), m).value_and_grad(X, lam)[0]
    assert same["total"] == plain


def test_exact_stationary_point_has_zero_objective():
    """theta built as an exact weighted sum of per-sample gradients at known points: zero loss, zero gradient."""
    params = init_params(SPEC, [2.0, 2.0, 2.0], seed=4)
    m = 4
    X_true = torch.rand(m, 6, dtype=torch.float64) * 1.6 - 0.8
    lam_true = torch.tensor([0.7, 1.3, 0.9, 2.0], dtype=torch.float64)
    obj = haim_objective(SPEC, params, CFG, m)
    target = obj.feature_sum(X_true, obj.weights(lam_true))
    obj = dataclasses.replace(obj, outer=SquaredDistance(target))
    values, gx, gl = obj.value_and_grad(X_true, lam_true)
    assert values["total"] < 1e-28
    assert gx.abs().max() < 1e-13 and gl.abs().max() < 1e-13
    values2, _, _ = obj.value_and_grad(X_true + 0.05, lam_true)
    assert values2["total"] > 1e-6  # and it is not zero elsewhere


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 5), (1, 5, 1)])
def test_priors_written_out_match_autograd_of_their_formulas(shape):
    """total_variation and box_penalty compute their gradients by hand (one pass each); float64 oracle: the
    plain formulas, differentiated by autograd, on points inside, outside and on both sides of the box."""
    from trainrecon.attacks.method import box_penalty, total_variation

    g = torch.Generator().manual_seed(2)
    m, d = 4, shape[0] * shape[1] * shape[2]
    X = (torch.randn(m, d, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    w = torch.rand(m, generator=g, dtype=torch.float64)

    def tv_oracle(Z):
        img = Z.reshape(m, *shape)
        out = torch.zeros(m, dtype=torch.float64)
        if shape[1] > 1:
            out = out + (img[..., 1:, :] - img[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        if shape[2] > 1:
            out = out + (img[..., :, 1:] - img[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        return out

    got, want = total_variation(X, shape), tv_oracle(X)
    assert torch.allclose(got, want, rtol=1e-14, atol=0)
    (gg,), (gw,) = torch.autograd.grad((w * got).sum(), X), torch.autograd.grad((w * want).sum(), X)
    assert torch.allclose(gg, gw, rtol=1e-13, atol=1e-15)
    lo = -torch.rand(1, d, generator=g, dtype=torch.float64)
    for bounds in ((-0.5, 0.7), (lo, lo + 1)):
        value = box_penalty(X, *bounds)
        ref = ((X - bounds[1]).clamp_min(0) ** 2).sum() + ((bounds[0] - X).clamp_min(0) ** 2).sum()
        assert float(value) == pytest.approx(float(ref), rel=1e-14) and float(ref) > 0
        (gb,), (gr,) = (torch.autograd.grad(3 * v, X, create_graph=True) for v in (value, ref))
        assert torch.equal(gb, gr)
        v = torch.randn(m, d, generator=g, dtype=torch.float64)  # and the second derivative, 6 v outside the box
        (hb,), (hr,) = torch.autograd.grad((gb * v).sum(), X), torch.autograd.grad((gr * v).sum(), X)
        assert torch.equal(hb, hr) and hb.abs().max() > 0
    # torch.func transforms go through both (the attacks' tests take the prior's gradient with torch.func.grad)
    assert torch.allclose(torch.func.grad(lambda Z: (w * total_variation(Z, shape)).sum())(X.detach()), gw)


def test_outer_losses_value_and_grad_in_one_pass_match_value_and_grad():
    """Every outer loss's fused (F(s), u) against its own value, and u against autograd of that value (float64),
    weighted per tensor and summed over copies too; grad is u alone."""
    from trainrecon.objective.weighted_sum import DeadZoneDistance, ProjectedDistance, SummedCopies, TensorWeighted

    g = torch.Generator().manual_seed(3)

    def tensors():
        return [torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)]

    target, s, d = tensors(), tensors(), tensors()
    d[1] = torch.zeros(3, dtype=torch.float64)  # a tensor with nothing to remove
    losses = [SquaredDistance(target), DeadZoneDistance(target, [0.5, 0.2]), ProjectedDistance(target, d)]
    losses += [TensorWeighted(inner, [1.0, 0.3], target) for inner in losses]
    cases = [(F, s) for F in losses] + [(SummedCopies(losses[0], 2), s + tensors())]
    for F, point in cases:
        value, u = F.value_and_grad(point)
        assert float(value) == pytest.approx(float(F.value(point)), rel=1e-14)
        leaves = [p.clone().requires_grad_(True) for p in point]
        for a, b, c in zip(u, torch.autograd.grad(F.value(leaves), leaves), F.grad(point), strict=True):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14) and torch.equal(a, c)
