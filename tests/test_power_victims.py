"""Polynomial (power-activation) victims: their homogeneity degree against the forward pass (float64), the scale
normalisation's equivariance, and the KKT attack's defaults on an exact-KKT point (no divergence, directions found)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from trainrecon import reconstruct
from trainrecon.attacks import Payload, payload_from_folder
from trainrecon.attacks.haim import POWER_DEFAULTS, POWER_SPLIT, Haim, HaimConfig
from trainrecon.config import to_dict
from trainrecon.refinement import SplitConfig
from trainrecon.attacks.normalisation import normalise
from trainrecon.identifiability.polynomial import PolyDataConfig
from trainrecon.identifiability.power_victims import make_exact_victim, poly_truth
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import forward, init_params
from trainrecon.models.victim import load_victim


def relu_payload():
    """A ReLU image victim's payload (no theta_0): the KKT attacks adapt nothing for it."""
    spec = MLPSpec([4, 3, 1], [True, False], input_shape=[1, 2, 2])
    return Payload(spec, init_params(spec, [1.0, 1.0], 0))


def power_spec(widths, alpha, bias):
    return MLPSpec(widths, bias, activation="power", degree=alpha)


@pytest.mark.parametrize("widths,alpha,bias,expected", [
    ([6, 5, 1], 3, [False, False], 4), ([6, 5, 1], 4, [True, False], 5), ([6, 5, 4, 1], 2, [False, False, False], 7),
    ([6, 5, 1], 3, [False, True], None)])
