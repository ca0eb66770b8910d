import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from trainrecon.attacks.haim import HaimConfig
from trainrecon import reconstruct
from trainrecon.checkpoint import load_checkpoint, save_checkpoint
from trainrecon.errors import TrainreconError
from trainrecon.models.victim import load_victim

CLI = [sys.executable, "-c", "from trainrecon.cli import main; main()"]


def checkpoint_iteration(path) -> int:
    """The iteration a run's checkpoint holds (0 while there is none)."""
    try:
        loaded = load_checkpoint(path)
    except TrainreconError:  # caught mid-rename: never, the write is atomic; tolerated for the poll
        return 0
    return 0 if loaded is None else int(loaded[1]["iteration"])


def test_resume_is_bit_identical(tmp_path, tiny_victim):
    v = load_victim(tiny_victim)
    cfg = HaimConfig(iterations=12, checkpoint_every=4, log_every=2)
    reconstruct(v, cfg, tmp_path / "straight", log=lambda *a: None)
    r = reconstruct(v, cfg, tmp_path / "cut", log=lambda *a: None, stop_after=5)
    assert not r.finished
    reconstruct(v, cfg, tmp_path / "cut", resume=True, log=lambda *a: None)
    a = np.load(tmp_path / "straight" / "candidates.npz")
    b = np.load(tmp_path / "cut" / "candidates.npz")
    assert np.abs(a["x"] - b["x"]).max() == 0, np.abs(a["x"] - b["x"]).max()
    assert np.array_equal(a["multipliers"], b["multipliers"])
    assert a["x"].shape == (20, 1, 8, 8)  # m = 2n by default


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_candidates(tmp_path, tiny_victim):
    cfg = tmp_path / "attack.json"
    cfg.write_text(json.dumps({"iterations": 1500, "checkpoint_every": 25, "log_every": 25}))
    ref = subprocess.run(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "ref"), "--config", str(cfg)],
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "run"), "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = tmp_path / "run" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and checkpoint_iteration(ck) < 50:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_iteration(ck)
    assert killed_at < 1500, "the run finished before it could be killed"
    again = subprocess.run(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "run"), "--config", str(cfg)],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    res = subprocess.run(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "run"), "--config", str(cfg), "--resume"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a = np.load(tmp_path / "ref" / "candidates.npz")["x"]
    b = np.load(tmp_path / "run" / "candidates.npz")["x"]
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_cli_evaluate_writes_metrics_and_pictures(tmp_path, tiny_victim):
    cfg = tmp_path / "attack.json"
    cfg.write_text(json.dumps({"iterations": 50}))
    r = subprocess.run(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "rec"), "--config", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    c = str(tmp_path / "rec" / "candidates.npz")
    r = subprocess.run(CLI + ["evaluate", str(tiny_victim), c, c, "--out", str(tmp_path / "ev")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["runs_unioned"] == 2 and m["m"] == 40 and m["n"] == 10
    # the same file twice: every candidate has an exact copy, which the attacker-side count sees
    assert m["collapse"]["m"] == 40 and m["collapse"]["0.99"]["distinct"] <= 20 and m["collapse"]["0.99"]["largest"] >= 2
    assert f"distinct candidates: {m['collapse']['0.99']['distinct']} of 40" in r.stdout + r.stderr
    for proto in ("haim_nn", "hungarian", "loo_greedy"):
        assert m["protocols"][proto]["control"] is not None
    assert (tmp_path / "ev" / "grid.png").stat().st_size > 1000
    assert (tmp_path / "ev" / "l2_curve.png").is_file()
    assert (tmp_path / "rec" / "config.json").is_file()


def test_checkpoint_from_before_a_new_config_field_still_resumes(tmp_path, tiny_victim):
    v = load_victim(tiny_victim)
    cfg = HaimConfig(iterations=8, checkpoint_every=4, log_every=2, box_space="centred")  # the box before the field
    reconstruct(v, cfg, tmp_path / "r", log=lambda *a: None, stop_after=4)
    ck = tmp_path / "r" / "checkpoint.safetensors"
    tensors, meta = load_checkpoint(ck)
    del meta["config"]["attack"]["box_space"]  # as written by a version without the field
    save_checkpoint(ck, tensors, meta)
    assert reconstruct(v, cfg, tmp_path / "r", resume=True, log=lambda *a: None).finished
    from trainrecon.errors import TrainreconError

    reconstruct(v, cfg, tmp_path / "s", log=lambda *a: None, stop_after=4)
    changed = HaimConfig(iterations=8, checkpoint_every=4, log_every=2, box_space="pixel")
    with np.testing.assert_raises(TrainreconError):
        reconstruct(v, changed, tmp_path / "s", resume=True, log=lambda *a: None)


def test_row_adam_matches_a_loop_oracle_and_ignores_each_rows_gradient_scale():
    """RowAdam in float64 against Adam written out row by row, with one scalar second moment per row; a row whose
    gradient is 1000 times larger takes the same step (what makes it per-candidate)."""
    import torch
    from trainrecon.attacks.optim import RowAdam

    gen = torch.Generator().manual_seed(0)
    p = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    grads = [torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    opt, state, q = RowAdam(0.01, eps=1e-12), {}, p.clone()
    for g in grads:
        q = opt.step(q, g, state)
    for j in range(3):
        m, v, r = np.zeros(20), 0.0, p[j].numpy().ravel().copy()
        for t, g in enumerate(grads, 1):
            gj = g[j].numpy().ravel()
            m = 0.9 * m + 0.1 * gj
            v = 0.999 * v + 0.001 * float(np.mean(gj ** 2))
            r = r - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-12)
        assert np.abs(q[j].numpy().ravel() - r).max() < 1e-13
    scaled, state2, q2 = [g.clone() for g in grads], {}, p.clone()
    for g in scaled:
        g[1] *= 1000.0
    for g in scaled:
        q2 = opt.step(q2, g, state2)
    assert torch.allclose(q2, q, rtol=0, atol=1e-12)


def test_row_adam_attack_resumes_bit_identically_and_refuses_max_step(tmp_path, tiny_victim):
    v = load_victim(tiny_victim)
    cfg = HaimConfig(iterations=12, checkpoint_every=4, log_every=2)  # the default x step: row_adam, lr 0.01
    reconstruct(v, cfg, tmp_path / "straight", log=lambda *a: None)
    reconstruct(v, cfg, tmp_path / "cut", log=lambda *a: None, stop_after=5)
    reconstruct(v, cfg, tmp_path / "cut", resume=True, log=lambda *a: None)
    a = np.load(tmp_path / "straight" / "candidates.npz")
    b = np.load(tmp_path / "cut" / "candidates.npz")
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["multipliers"], b["multipliers"])
    plain = tmp_path / "sgd"
    reconstruct(v, HaimConfig(iterations=12, lr=0.01, x_optimiser="sgd"), plain, log=lambda *a: None)
    assert not np.array_equal(np.load(plain / "candidates.npz")["x"], a["x"])  # the option reaches the loop
    with pytest.raises(TrainreconError, match="attack.max_step"):
        HaimConfig(x_optimiser="row_adam", max_step=0.1)


def test_alpha_continuation_grows_geometrically_to_alpha(tiny_victim):
    from trainrecon.attacks.haim import Haim
    from trainrecon.attacks.payload import Payload

    payload = Payload.of(load_victim(tiny_victim), disclose_n=False)
    method = Haim(payload, HaimConfig(alpha=30.0, alpha_start=3.0, alpha_ramp=100))
    sharp = [method.surrogate(it).sharpness for it in (0, 50, 100, 5000)]
    assert np.allclose(sharp, [3.0, np.sqrt(90.0), 30.0, 30.0], rtol=1e-12)
    assert Haim(payload, HaimConfig(alpha=30.0)).surrogate(0).sharpness == 30.0
    with pytest.raises(TrainreconError, match="attack.alpha_start"):
        HaimConfig(alpha_start=-1.0)


def test_auto_dtype_runs_large_haim_iterations_in_float32_and_keeps_an_explicit_float64():
    """dtype 'auto' (Haim's default): float32 where m * n_params reaches FP32_WORK, float64 below it, for the
    multiclass attack (not measured) and on power victims; an explicit dtype is kept, adapt false included."""
    import torch
    from trainrecon.attacks.buzaglo import BuzagloMulticlassConfig
    from trainrecon.attacks.haim import FP32_WORK
    from trainrecon.attacks.payload import Payload
    from trainrecon.attacks.plan import plan_run
    from trainrecon.models.mlp import MLPSpec

    def payload(widths, n, activation="relu", degree=0):
        spec = MLPSpec(widths=widths, bias=[False] * (len(widths) - 1), activation=activation, degree=degree,
                       input_shape=[1, 1, widths[0]])
        params = [torch.randn(o, i, dtype=torch.float64) / i ** 0.5 for i, o in zip(widths, widths[1:])]
        return Payload(spec, params, np.zeros(widths[0]), n_train=n)

    big, small = payload([784, 500, 500, 1], 100), payload([64, 16, 16, 1], 10)
    assert 200 * big.spec.n_params() >= FP32_WORK > 20 * small.spec.n_params()
    run = plan_run(big, HaimConfig())
    assert run.cfg.dtype == "float32" and "float32" in run.adapted["reason"]
    assert plan_run(small, HaimConfig()).cfg.dtype == "float64"
    assert plan_run(big, HaimConfig(m=4)).cfg.dtype == "float64"  # m * n_params decides, not the width alone
    assert plan_run(big, HaimConfig(dtype="float64")).cfg.dtype == "float64"
    assert plan_run(big, HaimConfig(adapt=False)).cfg.dtype == "float32"
    assert plan_run(big, HaimConfig(adapt=False, dtype="float64")).cfg.dtype == "float64"
    multi = payload([784, 500, 500, 10], 100)
    assert plan_run(multi, BuzagloMulticlassConfig()).cfg.dtype == "float64"
    power = payload([784, 500, 1], 100, activation="power", degree=3)
    assert plan_run(power, HaimConfig()).cfg.dtype == "float64"


def test_haims_default_tv_prior_is_off_for_vector_inputs_and_under_splitting_and_kept_where_set():
    """Haim's default tv (0.1) stays on an image victim; where the inputs are not images (H or W of 1), and where
    sample splitting is on, a tv left at its default becomes 0 with its reason; a tv the user set is kept, and
    methods whose default is 0 adapt nothing."""
    import torch
    from trainrecon.attacks.buzaglo import BuzagloMulticlassConfig
    from trainrecon.attacks.method import TV_REASON
    from trainrecon.attacks.payload import Payload
    from trainrecon.attacks.plan import plan_run
    from trainrecon.models.mlp import MLPSpec
    from trainrecon.refinement.settings import SplitConfig

    def payload(shape, outputs=1):
        d = int(np.prod(shape))
        spec = MLPSpec(widths=[d, 8, outputs], bias=[False, False], input_shape=list(shape))
        params = [torch.randn(8, d, dtype=torch.float64), torch.randn(outputs, 8, dtype=torch.float64)]
        return Payload(spec, params, np.zeros(d), n_train=4)

    image, vector = payload([1, 4, 4]), payload([1, 1, 16])
    assert HaimConfig().tv == 0.1
    assert plan_run(image, HaimConfig()).cfg.tv == 0.1
    run = plan_run(vector, HaimConfig())
    assert run.cfg.tv == 0.0 and run.adapted["fields"]["tv"] == 0.0 and TV_REASON["vector"] in run.adapted["reason"]
    split = plan_run(image, HaimConfig(split=SplitConfig(enabled=True)))
    assert split.cfg.tv == 0.0 and TV_REASON["split"] in split.adapted["reason"]
    assert plan_run(vector, HaimConfig(tv=0.3)).cfg.tv == 0.3
    assert plan_run(image, HaimConfig(tv=0.1, split=SplitConfig(enabled=True))).cfg.tv == 0.0  # equal to the default
    assert plan_run(vector, HaimConfig(adapt=False)).cfg.tv == 0.1
    assert "tv" not in (plan_run(payload([1, 1, 16], 2), BuzagloMulticlassConfig()).adapted or {}).get("fields", {})


def test_haims_default_deep_weight_where_it_applies_and_where_it_is_refused():
    """Haim counts the layers after the first a tenth by default (0.1 on an image victim, planned as given), power
    victims keep every layer alike with the power reason, a run recorded before the field reads back as 1, a
    weight <= 0 is refused in one line, and so is any weight but 1 on the simulation (a cosine match)."""
    import torch
    from trainrecon.attacks.haim import POWER_REASON
    from trainrecon.attacks.payload import Payload
    from trainrecon.attacks.plan import plan_run
    from trainrecon.attacks.simulation import SimulationConfig
    from trainrecon.config import from_dict, to_dict
    from trainrecon.models.mlp import MLPSpec
    from trainrecon.provenance import recorded_fields

    assert HaimConfig().deep_weight == 0.1
    spec = MLPSpec(widths=[16, 8, 1], bias=[True, False], input_shape=[1, 4, 4])
    image = Payload(spec, [torch.randn(8, 16, dtype=torch.float64), torch.randn(8, dtype=torch.float64),
                           torch.randn(1, 8, dtype=torch.float64)], np.zeros(16), n_train=4)
    assert plan_run(image, HaimConfig()).cfg.deep_weight == 0.1
    power = MLPSpec(widths=[5, 6, 1], bias=[False, False], activation="power", degree=3, input_shape=[1, 1, 5])
    run = plan_run(Payload(power, [torch.randn(6, 5, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)],
                           np.zeros(5), n_train=4), HaimConfig())
    assert run.cfg.deep_weight == 1.0 and run.adapted["fields"]["deep_weight"] == 1.0
    assert POWER_REASON in run.adapted["reason"]
    old = {k: v for k, v in to_dict(HaimConfig()).items() if k != "deep_weight"}
    assert from_dict(HaimConfig, recorded_fields(HaimConfig, old), "config.json: attack").deep_weight == 1.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(TrainreconError, match="attack.deep_weight"):
            HaimConfig(deep_weight=bad)
    with pytest.raises(TrainreconError, match="attack.deep_weight: .* cosine"):
        SimulationConfig(deep_weight=0.1)


def test_a_run_recorded_before_the_row_adam_default_reads_back_as_the_sgd_it_ran():
    """A config.json written when Haim's x step was SGD at lr 1 lacks x_optimiser; read back (the truth-start
    control replays it) it is SGD at lr 1, not the per-candidate Adam refusing lr 1."""
    from trainrecon.config import from_dict, to_dict
    from trainrecon.provenance import recorded_fields

    old = {k: v for k, v in to_dict(HaimConfig(x_optimiser="sgd", lr=1.0)).items() if k != "x_optimiser"}
    cfg = from_dict(HaimConfig, recorded_fields(HaimConfig, old), "config.json: attack")
    assert cfg.x_optimiser == "sgd" and cfg.lr == 1.0
    with pytest.raises(TrainreconError, match="attack.lr"):
        from_dict(HaimConfig, old, "config.json: attack")
    now = to_dict(HaimConfig())
    assert from_dict(HaimConfig, recorded_fields(HaimConfig, now), "x") == HaimConfig()


def test_lr_final_scales_each_step_by_a_cosine_like_a_loop_oracle(tiny_victim):
    """attack.lr_final = f: iteration k of N steps by lr (f + (1 - f) (1 + cos(pi k / N)) / 2) times the gradient
    (SGD without momentum in float64, candidates and multipliers), against the same descent written out here;
    under a wall-clock budget the progress is the budget's share spent (the budget hook says)."""
    import math

    import torch
    from trainrecon.attacks.plan import plan_run

    v = load_victim(tiny_victim)
    f, N = 0.1, 5
    cfg = HaimConfig(iterations=N, x_optimiser="sgd", lr=0.5, lr_lambda=0.1, momentum=0.0, lr_final=f,
                     dtype="float64", normalise="none", adapt=False, m=6, log_every=1)
    rec = reconstruct(v, cfg, log=lambda *a: None)
    plan = plan_run(v, cfg)
    attack = plan.method(plan.attacked.to("cpu", torch.float64), plan.cfg)
    cands = attack.init(plan.m)
    for k in range(N):
        _, gx, gm = attack.objective(k, cands).value_and_grad(cands.x, cands.multipliers)
        c = f + (1 - f) * 0.5 * (1 + math.cos(math.pi * k / N))
        cands.x, cands.multipliers = cands.x - 0.5 * c * gx, cands.multipliers - 0.1 * c * gm
    assert np.allclose(rec.x.reshape(6, -1).numpy(), cands.x.detach().numpy(), rtol=0, atol=1e-12)
    assert np.allclose(rec.multipliers.numpy(), cands.multipliers.detach().numpy(), rtol=0, atol=1e-12)
    constant = reconstruct(v, HaimConfig(**{**cfg.__dict__, "lr_final": 1.0}), log=lambda *a: None)
    assert not np.allclose(constant.x.numpy(), rec.x.numpy(), atol=1e-6)  # the schedule reaches the loop
    with pytest.raises(TrainreconError, match="attack.lr_final"):
        HaimConfig(lr_final=0.0)
    # lr_decay_start = s: the factor is 1 until the share s of the run, then the cosine over the rest
    late = reconstruct(v, HaimConfig(**{**cfg.__dict__, "lr_decay_start": 0.6}), log=lambda *a: None)
    cands = attack.init(plan.m)
    for k in range(N):
        _, gx, gm = attack.objective(k, cands).value_and_grad(cands.x, cands.multipliers)
        q = min(max((k / N - 0.6) / 0.4, 0.0), 1.0)
        c = f + (1 - f) * 0.5 * (1 + math.cos(math.pi * q))
        cands.x, cands.multipliers = cands.x - 0.5 * c * gx, cands.multipliers - 0.1 * c * gm
    assert np.allclose(late.x.reshape(6, -1).numpy(), cands.x.detach().numpy(), rtol=0, atol=1e-12)
    assert not np.allclose(late.x.numpy(), rec.x.numpy(), atol=1e-6)
    with pytest.raises(TrainreconError, match="attack.lr_decay_start"):
        HaimConfig(lr_decay_start=1.0)
    from trainrecon.hooks.budget import TimeBudget
    from trainrecon.hooks.interface import Step
    half = Step(3, 1000, 1000, None, None, {}, lambda: 5.0)  # 5 of a 10-second budget, 3 of 1000 iterations
    assert TimeBudget(10.0).spent(half) == 0.5  # the schedule's progress under a budget is its share spent


def test_autocast_bfloat16_runs_the_networks_products_in_bfloat16_and_nothing_else(tiny_victim, tmp_path):
    """attack.autocast = "bfloat16": the passes through the network under torch.autocast, the rest in float32.
    The value and both gradients agree with float32's to bfloat16's rounding (not exactly: the products did run
    in bfloat16); the residual stays float32 (a value computed from s in float32 equals the objective's to
    float32's rounding of the same s); a float64 run and the training simulation refuse it in one line; a run
    records it and ends with finite candidates."""
    import dataclasses
    import math

    import torch
    from trainrecon.attacks.plan import plan_run

    v = load_victim(tiny_victim)
    cfg = HaimConfig(dtype="float32", normalise="none", adapt=False, m=8, autocast="none")
    plan = plan_run(v, cfg)
    attack = plan.method(plan.attacked.to("cpu", torch.float32), plan.cfg)
    cands = attack.init(plan.m)
    full = attack.objective(0, cands)
    half = dataclasses.replace(full, autocast=torch.bfloat16)
    (v32, gx32, gm32), (v16, gx16, gm16) = (o.value_and_grad(cands.x, cands.multipliers) for o in (full, half))
    assert gx16.dtype == gm16.dtype == torch.float32
    assert math.isclose(v16["total"], v32["total"], rel_tol=2e-2)
    for a, b in ((gx16, gx32), (gm16, gm32)):
        assert float((a - b).norm() / b.norm()) < 5e-2
    assert not torch.equal(gx16, gx32)  # the products did run in bfloat16
    s = half.feature_sum(cands.x, half.weights(cands.multipliers))
    assert all(t.dtype == torch.float32 for t in s)
    assert math.isclose(float(half.outer.value_and_grad(s)[0]), v16["stationarity"], rel_tol=1e-5)
    rec = reconstruct(v, HaimConfig(iterations=5, dtype="float32", autocast="bfloat16"), tmp_path / "run",
                      log=lambda *a: None)
    assert np.isfinite(rec.x.numpy()).all()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["attack"]["autocast"] == "bfloat16"
    with pytest.raises(TrainreconError, match="^attack.autocast: .*float64"):
        plan_run(v, HaimConfig(dtype="float64", autocast="bfloat16"))


@pytest.mark.parametrize("fast", [True, False])
def test_autocast_auto_is_bfloat16_for_a_float32_run_where_the_device_makes_it_fast(tiny_victim, monkeypatch, fast):
    """autocast = "auto": bfloat16 for a float32 run where runtime.fast_bfloat16 says the device's bfloat16
    products are at least twice as fast (recorded with its reason in config.json["adapted"]), "none" elsewhere and
    for a float64 run (with adapt false too)."""
    from trainrecon import runtime
    from trainrecon.attacks import method as method_module
    from trainrecon.attacks.plan import plan_run

    assert isinstance(runtime.fast_bfloat16("cpu"), bool)  # this machine's answer, measured
    monkeypatch.setattr(method_module, "fast_bfloat16", lambda device: fast)
    v = load_victim(tiny_victim)
    for adapt in (True, False):
        plan = plan_run(v, HaimConfig(dtype="float32", autocast="auto", adapt=adapt))
        assert plan.cfg.autocast == ("bfloat16" if fast else "none")
        recorded = (plan.adapted or {}).get("fields", {})
        assert recorded.get("autocast") == ("bfloat16" if fast and adapt else None)
        if fast and adapt:
            assert "bfloat16 matrix products" in plan.adapted["reason"]
        assert plan_run(v, HaimConfig(dtype="float64", autocast="auto", adapt=adapt)).cfg.autocast == "none"
