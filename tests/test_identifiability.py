"""Identifiability: symmetric-tensor algebra, exact KKT points, the certificate and its refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainrecon.errors import TrainreconError
from trainrecon.identifiability import (IDENTIFIED, NOT_CERTIFIED, IdentifyConfig, PolyDataConfig, PolyNet,
                                        PolyTrainConfig, build_exact_kkt, compare_to_truth, identify, make_poly_data,
                                        train_polynomial, z_eigenpairs)
from trainrecon.identifiability.counterexamples import alpha2_counterexample
from trainrecon.identifiability.jennrich import jennrich
from trainrecon.training.polynomial import poly_kkt_residual
from trainrecon.identifiability.symmetric import (contract, from_dense, gradient_design, monomials, rank_one_sum,
                                                  to_dense)

CLI = [sys.executable, "-c", "from trainrecon.cli import main; main()"]


def shifted_gaussian(n, d, seed):
    """Non-orthogonal data: Gaussian plus a common offset (mean pairwise |cos| about 0.3)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + 0.5, np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


@pytest.mark.parametrize("alpha,r", [(3, 4), (4, 3)])
def test_gradient_design_matches_dense_contraction(alpha, r, rng):
    T = rank_one_sum(rng.normal(size=5), rng.normal(size=(5, r)), alpha)
    E = monomials(r, alpha)
    c = from_dense(T, E)
    assert np.allclose(to_dense(c, E), T, atol=1e-13)
    Z = rng.normal(size=(6, r))
    D = gradient_design(Z, E)
    dense = np.concatenate([contract(T, z, alpha - 1) for z in Z])
    assert np.allclose(D @ c, dense, rtol=1e-12, atol=1e-12)


def test_z_eigenpairs_satisfy_the_eigen_equation(rng):
    T = rank_one_sum(np.array([1.0, -0.7, 1.3]), rng.normal(size=(3, 3)), 3)
    U, mu = z_eigenpairs(T, starts=300)
    assert len(U) >= 3
    for u, m in zip(U, mu):
        assert np.allclose(contract(T, u, 2), m * u, atol=1e-10) and abs(u @ u - 1) < 1e-12


def test_jennrich_recovers_a_tensor_built_by_hand(rng):
    V = rng.normal(size=(4, 6))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    c = np.array([1.5, -0.8, 2.0, 0.6])
    Vr, cr, res = jennrich(rank_one_sum(c, V, 3), 4)
    assert res < 1e-10
    cos = np.abs(Vr @ V.T)
    assert np.allclose(np.sort(cos.max(axis=0)), 1.0, atol=1e-10)


@pytest.mark.parametrize("alpha,n,d,seed", [(3, 4, 20, 0), (3, 5, 10, 2), (4, 3, 20, 0), (4, 4, 15, 0)])
def test_exact_kkt_points_are_identified_to_machine_precision(alpha, n, d, seed):
    V, y = shifted_gaussian(n, d, seed)
    p = build_exact_kkt(V, y, alpha, seed=seed)
    res = poly_kkt_residual(*map(torch.as_tensor, (p.a, p.W, p.X, p.y)), alpha)
    assert res["kkt_residual"] < 1e-7 and res["n_active"] == n
    assert np.allclose(p.y * (((p.X @ p.W.T) ** alpha) @ p.a), 1.0, atol=1e-12)
    rep = identify(PolyNet(p.a, p.W, alpha), IdentifyConfig(), scale_recorded=True)
    assert rep["verdict"] == IDENTIFIED, rep["reasons"]
    cmp = compare_to_truth(rep["samples"]["x"], p.X)
    assert cmp["max_rel_error"] < 1e-6
    if alpha % 2 == 0:  # even alpha: the labels are identified too
        order = np.argmax(np.abs(p.X @ rep["samples"]["x"].T), axis=1)
        assert np.array_equal(rep["samples"]["y"][order], p.y)