def test_power_network_degree_matches_its_forward_pass(widths, alpha, bias, expected):
    spec = power_spec(widths, alpha, bias)
    assert spec.homogeneity().degree == expected
    params = init_params(spec, [1.0] * spec.n_layers, seed=0)
    if bias[0]:
        params[1] = params[1] + 0.3  # a nonzero first-layer bias (params: W0, b0, W1, ...)
    if bias[-1]:
        params[-1] = params[-1] + 0.5  # a nonzero output bias
    x = torch.randn(7, widths[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f1 = forward(spec, params, x)
    f2 = forward(spec, [1.7 * p for p in params], x)
    if expected is None:
        assert not torch.allclose(f2, 1.7 ** 4 * f1, rtol=1e-6)
    else:
        assert torch.allclose(f2, 1.7 ** expected * f1, rtol=1e-12, atol=1e-300)


def test_normalisation_treats_a_two_layer_power_net_as_homogeneous_of_degree_alpha_plus_one(tmp_path):
    make_exact_victim(tmp_path / "p", PolyDataConfig(kind="gaussian", n=3, d=8, seed=0), 3)
    payload = payload_from_folder(tmp_path / "p")
    scaled = dataclasses.replace(payload, params=[2.5 * p for p in payload.params])
    a, rec_a = normalise(payload)
    b, rec_b = normalise(scaled)
    assert rec_a["applied"] and rec_a["degree"] == 4 and rec_b["kappa"] == pytest.approx(2.5 * rec_a["kappa"])
    assert all(torch.allclose(p, q, rtol=1e-12) for p, q in zip(a.params, b.params))
    # the KKT equation theta = sum_i lam_i y_i grad f(x_i) holds at theta / kappa with lam kappa^(L - 2)
    v = load_victim(tmp_path / "p")
    X, y = poly_truth(v)
    from trainrecon.identifiability.exact_kkt import build_exact_kkt
    from trainrecon.identifiability.polynomial import make_poly_data

    V, yy = make_poly_data(PolyDataConfig(kind="gaussian", n=3, d=8, seed=0))
    lam = build_exact_kkt(V, yy, 3, seed=0).lam
    spec = payload.spec
    xs = torch.as_tensor(X)

    def residual(params, lam_):
        ps = [p.clone().requires_grad_(True) for p in params]
        out = (torch.as_tensor(lam_) * torch.as_tensor(y) * forward(spec, ps, xs).reshape(-1)).sum()
        g = torch.autograd.grad(out, ps)
        return sum(float(((p - gi) ** 2).sum()) for p, gi in zip(params, g)) ** 0.5

    kappa = rec_a["kappa"]
    assert residual(payload.params, lam) < 1e-8
    assert residual(a.params, lam * kappa ** (rec_a["degree"] - 2)) < 1e-8
    assert rec_a["multipliers_to_victim_scale"] == pytest.approx(kappa ** (2 - rec_a["degree"]))


def test_kkt_attack_defaults_do_not_diverge_on_an_exact_kkt_victim(tmp_path):
    make_exact_victim(tmp_path / "p", PolyDataConfig(kind="gaussian", n=4, d=20, seed=0), 3)
    payload = payload_from_folder(tmp_path / "p")
    res = reconstruct(payload, HaimConfig(m=8, iterations=1500, auto_split=False), tmp_path / "r", log=lambda *a: None)
    assert res.finished and res.m == 8
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["adapted"]["fields"] == {**POWER_DEFAULTS, "init_scale": pytest.approx(1 / 20 ** 0.5),
                                          "tv": 0.0}  # not images: no total-variation prior
    assert saved["attack"]["lr"] == POWER_DEFAULTS["lr"] and saved["normalisation"]["degree"] == 4
    hist = json.loads((tmp_path / "r" / "loss.json").read_text())["history"]
    assert all(np.isfinite(h["total"]) for h in hist) and hist[-1]["total"] < 1e-2 * hist[0]["total"]
    # every training direction is found (the KKT term fixes a candidate only up to x -> c x, lam -> lam / c^alpha)
    X, _ = poly_truth(load_victim(tmp_path / "p"))
    c = np.load(tmp_path / "r" / "candidates.npz")["x"].reshape(8, -1)
    cos = np.abs((c / np.linalg.norm(c, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T)
    best = cos.max(0)  # at 1500 iterations: 1.0, 0.89, 0.95, 0.999 (the step bound makes the descent slow, not wrong)
    assert best.min() > 0.85 and (best > 0.99).sum() >= 2
    # a field the user set is kept; image victims are not adapted
    kept, rec = Haim.adapt(HaimConfig(lr=0.5), payload)
    assert kept.lr == 0.5 and rec["fields"]["lr_lambda"] == POWER_DEFAULTS["lr_lambda"] and "lr" not in rec["fields"]
    assert Haim.adapt(HaimConfig(), relu_payload())[1] is None


@pytest.mark.slow
def test_power_victims_split_by_default_and_say_why(tmp_path):
    """On a power victim the default split config becomes POWER_SPLIT (rounds at stalls, m doubling up to 4 m0),
    recorded with its reason; auto_split = false (the CLI's --no-split) and a user's own split config are kept;
    ReLU victims never split by default."""
    make_exact_victim(tmp_path / "p", PolyDataConfig(kind="gaussian", n=8, d=20, seed=0), 3)
    payload = payload_from_folder(tmp_path / "p")
    split = reconstruct(payload, HaimConfig(m=2, iterations=2000), log=lambda *a: None)
    plain = reconstruct(payload, HaimConfig(m=2, iterations=2000, auto_split=False), log=lambda *a: None)
    assert split.config["adapted"]["fields"]["split"] == to_dict(SplitConfig(**POWER_SPLIT))
    assert "splitting on by default" in split.config["adapted"]["split"]
    assert split.stats["splitting"]["accepted"] >= 1 and 2 < split.m <= 8
    assert plain.m == 2 and plain.stats["splitting"] is None and "split" not in (plain.config["adapted"] or {})
    assert split.stats["final_loss"]["total"] < plain.stats["final_loss"]["total"]
    own, rec = Haim.adapt(HaimConfig(split=SplitConfig(enabled=True, per_round=1)), payload)
    assert own.split.per_round == 1 and own.split.trigger == "schedule" and "split" not in rec["fields"]
    assert not Haim.adapt(HaimConfig(), relu_payload())[0].split.enabled
