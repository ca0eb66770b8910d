"""The attack's own positive control (pipeline/truth_start.py): the run's attack started at the training images."""

import json

import numpy as np
import pytest
import torch

from trainrecon import HaimConfig, reconstruct
from trainrecon.attacks.payload import payload_from_folder
from trainrecon.pipeline import evaluate_run
from trainrecon.attacks.method import start_slots


@pytest.mark.slow
def test_the_readings_follow_the_kept_counts(monkeypatch, tmp_path, tiny_victim):
    """Each reading for its (kept, held-out kept) pair, the runs replaced by fixed per-slot similarities."""
    import trainrecon.pipeline.truth_start as ts
    from trainrecon.pipeline.evaluation import load_truth
    from trainrecon.models.victim import load_victim

    victim = load_victim(tiny_victim)
    x_tr, y_tr, x_ho, mean = load_truth(victim, None, None, None)
    n = len(x_tr)
    x_ho = x_ho[: 3 * n]  # enough for the held-out run and a small scoring pool
    payload = payload_from_folder(tiny_victim)
    run = tmp_path / "run"
    reconstruct(payload, HaimConfig(iterations=2, checkpoint_every=2), run, log=lambda *a: None)
    for kept, kept_h, words in [(1, 0, "moves the training images away"), (9, 9, "does not single out"),
                                (9, 1, "singles out the training set"), (6, 1, "holds only part")]:
        calls = iter([kept, kept_h])

        def fake(payload, cfg, images, labels, mean, shape, device, noise=()):
            rec = reconstruct(payload, cfg, log=lambda *a: None)
            k = next(calls)
            return rec, list(range(len(images))), np.array([0.9] * k + [0.1] * (len(images) - k)), {"0": 0.0}

        monkeypatch.setattr(ts, "_run_from", fake)
        out = ts.truth_start_control(victim, run, x_tr, y_tr, x_ho, mean, log=lambda *a: None)
        assert (out["kept"], out["heldout_kept"]) == (kept, kept_h) and words in out["reading"], (out, n)
        assert ("init_tolerance = 1" in out["reading"]) == (kept == 1), out  # the hint for a PyTorch-initialised net


def test_start_slots_put_each_image_in_a_free_slot_of_its_label():
    labels = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    assert start_slots(labels, np.array([1.0, -1.0, 1.0, 1.0, 1.0]), 6, 5) == [3, 0, 4, 5, 1]  # the 4th +1 takes slot 1
    assert start_slots(None, np.array([1.0, -1.0]), 6, 2) == [0, 1]
    assert start_slots(labels, None, 6, 8) == [0, 1, 2, 3, 4, 5]  # more images than slots: the first m


def test_a_run_started_at_the_truth_keeps_it_when_the_attack_does_not_move(tmp_path, tiny_victim, one_thread):
    """With a learning rate of ~0 the control's candidates stay where it put them: every training image is kept
    and recovered, so the placement (its centring, its slots) is right; the unseen images are kept as well, so the
    reading is that this objective does not single out the training set."""
    payload = payload_from_folder(tiny_victim)
    run = tmp_path / "run"
    reconstruct(payload, HaimConfig(iterations=20, lr=1e-12, checkpoint_every=20), run, log=lambda *a: None)
    lines = []
    metrics = evaluate_run(tiny_victim, [run / "candidates.npz"], tmp_path / "eval", truth_start=True, log=lines.append)
    start = metrics["truth_start"]
    n = len(json.loads((tiny_victim / "train.json").read_text())["train_indices"])
    assert start["n"] == n and start["training"]["started"] == n and start["iterations"] == 20
    assert start["kept"] == start["training"]["kept"] == start["training"]["recovered"] == n, start
    assert start["heldout_kept"] == start["heldout"]["kept"] == n
    assert metrics["headline"]["recovered"] < n  # the run itself (tiny random starts) recovers fewer
    assert "does not single out the training set" in start["reading"]
    at = start["objective"]["training"]  # a smooth objective: invisible noise barely moves it, and it is not chaotic
    assert set(at) == {"0", "1e-06", "0.0001", "0.01"} and start["objective"]["unseen"] is not None
    assert abs(at["1e-06"] - at["0"]) <= 1e-4 * abs(at["0"]) and not start["objective"]["chaotic"], start["objective"]
    assert "chaotic" not in start["reading"]
    assert any(line.startswith("truth-start control (20 iterations") for line in lines)
    assert f"keeps {n} of {n} and, started at {n} images the model never saw, {n} of those" in metrics["audit"]["verdict"] \
        or metrics["audit"]["verdict"].startswith("The training data leaks")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["truth_start"]["kept"] == n


def test_the_verdict_carries_the_control_when_no_leak_is_shown():
    from trainrecon.audit_report import verdict

    head = {"n": 20, "recovered": 0, "informative": True, "negative_controls_max": 0, "heldout_pool": 140,
            "controls": {"heldout": 0, "positive": 20}}
    start = {"kept": 2, "heldout_kept": 1, "n": 20, "iterations": 8000,
             "reading": "this attack's objective moves the training images away"}
    assert "Started at" not in verdict({"headline": head})
    text = verdict({"headline": head, "truth_start": start})
    assert text.startswith("No leak shown") and ("the attack keeps 2 of 20 and, started at 20 images the model never "
                                                 "saw, 1 of those (8000 iterations): this attack's") in text