def test_alpha2_is_never_identified_and_has_a_second_data_set():
    demo = alpha2_counterexample()
    assert demo["kkt_residual_original"] < 1e-12 and demo["kkt_residual_alternative"] < 1e-12
    assert np.allclose(demo["margins_original"], 1) and np.allclose(demo["margins_alternative"], 1)
    assert demo["mean_one_minus_cos_between_sets"] > 0.05  # genuinely different samples
    assert demo["identify_verdict"] == NOT_CERTIFIED
    built = 0
    for seed in range(6):
        V, y = shifted_gaussian(3, 8, seed)
        try:
            p = build_exact_kkt(V, y, 2, seed=seed)
        except TrainreconError:  # no exact KKT point with every sample active for these directions
            continue
        built += 1
        assert identify(PolyNet(p.a, p.W, 2))["verdict"] == NOT_CERTIFIED
    assert built >= 2


def test_collapsed_trained_network_is_not_certified():
    X, y = make_poly_data(PolyDataConfig("sphere", 6, 10, 0))
    a, W, summary = train_polynomial(PolyTrainConfig(alpha=3, width=30, steps=1500), torch.as_tensor(X),
                                     torch.as_tensor(y), log=lambda *a: None)
    rep = identify(PolyNet(a.numpy(), W.numpy(), 3), IdentifyConfig())
    assert rep["verdict"] == NOT_CERTIFIED and rep["reasons"]


def test_error_grows_with_the_kkt_residual():
    V, y = shifted_gaussian(4, 12, 0)
    p = build_exact_kkt(V, y, 3)
    rng = np.random.default_rng(1)
    noise_W, noise_a = rng.normal(size=p.W.shape), rng.normal(size=p.a.shape)
    errors, residuals = [], []
    for eps in (1e-9, 1e-6, 1e-3):
        W = p.W + eps * np.linalg.norm(p.W) * noise_W / np.linalg.norm(noise_W)
        a = p.a + eps * np.linalg.norm(p.a) * noise_a / np.linalg.norm(noise_a)
        rep = identify(PolyNet(a, W, 3), IdentifyConfig(polish=False), scale_recorded=True)
        residuals.append(poly_kkt_residual(*map(torch.as_tensor, (a, W, p.X, p.y)), 3)["kkt_residual"])
        errors.append(compare_to_truth(rep["samples"]["x"], p.X)["max_rel_error"])
        if eps >= 1e-3:
            assert rep["verdict"] == NOT_CERTIFIED
    assert residuals[0] < residuals[1] < residuals[2]
    assert errors[0] < errors[1] < errors[2] and errors[2] < 0.5


@pytest.mark.slow
def test_cli_identify_on_an_exact_victim(tmp_path):
    r = subprocess.run(CLI + ["exact-kkt", str(tmp_path / "v"), "--alpha", "3", "--n", "4", "--d", "20"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(CLI + ["identify", str(tmp_path / "v"), "--out", str(tmp_path / "id")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "id" / "report.json").read_text())
    assert rep["verdict"] == IDENTIFIED and rep["score"]["recovered"]["max_rel_error"] < 1e-6
    assert (tmp_path / "id" / "identify.png").stat().st_size > 1000
    assert "x" in np.load(tmp_path / "id" / "samples.npz")


def test_cli_identify_refuses_a_relu_victim(tmp_path, tiny_victim):
    r = subprocess.run(CLI + ["identify", str(tiny_victim), "--out", str(tmp_path / "id")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: identify: needs a two-layer polynomial victim")


def test_too_few_neuron_directions_never_certified():
    """An exact KKT point with one neuron for two samples: the one-dimensional system is 'full rank', yet the
    second sample lies outside the span of the neurons; identify must refuse."""
    V, y = shifted_gaussian(2, 10, 0)
    p = build_exact_kkt(V, y, 3)
    assert len(p.a) == 1
    rep = identify(PolyNet(p.a, p.W, 3), IdentifyConfig(), scale_recorded=True)
    assert rep["system_rank"] == rep["system_unknowns"]
    assert rep["verdict"] == NOT_CERTIFIED and "outside the span" in rep["reasons"][-1]
