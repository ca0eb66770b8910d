"""The multipliers solved for fixed candidates (attack.solve_multipliers_every): the normal equations against a
dense float64 oracle (the weighted sum built column by column, scipy's NNLS / least squares on it), for the KKT,
multiclass and NTK forms, the plain and the projected distance; the hook in a run; what it refuses."""

import json

import numpy as np
import pytest
import scipy.optimize
import torch

from conftest import build_objective
from trainrecon import reconstruct
from trainrecon.attacks import payload_from_folder
from trainrecon.attacks.buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig
from trainrecon.attacks.haim import Haim, HaimConfig
from trainrecon.attacks.loo import LooConfig, LooNTK
from trainrecon.errors import TrainreconError
from trainrecon.attacks.simulation import SimulationConfig
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import init_params
from trainrecon.models.stationarity import gram_fit
from trainrecon.models.victim import Victim

QUIET = lambda *a: None  # noqa: E731


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts]).double()


@pytest.mark.parametrize("which", ["haim", "haim_deep", "multiclass", "loo", "loo_project"])
def test_normal_equations_match_a_dense_oracle(which):
    spec = {"haim": MLPSpec([6, 5, 4, 1], [True, False, False]), "haim_deep": MLPSpec([6, 5, 4, 1], [True, False, False]),
            "multiclass": MLPSpec([6, 5, 4, 3], [True, False, False]),
            "loo": MLPSpec([6, 5, 4, 2], [True, True, True]), "loo_project": MLPSpec([6, 5, 4, 2], [True, True, True])}[which]
    params = init_params(spec, [2.0] * spec.n_layers, seed=2)
    init = init_params(spec, [1.5] * spec.n_layers, seed=9) if which.startswith("loo") else None
    victim = Victim(spec, params, np.full((1, 1, 6), 0.3), init)
    cls, cfg = {"haim": (Haim, HaimConfig(alpha=5.0, deep_weight=1.0)),
                "haim_deep": (Haim, HaimConfig(alpha=5.0, deep_weight=0.3)), "multiclass": (BuzagloMulticlass, BuzagloMulticlassConfig(alpha=5.0)),
                "loo": (LooNTK, LooConfig(dtype="float64", remove_init="subtract")),
                "loo_project": (LooNTK, LooConfig(dtype="float64", remove_init="project"))}[which]
    obj, cands = build_objective(cls, victim, cfg, 6)
    X = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.3
    K, b, c0, k = obj.normal_equations(X)
    # the oracle: column (j, c) of G is the weighted sum with the single weight W_jc = 1, whitened by the outer loss
    # one column at a time (its unbatched map), and the target likewise
    # (haim_deep: the layers after the first, weight and bias, scaled by sqrt(0.3))
    whiten = getattr(obj.outer, "project", lambda r: list(r))
    if which == "haim_deep":
        whiten = lambda r: [ri * (1.0 if i < 2 else 0.3 ** 0.5) for i, ri in enumerate(r)]  # noqa: E731
    cols = []
    for j in range(6):
        for c in range(k):
            W = torch.zeros(6, k, dtype=torch.float64)
            W[j, c] = 1.0
            cols.append(flat(whiten(obj.feature_sum(X, W))))
    G = torch.stack(cols, 1).numpy()
    t = flat(whiten(obj.outer.target)).numpy()
    assert np.allclose(K, G.T @ G, rtol=1e-10, atol=1e-12) and np.allclose(b, G.T @ t, rtol=1e-10, atol=1e-12)
    assert np.isclose(c0, t @ t, rtol=1e-12)
    nonneg = cls.form.nonneg
    w, res2 = gram_fit(K, b, c0, nonneg)
    w_oracle = scipy.optimize.nnls(G, t)[0] if nonneg else np.linalg.lstsq(G, t, rcond=None)[0]
    assert np.allclose(G @ w, G @ w_oracle, rtol=1e-7, atol=1e-9)  # the same fit (w itself may not be unique)
    # and the objective's own stationarity term at the solved weights is the solve's residual
    F = float(obj.outer.value(obj.feature_sum(X, torch.as_tensor(w).reshape(6, k))))
    assert np.isclose(F, res2, rtol=1e-7, atol=1e-12)


def test_a_run_that_solves_its_multipliers_fits_better_at_each_solve_and_resumes(tmp_path, tiny_victim, one_thread):
    payload = payload_from_folder(tiny_victim)
    cfg = HaimConfig(iterations=40, m=8, solve_multipliers_every=10, seed=3)
    rec = reconstruct(payload, cfg, tmp_path / "run", log=QUIET)
    rep = json.loads((tmp_path / "run" / "loss.json").read_text())["multiplier_solves"]
    assert rep["every"] == 10 and [s["iteration"] for s in rep["solves"]] == [10, 20, 30] and rep["not_solved"] is None
    for s in rep["solves"]:  # the solve is the best fit for the candidates of that step: never worse than before
        assert s["relative_stationarity_after"] <= s["relative_stationarity_before"] + 1e-12
    # in memory, the same candidates; stopped after 25 iterations and resumed, the same again
    again = reconstruct(payload, cfg, log=QUIET)
    assert torch.equal(rec.x, again.x) and torch.equal(rec.multipliers, again.multipliers)
    reconstruct(payload, cfg, tmp_path / "cut", log=QUIET, stop_after=25)
    resumed = reconstruct(payload, cfg, tmp_path / "cut", resume=True, log=QUIET)
    assert torch.equal(rec.x, resumed.x)
    cut = json.loads((tmp_path / "cut" / "loss.json").read_text())["multiplier_solves"]["solves"]
    assert [s["iteration"] for s in cut] == [10, 20, 30]  # the solves before the cut came back from its checkpoint
    # off (the default): the run's summary says null, and the candidates differ from the solving run's
    plain = reconstruct(payload, HaimConfig(iterations=40, m=8, seed=3), log=QUIET)
    assert plain.stats["multiplier_solves"] is None and not torch.equal(plain.x, rec.x)


def test_what_cannot_be_solved_is_said_and_refused(tmp_path, tiny_victim, one_thread):
    payload = payload_from_folder(tiny_victim)
    rec = reconstruct(payload, HaimConfig(iterations=12, m=4, solve_multipliers_every=5, init_tolerance=0.5), log=QUIET)
    assert "not a plain quadratic" in rec.stats["multiplier_solves"]["not_solved"]
    assert rec.stats["multiplier_solves"]["solves"] == []
    with pytest.raises(TrainreconError, match="attack.solve_multipliers_every: must be >= 0"):
        HaimConfig(solve_multipliers_every=-1)
    with pytest.raises(TrainreconError, match="simulation's multipliers"):
        SimulationConfig(solve_multipliers_every=10)
