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

        def fake(payload, cfg, images, labels, mean, shape, device):
            rec = reconstruct(payload, cfg, log=lambda *a: None)
            k = next(calls)
            return rec, list(range(len(images))), np.array([0.9] * k + [0.1] * (len(images) - k))

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
