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
