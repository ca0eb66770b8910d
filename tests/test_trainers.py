"""Multiclass, weight-decay regression and NTK victims; the Adam update; the CLI path of each method."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainrecon.attacks.optim import Adam
from trainrecon.data.tasks import TaskConfig, build_task
from trainrecon.models.victim import load_victim
from trainrecon.training import (NTKTrainConfig, RegressionTrainConfig, TrainConfig, margins, train_kkt, train_ntk,
                                 train_regression)

CLI = [sys.executable, "-c", "from trainrecon.cli import main; main()"]
QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def multiclass_data():
    d = build_task(TaskConfig(dataset="digits", task="multiclass", n_per_class=2))
    return torch.as_tensor(d.centred(d.x_train)), torch.as_tensor(d.y_train)


def test_multiclass_trainer_reaches_unit_margin_and_lowers_the_residual(multiclass_data):
    x, y = multiclass_data
    cfg = TrainConfig(hidden=[16, 16], margin_schedule=[10.0, 100.0], lbfgs_iters=60)
    spec, params, summary = train_kkt(cfg, x, y, n_classes=10, **QUIET)
    assert spec.n_outputs == 10
    assert summary["final"]["train_accuracy"] == 1.0
    q = margins(spec, params, x.reshape(len(x), -1).double(), y)
    assert abs(float(q.min()) - 1.0) < 1e-9
    hist = summary["history"]
    assert hist[-1]["kkt_residual"] < 0.9 * hist[0]["kkt_residual"]


def test_regression_trainer_reaches_a_weight_decay_stationary_point_and_resumes(tmp_path, tiny_task):
    x = torch.as_tensor(tiny_task.centred(tiny_task.x_train))
    y = torch.as_tensor(tiny_task.y_train, dtype=torch.float64)
    cfg = RegressionTrainConfig(hidden=[16, 16], activation="gelu", weight_decay=1e-2, max_iters=400, lbfgs_chunk=100)
    spec, params, summary = train_regression(cfg, x, y, checkpoint_dir=tmp_path / "a", **QUIET)
    # smooth activation: the stationarity theta = sum_i lambda_i grad f(x_i) holds to optimiser precision
    assert summary["final"]["kkt_residual"] < 1e-4
    assert summary["history"][-1]["relative_gradient"] < 1e-4
    cut = RegressionTrainConfig(**{**cfg.__dict__})
    _, p_cut, _ = train_regression(cut, x, y, checkpoint_dir=tmp_path / "b", **QUIET)
    _, p_again, _ = train_regression(cut, x, y, checkpoint_dir=tmp_path / "b", **QUIET)  # resumes at the end
    assert all(torch.equal(a, b) for a, b in zip(p_cut, p_again))


def test_the_polynomial_trainer_is_registered_resumes_bit_for_bit_and_refuses_a_multiclass_task(tmp_path, tiny_task,
                                                                                                 monkeypatch):
    """``train --trainer polynomial`` is the identifiability trainer (train_polynomial) behind the common trainer
    interface: the same network as the direct call, a victim folder whose degree is its alpha; a run interrupted
    after its third checkpoint resumes and ends with the same weights, bit for bit; a multiclass task is refused in
    one line before anything is written."""
    import trainrecon.training.polynomial as poly
    from trainrecon.errors import TrainreconError
    from trainrecon.pipeline import train_victim
    from trainrecon.training import TRAINERS, PolyTrainConfig, train_polynomial

    cfg = PolyTrainConfig(alpha=3, width=12, steps=200)
    assert TRAINERS.for_config(cfg)[0] == "polynomial"
    x = torch.as_tensor(tiny_task.centred(tiny_task.x_train))
    y = torch.as_tensor(tiny_task.y_train, dtype=torch.float64)
    a, W, summary = train_polynomial(cfg, x.reshape(len(x), -1), y, **QUIET)
    assert summary["train_accuracy"] == 1.0 and abs(summary["min_margin"] - 1.0) < 1e-9

    real, saves = poly.save_state, []

    def dies_after_three(*args):
        real(*args)
        saves.append(args[2]["step"])
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(poly, "save_state", dies_after_three)
    task = TaskConfig(dataset="digits", task="odd_even", n_per_class=5)
    with pytest.raises(Exception, match="interrupted while training"):
        train_victim(task, cfg, tmp_path / "v", **QUIET)
    monkeypatch.setattr(poly, "save_state", real)
    assert saves == [20, 40, 60]
    logs = []
    train_victim(task, cfg, tmp_path / "v", log=logs.append)
    assert "resuming training at step 60" in logs
    victim = load_victim(tmp_path / "v")
    assert victim.spec.degree == 3 and victim.train_info["trainer_kind"] == "polynomial"
    assert torch.equal(victim.params[0], W) and torch.equal(victim.params[1], a[None])
    with pytest.raises(TrainreconError, match="one output"):
        train_victim(TaskConfig(dataset="digits", task="multiclass", n_per_class=2), cfg, tmp_path / "mc", **QUIET)
    assert not (tmp_path / "mc").exists()


def test_ntk_update_lies_in_the_span_of_initial_gradients(tiny_task):
    """One momentum-SGD epoch moves theta exactly along sum_i r_i grad f(x_i; theta_0)."""
    x = torch.as_tensor(tiny_task.centred(tiny_task.x_train))
    y = torch.as_tensor(tiny_task.y_train, dtype=torch.float64)
    _, _, one = train_ntk(NTKTrainConfig(hidden=[32, 32], max_epochs=1), x, y, **QUIET)
    assert one["final"]["ntk_residual_at_init"] < 1e-6
    _, params, many = train_ntk(NTKTrainConfig(hidden=[32, 32], max_epochs=3000), x, y, **QUIET)
    assert many["final"]["loss"] < 1e-6 and many["final"]["train_accuracy"] == 1.0
    assert all(p.shape == q.shape for p, q in zip(params, many["init_params"]))
    assert not all(torch.equal(p, q) for p, q in zip(params, many["init_params"]))


def test_adam_matches_torch_adam():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, generator=g, dtype=torch.float64)
    ref = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.02)
    mine, state = p0.clone(), {}
    for _ in range(7):
        grad = torch.randn(5, generator=g, dtype=torch.float64)
        ref.grad = grad.clone()
        opt.step()
        mine = Adam(0.02).step(mine, grad, state)
    assert torch.allclose(mine, ref.detach(), rtol=1e-12, atol=1e-14)


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)


def test_every_method_end_to_end(tmp_path):
    """Train each victim kind (API), attack it with its method through the CLI, evaluate the multiclass run."""
    from trainrecon.pipeline import evaluate_run, train_victim

    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps({"iterations": 20, "lr": 0.01}))
    quick_kkt = tmp_path / "quick_kkt.json"  # the reference's lambda lr (0.95) is tuned for other victims
    quick_kkt.write_text(json.dumps({"iterations": 20, "lr": 0.01, "lr_lambda": 0.01}))
    cases = [
        ("mc", "multiclass", TrainConfig(hidden=[8, 8], margin_schedule=[10.0], lbfgs_iters=20), "buzaglo-multiclass"),
        ("reg", "odd_even", RegressionTrainConfig(hidden=[8, 8], max_iters=50, lbfgs_chunk=50), "buzaglo-regression"),
        ("ntk", "odd_even", NTKTrainConfig(hidden=[8, 8], max_epochs=50), "loo-ntk"),
    ]
    for name, task, train, method in cases:
        train_victim(TaskConfig(dataset="digits", task=task, n_per_class=2), train, tmp_path / name, **QUIET)
        r = run("reconstruct", tmp_path / name, tmp_path / f"{name}_rec", "--method", method, "--config",
                quick if method == "loo-ntk" else quick_kkt)
        assert r.returncode == 0, r.stderr
        cfg = json.loads((tmp_path / f"{name}_rec" / "config.json").read_text())
        assert cfg["method"] == method and cfg["attack"]["lr"] == 0.01
    m = evaluate_run(tmp_path / "mc", [tmp_path / "mc_rec" / "candidates.npz"], tmp_path / "mc_ev", **QUIET)
    assert len(m["protocols"]["haim_nn"]["per_class_ssim_paper_gt_0.4"]) == 10
    assert load_victim(tmp_path / "ntk").init_params is not None
    assert np.load(tmp_path / "mc_rec" / "candidates.npz")["y"].tolist() == list(np.repeat(np.arange(10), 4))
    # a method that needs what the victim lacks says so in one line
    r = run("reconstruct", tmp_path / "reg", tmp_path / "bad", "--method", "loo-ntk")
    assert r.returncode == 2 and "initial parameters" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("reconstruct", tmp_path / "reg", tmp_path / "bad2", "--method", "buzaglo-multiclass")
    assert r.returncode == 2 and "several outputs" in r.stderr


@pytest.mark.slow
def test_cli_run_an_experiment_file_and_refuse_a_bad_one(tmp_path):
    exp = {"description": "tiny", "task": {"dataset": "digits", "task": "odd_even", "n_per_class": 2},
           "trainer": "kkt", "train": {"hidden": [8, 8], "margin_schedule": [10.0], "lbfgs_iters": 20},
           "method": "haim", "attack": {"iterations": 20}}
    (tmp_path / "e.json").write_text(json.dumps(exp))
    r = run("run", tmp_path / "e.json", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / "grid.png").is_file()
    saved = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert saved["attack"]["iterations"] == 20 and saved["attack"]["lr"] == 0.01  # defaults recorded too
    (tmp_path / "bad.json").write_text(json.dumps({**exp, "attack": {"iterations": 20, "lr_x": 1.0}}))
    r = run("run", tmp_path / "bad.json", "--out", tmp_path / "out2")
    assert r.returncode == 2 and "lr_x" in r.stderr and len(r.stderr.strip().splitlines()) == 1
