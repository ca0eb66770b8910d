"""Sample splitting: splitting matrices against a dense float64 oracle for every method, batched Lanczos
against eigh, the second-order prediction, the refinement round and the runner."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.func import hessian, jacrev

from conftest import build_objective
from trainrecon import reconstruct
from trainrecon.attacks import payload_from_folder
from trainrecon.attacks.buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig, BuzagloRegression, BuzagloRegressionConfig
from trainrecon.attacks.haim import Haim, HaimConfig
from trainrecon.attacks.loo import LooConfig, LooNTK
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import flatten, init_params
from trainrecon.models.victim import Victim
from trainrecon.refinement import SplitConfig
from trainrecon.refinement.splitting import (smallest_eigenpairs, split_round, splitting_eigenpairs, splitting_hvp)

D = 5
CASES = {
    "haim": (Haim, HaimConfig(alpha=4.0, box_space="centred", tv=0.0), MLPSpec([D, 6, 4, 1], [True, False, False])),
    "multiclass": (BuzagloMulticlass, BuzagloMulticlassConfig(alpha=4.0, box_space="centred"), MLPSpec([D, 6, 4, 3], [True, False, False])),
    "regression": (BuzagloRegression, BuzagloRegressionConfig(alpha=4.0, box_space="centred"), MLPSpec([D, 6, 4, 1], [True, False, False])),
    "loo": (LooNTK, LooConfig(dtype="float64"), MLPSpec([D, 6, 4, 2], [True, True, True])),
}


def problem(which, m=6, seed=0):
    cls, cfg, spec = CASES[which]
    params = init_params(spec, [2.0] * spec.n_layers, seed=seed)
    init = init_params(spec, [1.5] * spec.n_layers, seed=seed + 5) if which == "loo" else None
    obj, cands = build_objective(cls, Victim(spec, params, np.full((1, 1, D), 0.3), init), cfg, m, it=20000)
    g = torch.Generator().manual_seed(seed + 1)
    cands.x = torch.randn(m, D, generator=g, dtype=torch.float64) * 0.8
    cands.multipliers = cands.multipliers + 0.3
    return obj, cands


def dense_splitting_matrices(obj, cands):
    """S_j = Hess_x sum_k w_jk <u, d phi_k / d theta (x)>, with the parameter Jacobian formed explicitly."""
    X, M = cands.x, cands.multipliers
    W = obj.weights(M).detach()
    u = torch.cat([t.flatten() for t in obj.u(X, M)])
    flat = flatten(obj.theta)
    spec_like = obj.theta

    def h(x, j):
        def phi_flat(th):
            ps = [t.reshape(p.shape) for t, p in zip(torch.split(th, [p.numel() for p in spec_like]), spec_like)]
            lab = None if cands.labels is None else cands.labels[j : j + 1]
            return obj.phi(ps, x[None], lab)[0]

        J = jacrev(phi_flat)(flat)  # (K, P)
        return (W[j] * (J @ u)).sum()

    return torch.stack([hessian(h)(X[j], j) for j in range(cands.m)])


@pytest.mark.parametrize("which", sorted(CASES))
def test_splitting_hvp_and_lanczos_match_dense_oracle(which):
    obj, cands = problem(which)
    S = dense_splitting_matrices(obj, cands)
    assert torch.allclose(S, S.transpose(1, 2), atol=1e-10)
    V = torch.randn(cands.m, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    W = obj.weights(cands.multipliers)
    u = obj.u(cands.x, cands.multipliers)
    got = splitting_hvp(obj, cands.x, W, u, V, cands.labels)
    assert torch.allclose(got, torch.einsum("mij,mj->mi", S, V), rtol=1e-9, atol=1e-12)
    chunked = splitting_hvp(dataclasses.replace(obj, chunk_size=4), cands.x, W, u, V, cands.labels)
    assert torch.allclose(chunked, got, rtol=1e-12, atol=1e-14)
    mu, v, resid = splitting_eigenpairs(obj, cands, steps=D)
    ev = torch.linalg.eigvalsh(S)
    assert torch.allclose(mu, ev[:, 0], rtol=1e-8, atol=1e-10), (mu, ev[:, 0])
    assert resid.max() < 1e-8 * max(1.0, float(ev.abs().max()))
    assert torch.allclose(torch.einsum("mij,mj->mi", S, v), mu[:, None] * v, atol=1e-8)


def test_batched_lanczos_on_known_blocks():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(7, 30, 30, generator=g, dtype=torch.float64)
    A = A + A.transpose(1, 2)
    mu, v, resid = smallest_eigenpairs(lambda V: torch.einsum("mij,mj->mi", A, V), 7, 30, 30, A)
    assert torch.allclose(mu, torch.linalg.eigvalsh(A)[:, 0], atol=1e-9) and resid.max() < 1e-7


def split_loss_change(obj, cands, j, v, eps):
    """Exact change of F(s) when candidate j splits into (x +- eps v, w/2)."""
    s0 = obj.feature_sum(cands.x, obj.weights(cands.multipliers))
    sp = cands.split(j, v, eps)
    o = dataclasses.replace(obj, labels=sp.labels)
    s1 = o.feature_sum(sp.x, o.weights(sp.multipliers))
    return float(obj.outer.value(s1) - obj.outer.value(s0))


@pytest.mark.parametrize("which", ["loo"])
def test_second_order_prediction_matches_the_exact_change(which):
    """Where the surrogate is one smooth function (Loo's softplus), eps^2/2 v^T S v is the change to O(eps^3).
    Haim's modified ReLU has relu forward values but sigmoid derivatives, so its S is the Hessian of the
    derivative model, not of the loss: there the line search on the true loss decides alone."""
    obj, cands = problem(which, seed=2)
    mu, v, _ = splitting_eigenpairs(obj, cands, steps=D)
    j = int(torch.argmin(mu))
    eps = 1e-3
    exact = split_loss_change(obj, cands, j, v[j], eps)
    pred = 0.5 * eps**2 * float(mu[j])
    assert exact == pytest.approx(pred, rel=0.05)
    assert split_loss_change(obj, cands, j, v[j], 0.0) == pytest.approx(0.0, abs=1e-12)


def test_split_round_keeps_only_improving_splits_and_fixed_mode_keeps_m():
    obj, cands = problem("regression", m=8, seed=4)
    J0 = obj.value_and_grad(cands.x, cands.multipliers)[0]["total"]
    r = split_round(obj, cands, SplitConfig(enabled=True, per_round=3, lanczos_steps=D), 0)
    assert r.log and all({"candidate", "eigenvalue", "eps", "predicted_change", "actual_change", "accepted"} <= set(e)
                         for e in r.log)
    J1 = obj.value_and_grad(r.cands.x, r.cands.multipliers)[0]["total"]
    accepted = sum(e["accepted"] for e in r.log)
    assert r.cands.m == 8 + accepted and J1 <= J0 + 1e-12
    assert sum(e["actual_change"] for e in r.log if e["accepted"]) == pytest.approx(J1 - J0, rel=1e-6, abs=1e-12)
    fixed = split_round(obj, cands, SplitConfig(enabled=True, per_round=2, lanczos_steps=D, mode="fixed"), 0)
    assert fixed.cands.m == 8
    rand = split_round(obj, cands, SplitConfig(enabled=True, per_round=2, lanczos_steps=D, direction="random"), 0)
    assert len(rand.log) == 2 and all(e["direction"] == "random" for e in rand.log)
    eigen_dirs = {e["candidate"]: e["kink_alignment"] for e in r.log}
    assert any(abs(e["kink_alignment"] - eigen_dirs.get(e["candidate"], -1.0)) > 1e-9 for e in rand.log)
    # skip_kinks: a threshold between the alignments the eigen round logged passes over the aligned ones only
    aligns = sorted(e["kink_alignment"] for e in r.log)
    assert aligns[0] < aligns[-1]
    cut = 0.5 * (aligns[0] + aligns[-1])
    no_kinks = split_round(obj, cands, SplitConfig(enabled=True, per_round=3, lanczos_steps=D, skip_kinks=cut), 0)
    assert no_kinks.log and all(e["kink_alignment"] <= cut for e in no_kinks.log)
    assert no_kinks.unsplittable >= 1  # the aligned candidates were passed over, not tried


def smooth_haim(seed=2, m=6):
    """Haim's objective and the same objective under softplus(4 z) / 4 (the split.curvature = "softplus" model)."""
    from trainrecon.attacks.payload import Payload
    from trainrecon.models.mlp import Surrogate

    cls, cfg, spec = CASES["haim"]
    method = cls(Payload(spec, init_params(spec, [2.0] * spec.n_layers, seed=seed), np.full((1, 1, D), 0.3)), cfg)
    obj, cands = problem("haim", m=m, seed=seed)
    return obj, method.objective(20000, cands, Surrogate("softplus", cfg.alpha)), cands


def test_smooth_curvature_model_matches_dense_oracle_and_predicts_its_own_change():
    """float64: the softplus model's splitting matrices against torch.func.hessian + eigh, and, being one smooth
    function, its eps^2/2 v^T S v is its own change of F to O(eps^3) (which Haim's modified ReLU is not)."""
    _, smooth, cands = smooth_haim()
    S = dense_splitting_matrices(smooth, cands)
    mu, v, _ = splitting_eigenpairs(smooth, cands, steps=D)
    assert torch.allclose(mu, torch.linalg.eigvalsh(S)[:, 0], rtol=1e-8, atol=1e-10)
    j = int(torch.argmin(mu))
    assert float(mu[j]) < 0
    exact = split_loss_change(smooth, cands, j, v[j], 1e-3)
    assert exact == pytest.approx(0.5 * 1e-6 * float(mu[j]), rel=0.05)


def test_split_round_takes_directions_from_the_smooth_model_and_decides_on_the_true_loss():
    obj, smooth, cands = smooth_haim(m=8)
    mu, _, _ = splitting_eigenpairs(smooth, cands, steps=D)
    cfg = SplitConfig(enabled=True, per_round=3, lanczos_steps=D, curvature="softplus")
    r = split_round(obj, cands, cfg, 0, smooth)
    logged = [e["eigenvalue"] for e in r.log]
    assert logged and logged == sorted(logged)  # most negative first, from the smooth model's eigenvalues
    assert all(min(abs(float(m) - e) for m in mu) < 1e-8 * max(1.0, abs(e)) for e in logged)
    J0 = obj.value_and_grad(cands.x, cands.multipliers)[0]["total"]
    J1 = dataclasses.replace(obj, labels=r.cands.labels).value_and_grad(r.cands.x, r.cands.multipliers)[0]["total"]
    assert J1 <= J0 + 1e-12 and r.cands.m == 8 + sum(e["accepted"] for e in r.log)


@pytest.mark.slow
def test_runner_splits_resumes_bit_for_bit_and_reports_second_order(tmp_path, tiny_victim):
    split = {"enabled": True, "start": 0.5, "every": 0.25, "per_round": 2, "lanczos_steps": 8}
    cfg = HaimConfig(iterations=16, checkpoint_every=4, log_every=4, split=SplitConfig(**split))
    payload = payload_from_folder(tiny_victim)
    res = reconstruct(payload, cfg, tmp_path / "a", log=lambda *a: None).stats
    assert res["second_order"]["grad_norm"] > 0 and "min_splitting_eigenvalue" in res["second_order"]
    assert res["splitting"]["rounds"] == 2 and res["splitting"]["tried"] >= 2
    log = json.loads((tmp_path / "a" / "splits.json").read_text())["splits"]
    assert res["m"] == 20 + sum(e["accepted"] for e in log)
    reconstruct(payload, cfg, tmp_path / "b", log=lambda *a: None, stop_after=9)
    reconstruct(payload, cfg, tmp_path / "b", resume=True, log=lambda *a: None)
    a, b = np.load(tmp_path / "a" / "candidates.npz"), np.load(tmp_path / "b" / "candidates.npz")
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["parents"], b["parents"])
    plain_cfg = HaimConfig(iterations=8)
    plain = reconstruct(payload, plain_cfg, tmp_path / "c", log=lambda *a: None).stats
    assert plain["splitting"] is None and not (tmp_path / "c" / "splits.json").exists()
    # the report's eigenvalues against a dense oracle of the final candidates' splitting matrices
    from trainrecon.attacks.normalisation import normalise
    from trainrecon.objective import CandidateSet

    attacked, _ = normalise(payload, plain_cfg.normalise)
    attack = Haim(attacked.to(torch.device("cpu"), torch.float64), plain_cfg)
    saved = np.load(tmp_path / "c" / "candidates.npz")
    cands = CandidateSet(torch.from_numpy(saved["x"]).reshape(len(saved["x"]), -1), torch.from_numpy(saved["multipliers"]),
                         torch.from_numpy(saved["y"]))
    mu = torch.linalg.eigvalsh(dense_splitting_matrices(attack.objective(8, cands), cands))[:, 0]
    report = plain["second_order"]
    assert report["m"] == 20
    assert report["min_splitting_eigenvalue"] == pytest.approx(float(mu.min()), rel=1e-3, abs=1e-9)
    assert report["candidates_below_threshold"] == int((mu < -report["threshold"]).sum())


