"""Runs that survive crashes, concurrency and careless input: resume only what belongs, atomic checkpoints,
one run per folder, Ctrl-C, and one-line errors instead of tracebacks."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from trainrecon.checkpoint import load_checkpoint, save_checkpoint

from trainrecon.provenance import folder_lock
from trainrecon.errors import TrainreconError
from trainrecon.training import TrainConfig, train_binary

CLI = [sys.executable, "-m", "trainrecon"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=ENV, **kw)


def one_line_error(r, code=2):
    """Exit ``code`` with exactly one line on stderr and no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def iteration(path) -> int:
    """The checkpoint's iteration, read from one snapshot of its bytes beside the run folder: a running writer
    replaces the file many times a second, and reading it in place while it did once gave a header from one
    version and a shorter body (the slow suite, 2026-12-06)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    snapshot = path.parent.parent / f"snapshot-{path.parent.name}.safetensors"
    snapshot.write_bytes(data)
    return int(load_checkpoint(snapshot)[1]["iteration"])


def attack_json(tmp_path, **fields):
    p = tmp_path / f"attack_{len(list(tmp_path.glob('attack_*')))}.json"
    p.write_text(json.dumps(fields))
    return p


# 1. resume only what belongs ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_refuses_a_folder_trained_on_another_task(tmp_path):
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"hidden": [8], "margin_schedule": [10.0], "lbfgs_iters": 5}))
    assert cli("train", tmp_path / "v", "--n-per-class", 3, "--config", cfg).returncode == 0
    err = one_line_error(cli("train", tmp_path / "v", "--n-per-class", 4, "--config", cfg))
    assert "task.n_per_class (3 then, 4 now)" in err
    again = cli("train", tmp_path / "v", "--n-per-class", 3, "--config", cfg)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_trainer_checkpoint_refuses_other_data(tmp_path, tiny_task):
    x = torch.as_tensor(tiny_task.centred(tiny_task.x_train))
    y = torch.as_tensor(tiny_task.y_train, dtype=torch.float64)
    cfg = TrainConfig(hidden=[8], margin_schedule=[10.0], lbfgs_iters=5)
    train_binary(cfg, x, y, checkpoint_dir=tmp_path, log=lambda *a: None)
    with pytest.raises(TrainreconError, match="different training data"):
        train_binary(cfg, x.flip(0), y.flip(0), checkpoint_dir=tmp_path, log=lambda *a: None)


@pytest.mark.slow
def test_resume_refuses_another_victim_and_import_refuses_an_existing_folder(tmp_path, tiny_victim):
    cfg = attack_json(tmp_path, iterations=40, checkpoint_every=10)
    r = cli("reconstruct", tiny_victim, tmp_path / "rec", "--config", cfg, "--iterations", 40)
    assert r.returncode == 0, r.stderr
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_victim, other)
    from safetensors.torch import load_file

    t = load_file(str(other / "model.safetensors"))
    t["layers.0.weight"] = t["layers.0.weight"] * 1.001
    save_file(t, str(other / "model.safetensors"))
    err = one_line_error(cli("reconstruct", other, tmp_path / "rec", "--config", cfg, "--iterations", 40, "--resume"))
    assert "another victim" in err
    err = one_line_error(cli("import", other / "model.safetensors", other / "model.json", tiny_victim))
    assert "not an empty folder" in err


@pytest.mark.slow
def test_run_refuses_an_edited_experiment(tmp_path):
    case = {"task": {"dataset": "digits", "n_per_class": 3}, "train": {"hidden": [8], "margin_schedule": [10.0],
            "lbfgs_iters": 5}, "attack": {"iterations": 20, "checkpoint_every": 10}}
    f = tmp_path / "case.json"
    f.write_text(json.dumps(case))
    assert cli("run", f, "--out", tmp_path / "out").returncode == 0
    before = (tmp_path / "out" / "experiment.json").read_text()
    case["attack"]["lr"] = 0.05
    f.write_text(json.dumps(case))
    err = one_line_error(cli("run", f, "--out", tmp_path / "out"))
    assert "attack.lr (0.01 then, 0.05 now)" in err
    assert (tmp_path / "out" / "experiment.json").read_text() == before


# 2. atomic checkpoints ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_random_sigkills_resume_bit_for_bit(tmp_path, tiny_victim):
    cfg = attack_json(tmp_path, iterations=300, checkpoint_every=1, log_every=50)
    assert cli("reconstruct", tiny_victim, tmp_path / "ref", "--config", cfg).returncode == 0
    rng = random.Random(0)
    run = tmp_path / "run"
    for k in range(4):
        args = ["reconstruct", tiny_victim, run, "--config", cfg] + (["--resume"] if (run / "checkpoint.safetensors").exists() else [])
        proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        start = iteration(run / "checkpoint.safetensors")
        deadline = time.time() + 60
        while time.time() < deadline and iteration(run / "checkpoint.safetensors") <= start + 5:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert iteration(run / "checkpoint.safetensors") < 300, "the run finished before the last kill"
    r = cli("reconstruct", tiny_victim, run, "--config", cfg, "--resume")
    assert r.returncode == 0, r.stderr
    a, b = np.load(tmp_path / "ref" / "candidates.npz"), np.load(run / "candidates.npz")
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["multipliers"], b["multipliers"])
    assert json.loads((run / "loss.json").read_text())["iterations_done"] == 300


def test_checkpoint_is_one_file_and_legacy_pairs_still_load(tmp_path):
    t = {"x": torch.arange(6.0).reshape(2, 3)}
    save_checkpoint(tmp_path / "c.safetensors", t, {"iteration": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    tensors, state = load_checkpoint(tmp_path / "c.safetensors")
    assert state["iteration"] == 7 and torch.equal(tensors["x"], t["x"])
    save_file(t, str(tmp_path / "old.safetensors"))  # an earlier version's pair: tensors + JSON
    (tmp_path / "old.json").write_text(json.dumps({"iteration": 3}))
    assert load_checkpoint(tmp_path / "old.safetensors", tmp_path / "old.json")[1]["iteration"] == 3


# 3. one run per folder ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, tiny_victim):
    cfg = attack_json(tmp_path, iterations=100000, checkpoint_every=1000)
    first = subprocess.Popen(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "rec"), "--config", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "rec" / "config.json").is_file():
        time.sleep(0.05)
    try:
        err = one_line_error(cli("reconstruct", tiny_victim, tmp_path / "rec", "--config", cfg, "--seed", 1))
        assert "another trainrecon run" in err and str(first.pid) in err
        assert json.loads((tmp_path / "rec" / "config.json").read_text())["attack"]["seed"] == 0
    finally:
        first.kill()
        first.wait()
    with folder_lock(tmp_path / "rec"):  # the dead holder's lock is gone with it
        pass


# 4. Ctrl-C ------------------------------------------------------------------------------------------------------

def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path, tiny_victim):
    cfg = attack_json(tmp_path, iterations=100000, checkpoint_every=100000, log_every=1000)
    proc = subprocess.Popen(CLI + ["reconstruct", str(tiny_victim), str(tmp_path / "rec"), "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "rec" / "config.json").is_file():
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err, err
    done = iteration(tmp_path / "rec" / "checkpoint.safetensors")
    assert 0 < done < 100000 and f"iteration {done} " in err


# 5.-8. careless input -------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("hidden", ["500", "32,32,32"])
def test_hidden_of_any_depth(tmp_path, hidden):
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"margin_schedule": [10.0], "lbfgs_iters": 2, "max_fit_steps": 3000}))
    r = cli("train", tmp_path / "v", "--n-per-class", 3, "--hidden", hidden, "--config", cfg)
    assert r.returncode == 0, r.stderr
    widths = json.loads((tmp_path / "v" / "model.json").read_text())["widths"]
    assert widths[1:-1] == [int(h) for h in hidden.split(",")]
    weights = load_file(str(tmp_path / "v" / "model.safetensors"))
    assert [tuple(weights[f"layers.{i}.weight"].shape) for i in range(len(widths) - 1)] == \
        [(b, a) for a, b in zip(widths[:-1], widths[1:])]


def test_a_fit_that_stalls_on_dead_units_is_said_in_one_line(tmp_path):
    """A narrow deep net on 6 digits (seed 0) leaves half the images at output 0 with a zero gradient; the loss-
    normalised step once divided by an underflowed ||d|| and blew theta up to 1e122: now the stall is named."""
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"margin_schedule": [10.0], "lbfgs_iters": 2, "max_fit_steps": 3000}))
    r = cli("train", tmp_path / "v", "--n-per-class", 3, "--hidden", "10,10,10", "--config", cfg)
    one_line_error(r)
    assert "stalled" in r.stderr and "3 of 6 training images at output 0" in r.stderr, r.stderr
    assert not (tmp_path / "v" / "model.safetensors").exists()


def bad_inputs(tmp, victim):
    """(name, argv) pairs that must end in a one-line error."""
    (tmp / "nan.json").write_text('{"lr": NaN}')
    (tmp / "neg_box.json").write_text('{"box": -1}')
    (tmp / "momentum.json").write_text('{"momentum": 1.0}')
    (tmp / "chunk.json").write_text('{"chunk_size": -3}')
    (tmp / "lrl.json").write_text('{"lr_lambda": -0.1}')
    (tmp / "init0.json").write_text('{"hidden": [4, 4], "init_scale": [0, 0, 0]}')
    (tmp / "ident.json").write_text('{"jennrich_draws": 0}')
    arch = tmp / "arch.json"
    arch.write_text(json.dumps({"widths": [64, 4, 1], "bias": [True, False], "input_shape": [-1, -8, 8]}))
    good_arch = tmp / "good_arch.json"
    good_arch.write_text(json.dumps({"widths": [4, 2, 1], "bias": [False, False], "input_shape": [1, 2, 2]}))
    save_file({"layers.0.weight": torch.zeros(2, 4, dtype=torch.complex64), "layers.1.weight": torch.zeros(1, 2)},
              str(tmp / "complex.safetensors"))
    save_file({"layers.0.weight": torch.zeros(2, 4, dtype=torch.int32), "layers.1.weight": torch.zeros(1, 2)},
              str(tmp / "int.safetensors"))
    save_file({"layers.0.weight": torch.ones(2, 4), "layers.1.weight": torch.ones(1, 2)}, str(tmp / "W.SAFETENSORS"))
    np.savez(tmp / "strmean.npz", x=np.array(["a", "b", "c", "d"]))
    np.savez(tmp / "empty.npz", x=np.zeros((0, 1, 8, 8)))
    x = np.zeros((4, 1, 8, 8))
    x[1, 0, 0, 0] = np.inf
    np.savez(tmp / "inf.npz", x=x)
    np.savez(tmp / "nan_truth.npz", x=np.full((3, 8, 8), np.nan), y=np.arange(3))
    (tmp / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 10)
    os.makedirs(tmp / "mnistdir", exist_ok=True)
    np.savez(tmp / "mnistdir" / "mnist_subset.npz", x=np.zeros((10, 28, 28), np.uint8))
    (tmp / "a_file").write_text("x")
    rec = ["reconstruct", victim]
    return [
        ("nan lr", rec + [tmp / "o1", "--config", tmp / "nan.json"]),
        ("negative box", rec + [tmp / "o2", "--config", tmp / "neg_box.json"]),
        ("momentum 1", rec + [tmp / "o3", "--config", tmp / "momentum.json"]),
        ("negative chunk", rec + [tmp / "o4", "--config", tmp / "chunk.json"]),
        ("negative lr_lambda", rec + [tmp / "o5", "--config", tmp / "lrl.json"]),
        ("iterations 0", rec + [tmp / "o6", "--iterations", 0]),
        ("huge m", rec + [tmp / "o7", "--m", 1000000000]),
        ("huge seed", rec + [tmp / "o8", "--seed", 10**23]),
        ("device mps", rec + [tmp / "o9", "--device", "mps"]),
        ("device meta", rec + [tmp / "o10", "--device", "meta"]),
        ("output is a file", rec + [tmp / "a_file"]),
        ("output under a file", rec + [tmp / "a_file" / "sub"]),
        ("output name too long", rec + [tmp / ("x" * 300)]),
        ("unwritable output", rec + ["/proc/trainrecon_out"]),
        ("huge hidden", ["train", tmp / "o11", "--hidden", 1000000000]),
        ("init_scale zero", ["train", tmp / "o12", "--config", tmp / "init0.json"]),
        ("negative input_shape", ["import", tmp / "W.SAFETENSORS", arch, tmp / "o13"]),
        ("complex weights", ["import", tmp / "complex.safetensors", good_arch, tmp / "o14"]),
        ("int weights", ["import", tmp / "int.safetensors", good_arch, tmp / "o15"]),
        ("string mean", ["import", tmp / "W.SAFETENSORS", good_arch, tmp / "o16", "--mean", tmp / "strmean.npz"]),
        ("empty candidates", ["evaluate", victim, tmp / "empty.npz", "--out", tmp / "o17"]),
        ("inf candidate", ["evaluate", victim, tmp / "inf.npz", "--out", tmp / "o18"]),
        ("nan truth", ["evaluate", victim, tmp / "inf.npz", "--out", tmp / "o19", "--truth", tmp / "nan_truth.npz"]),
        ("corrupt gz", ["train-poly", tmp / "o20", "--data", "mnist", "--data-dir", tmp / "gzdir"]),
        ("mnist npz without y", ["train", tmp / "o21", "--dataset", "mnist", "--data-dir", tmp / "mnistdir"]),
        ("alpha 0", ["exact-kkt", tmp / "o22", "--alpha", 0]),
        ("alpha 1", ["exact-kkt", tmp / "o23", "--alpha", 1]),
        ("alpha -2", ["exact-kkt", tmp / "o24", "--alpha", -2]),
        ("alpha 50", ["exact-kkt", tmp / "o25", "--alpha", 50]),
        ("d 1e9", ["exact-kkt", tmp / "o26", "--d", 1000000000]),
        ("margin nan", ["identify", victim, "--out", tmp / "o27", "--margin", "nan"]),
        ("jennrich 0", ["identify", victim, "--out", tmp / "o28", "--config", tmp / "ident.json"]),
    ]


def cli_in_process(argv, capsys, monkeypatch) -> tuple[int, str]:
    """(exit status, stderr) of the CLI's main() run in this process (no interpreter start per case)."""
    from trainrecon.cli import main

    monkeypatch.setattr(sys, "argv", ["trainrecon", *map(str, argv)])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def test_bad_input_gets_one_line_and_no_half_written_folder(tmp_path, tiny_victim, capsys, monkeypatch):
    (tmp_path / "gzdir").mkdir()
    (tmp_path / "gzdir" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 10)
    (tmp_path / "gzdir" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 10)
    failures = []
    for name, argv in bad_inputs(tmp_path, tiny_victim):
        code, err = cli_in_process(argv, capsys, monkeypatch)
        ok = code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        if not ok:
            failures.append(f"{name}: rc {code}: {err.strip()[-300:]}")
    r = cli(*bad_inputs(tmp_path, tiny_victim)[0][1])  # and one through a real process, as a user runs it
    one_line_error(r)
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "o13" / "model.json").exists()  # refused before anything was written