def test_the_control_refuses_a_union_and_a_file_outside_a_run(tmp_path, tiny_victim):
    import pytest

    from trainrecon.errors import TrainreconError

    payload = payload_from_folder(tiny_victim)
    run = tmp_path / "run"
    reconstruct(payload, HaimConfig(iterations=2, checkpoint_every=2), run, log=lambda *a: None)
    with pytest.raises(TrainreconError, match="needs the candidates of one attack run"):
        evaluate_run(tiny_victim, [run / "candidates.npz"] * 2, tmp_path / "e1", truth_start=True, log=lambda *a: None)
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "c.npz").write_bytes((run / "candidates.npz").read_bytes())
    with pytest.raises(TrainreconError, match="is not an attack run folder"):
        evaluate_run(tiny_victim, [loose / "c.npz"], tmp_path / "e2", truth_start=True, log=lambda *a: None)
    (loose / "config.json").write_text(json.dumps({"method": "haim"}))
    with pytest.raises(TrainreconError, match="not an attack run's record"):
        evaluate_run(tiny_victim, [loose / "c.npz"], tmp_path / "e3", truth_start=True, log=lambda *a: None)
    (loose / "config.json").write_text(json.dumps({"method": "nope", "m": 4, "attack": {}}))
    with pytest.raises(TrainreconError, match="names no known method"):
        evaluate_run(tiny_victim, [loose / "c.npz"], tmp_path / "e4", truth_start=True, log=lambda *a: None)


def test_the_start_measures_its_objective_under_noise_on_the_start_slots_only():
    """StartAt's values against a dense float64 oracle: J(X) = ||X||^2 at X + s E, E standard normal from the seed on
    the slots the images took and zero on the others (a slot outside them moved would change J by far more)."""
    from types import SimpleNamespace

    from trainrecon.hooks.start import StartAt

    m, d, slots = 5, 7, [3, 0, 4]

    class Objective:
        def value_and_grad(self, X, M):
            return {"total": float((X ** 2).sum())}, 2 * X, torch.zeros_like(M)

    class Attack:
        def start_at(self, cands, x, labels):
            cands.x[slots] = x
            return slots

        def objective(self, it, cands):
            return Objective()

    cands = SimpleNamespace(x=torch.full((m, d), 0.5, dtype=torch.float64), multipliers=torch.ones(m, 1),
                            restarts=1)
    x = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hook = StartAt(x, None, noise=(1e-6, 1e-2, 1.0), seed=4)
    hook.before_loop(SimpleNamespace(attack=Attack(), cands=cands, done=0))
    E = torch.zeros(m, d, dtype=torch.float64)
    E[slots] = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    X = cands.x
    assert torch.equal(X[slots], x) and set(hook.values) == {"0", "1e-06", "0.01", "1.0"}
    for key, s in [("0", 0.0), ("1e-06", 1e-6), ("0.01", 1e-2), ("1.0", 1.0)]:
        assert hook.values[key] == pytest.approx(float(((X + s * E) ** 2).sum()), rel=1e-14, abs=1e-14), key
    assert hook.finish(None, 0.0) == {"started": 3, "objective": hook.values}


def test_the_objective_is_called_chaotic_when_invisible_noise_undoes_half_its_fit():
    """The rule of :func:`chaotic` on the bench's numbers: the SGD LeNet's replay (0.001 at its training images,
    0.60 with noise of 1e-4, 0.89 at unseen images) is chaotic, the Adam MLP's (0.08, 0.17, 0.85) is not."""
    from trainrecon.pipeline.truth_start import chaotic

    assert chaotic({"0": 0.001, "1e-06": 0.18, "0.0001": 0.60, "0.01": 0.39}, 0.89)
    assert not chaotic({"0": 0.082, "1e-06": 0.083, "0.0001": 0.173, "0.01": 0.22}, 0.85)
    assert not chaotic({"0": 0.001, "0.0001": 0.60}, None)  # nothing to compare with
    assert not chaotic({"0": 0.5, "0.0001": 0.9}, 0.4)  # unseen images fit better: no fit to undo
    assert not chaotic({"0": 0.001}, 0.89)  # not measured
    assert not chaotic({"0": 0.001, "0.0001": None}, 0.89) and not chaotic({"0": None, "0.0001": 0.6}, 0.89)  # inf


def test_measuring_the_objective_under_noise_leaves_the_run_as_it_was(tiny_victim, one_thread):
    """The control's run with the measurement gives bit for bit the candidates of the run without it (the noise has
    its own generator; the evaluations change no state)."""
    from trainrecon.hooks.start import StartAt
    from trainrecon.pipeline.evaluation import load_truth
    from trainrecon.models.victim import load_victim
    from trainrecon.pipeline.truth_start import NOISE

    victim = load_victim(tiny_victim)
    x_tr, y_tr, _, mean = load_truth(victim, None, None, None)
    payload = payload_from_folder(tiny_victim)
    x = torch.as_tensor((x_tr - mean).reshape(len(x_tr), -1))
    runs = []
    for noise in [(), NOISE]:
        hook = StartAt(x, y_tr, noise)
        runs.append(reconstruct(payload, HaimConfig(iterations=30, checkpoint_every=30), log=lambda *a: None,
                                hooks=[hook]))
    assert torch.equal(runs[0].x, runs[1].x) and torch.equal(runs[0].multipliers, runs[1].multipliers)
    assert hook.values["0"] > 0 and set(hook.values) == {"0", *map(repr, NOISE)}