def test_stall_trigger_splits_where_the_loss_stalls_and_resumes_bit_for_bit(tmp_path, tiny_victim):
    # stall_decrease 1: every window counts as stalled, so rounds come at start, then every stall_window, capped
    # at the schedule's count (iterations 8 and 12: two rounds)
    split = {"enabled": True, "start": 0.5, "every": 0.25, "per_round": 2, "lanczos_steps": 6, "trigger": "stall",
             "stall_window": 3, "stall_decrease": 1.0}
    cfg = HaimConfig(iterations=16, checkpoint_every=4, log_every=4, split=SplitConfig(**split))
    payload = payload_from_folder(tiny_victim)
    res = reconstruct(payload, cfg, tmp_path / "a", log=lambda *a: None).stats
    log = json.loads((tmp_path / "a" / "splits.json").read_text())["splits"]
    assert sorted({e["iteration"] for e in log}) == [8, 11] and res["splitting"]["rounds"] == 2
    reconstruct(payload, cfg, tmp_path / "b", log=lambda *a: None, stop_after=10)
    reconstruct(payload, cfg, tmp_path / "b", resume=True, log=lambda *a: None)
    a, b = np.load(tmp_path / "a" / "candidates.npz"), np.load(tmp_path / "b" / "candidates.npz")
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["parents"], b["parents"])
    # the trigger itself on a given loss curve: halving every step is never a stall, a flat curve is, once the
    # window is full and start is reached; rounds are spaced by the window and capped by the schedule's count
    from trainrecon.hooks import SplittingHook, Step

    hook = SplittingHook(SplitConfig(**{**split, "stall_decrease": 0.01, "stall_window": 4, "start": 0.25,
                                        "every": 0.25}), (1, 8, 8))
    curve = [0.5 ** i for i in range(40)] + [1e-12] * 60  # 100 iterations: schedule 25, 50, 75 (3 rounds)
    due = [it + 1 for it, v in enumerate(curve)
           if hook._due(Step(it + 1, 100, 100, None, None, {"total": v})) is not None]
    assert due == [45, 49, 53]  # window curve[d-5 .. d-1] flat from d = 45 on
    with pytest.raises(Exception):
        SplitConfig(trigger="stall", stall_window=0)


