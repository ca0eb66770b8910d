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
CFG = HaimConfig(alpha=5.0, lambda_min=0.3, box_space="centred", tv=0.0)  # the oracle's box and prior


def haim_objective(spec, params, cfg, m):
    return build_objective(Haim, Victim(spec, params), cfg, m)[0]


def dense_loss(theta_flat, X, lam, target_flat, m):
    """Oracle: per-sample gradients g_j formed explicitly, s = (1/m) sum lam_j y_j g_j."""
    y = haim_labels(m, torch.float64, "cpu")
    sur = Surrogate("modified_relu", CFG.alpha)

    def phi_j(th, xj):
        return forward(SPEC, unflatten(SPEC, th), xj[None], sur)[0, 0]

    G = torch.stack([jacrev(phi_j)(theta_flat, X[j]) for j in range(m)])  # (m, P)
    s = ((lam * y / m)[:, None] * G).sum(0)
    box = ((X - 1).clamp_min(0) ** 2).sum() + ((-1 - X).clamp_min(0) ** 2).sum()
    return ((target_flat - s) ** 2).sum() + box + 5 * ((CFG.lambda_min - lam).clamp_min(0) ** 2).sum()


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