@pytest.mark.slow
def test_split_then_continue_acceptance_keeps_a_round_only_if_its_look_ahead_ends_lower(tmp_path, tiny_victim):
    from trainrecon.attacks.normalisation import normalise
    from trainrecon.hooks.refinement import lookahead

    split = {"enabled": True, "start": 0.5, "every": 0.25, "per_round": 2, "lanczos_steps": 6,
             "acceptance": "continue", "continue_iterations": 3}
    cfg = HaimConfig(iterations=16, checkpoint_every=4, log_every=4, split=SplitConfig(**split))
    payload = payload_from_folder(tiny_victim)
    res = reconstruct(payload, cfg, tmp_path / "a", log=lambda *a: None).stats
    record = json.loads((tmp_path / "a" / "splits.json").read_text())
    looks, log = record["lookaheads"], record["splits"]
    assert [e["iteration"] for e in looks] == [8, 12]
    for e in looks:
        assert e["kept"] == (e["loss_with_round"] < e["loss_without_round"])
        in_round = [s for s in log if s["iteration"] == e["iteration"]]
        assert all(s["accepted"] == e["kept"] for s in in_round) and len(in_round) == 2
    assert res["m"] == 20 + sum(s["accepted"] for s in log)
    assert res["splitting"]["rounds_rolled_back"] == sum(not e["kept"] for e in looks)
    # the look-ahead is the attack's own descent, on copies: two calls agree and the input is untouched
    attacked, _ = normalise(payload, cfg.normalise)
    attack = Haim(attacked.to(torch.device("cpu"), torch.float64), cfg)
    cands = attack.init(20)
    x0 = cands.x.clone()
    a1, a2 = lookahead(attack, cands, 0, 4), lookahead(attack, cands, 0, 4)
    assert a1 == a2 and torch.equal(cands.x, x0) and not cands.state_x
    plain = reconstruct(payload, dataclasses.replace(cfg, iterations=4, split=SplitConfig()), tmp_path / "b",
                        log=lambda *a: None).stats
    # the run logs at step 4 the J it descended from at iteration 3: J after 3 updates, as the look-ahead over 3
    assert lookahead(attack, cands, 0, 3) == pytest.approx(plain["final_loss"]["total"], rel=1e-12)
    reconstruct(payload, cfg, tmp_path / "c", log=lambda *a: None, stop_after=10)
    reconstruct(payload, cfg, tmp_path / "c", resume=True, log=lambda *a: None)
    assert np.array_equal(np.load(tmp_path / "a" / "candidates.npz")["x"], np.load(tmp_path / "c" / "candidates.npz")["x"])


def _bench_splitting():
    """bench/splitting.py as a module (bench/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "splitting.py"
    spec = importlib.util.spec_from_file_location("bench_splitting", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_splitting_bench_runs_on_a_victim_folder_with_its_own_images(tmp_path, tiny_victim, tiny_task, one_thread):
    """A network trained elsewhere (a victim folder: victim/, train_images.npz, heldout_images.npz) is benched
    with the method's defaults, scored against the folder's images; a folder without its images, a bad --attack or
    --method, an --attack field the bench sets itself, and a summary of nothing are refused in one line before
    anything is written."""
    import shutil

    bench = _bench_splitting()
    src = tmp_path / "held_back"
    shutil.copytree(tiny_victim, src / "victim")
    out = tmp_path / "out"

    def refused(*args, match):
        with pytest.raises(SystemExit) as e:
            bench.main([str(src), "--out", str(out), "--iterations", "20", "--seeds", "0", *args])
        assert match in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)
        assert not out.exists()

    refused(match="train_images.npz: not found")
    np.savez(src / "train_images.npz", x=tiny_task.x_train[::-1], y=tiny_task.y_train[::-1])  # reordered
    refused(match="heldout_images.npz: not found")
    heldout = tiny_task.heldout_all[::2]  # every other held-out image: not the pool the victim's task would give
    np.savez(src / "heldout_images.npz", x=heldout, y=np.zeros(len(heldout)))
    refused("--attack", "{not json", match="--attack: not valid JSON")
    refused("--attack", '{"no_such_field": 1}', match="--attack: unknown field 'no_such_field'")
    refused("--attack", '{"tv": 0.5}', match="--attack: 'tv' is set in every arm by --protocol same")
    refused("--attack", '{"iterations": 5}', match="--attack: 'iterations' is set by the bench")
    refused("--method", "no-such-method", match="no-such-method")
    refused("--summarise", match="no finished arm")
    bench.main([str(src), "--method", "haim", "--protocol", "defaults", "--out", str(out), "--iterations", "30",
                "--seeds", "0", "--arms", "split", "base"])
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["case"], r["arm"], r["protocol"]) for r in rows] == [("held_back_haim", "split", "defaults"),
                                                                   ("held_back_haim", "base", "defaults")]
    assert all(r["controls"]["positive"] == 10 for r in rows)  # the folder's 10 training images
    metrics = json.loads((out / "held_back_haim" / "seed0" / "base" / "eval" / "metrics.json").read_text())
    assert metrics["headline"]["heldout_pool"] == len(heldout)
    assert metrics["provenance"]["inputs"]["truth"] == str((src / "train_images.npz").resolve())
    split_cfg = json.loads((out / "held_back_haim" / "seed0" / "split" / "config.json").read_text())
    base_cfg = json.loads((out / "held_back_haim" / "seed0" / "base" / "config.json").read_text())
    # as trainrecon reconstruct runs them: splitting drops the default TV prior (and says so), the plain arm keeps it
    assert split_cfg["attack"]["tv"] == 0 and "tv" in split_cfg["adapted"]["fields"]
    assert base_cfg["attack"]["tv"] == HaimConfig().tv and base_cfg["attack"]["compile"] == "none"
    same = bench.arm_config(HaimConfig(), "base", 30, 0, 1.0, 20, {}, "same")
    assert (same.tv, same.deep_weight, same.compile) == (0.0, 1.0, "none")
