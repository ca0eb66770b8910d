"""Misuse that must not pass (issue 21): controls a user cannot replace, results that do not belong together,
sweeps checked like reconstruct, imports that drop nothing, no command writing into what it did not write, sizes
checked before work, storages that cannot hang or crash, and an interrupted multi-worker sweep that stops every
worker and says in one line how to continue.  Each class is tried as a hurried user would, through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from test_robustness import cli_in_process
from trainrecon import reconstruct
from trainrecon.attacks import HaimConfig, Payload
from trainrecon.attacks.buzaglo import BuzagloRegressionConfig
from trainrecon.provenance import belongs, claim_folder, origin
from trainrecon.errors import TrainreconError
from trainrecon.identifiability.power_victims import save_poly_victim
from trainrecon.metrics.protocols import evaluate
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import init_params
from trainrecon.models.victim import load_victim, save_victim
from trainrecon.runtime import StopRequest
from trainrecon.sweeps.study import engine_kwargs, in_memory

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
QUIET = lambda *_: None  # noqa: E731


def refused(argv, capsys, monkeypatch, *needles: str) -> str:
    """The CLI run in this process must exit 2 with one line on stderr, holding every needle."""
    code, err = cli_in_process(argv, capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, code, err)
    for n in needles:
        assert n in err, (argv, err)
    return err


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its content hash (to prove nothing was touched)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".trainrecon")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_victim):
    """A Haim run and a Buzaglo-regression run on the tiny victim, a second victim (the same weights, scaled: another
    fingerprint) with a Haim run, and a ten-class victim with random weights."""
    root = tmp_path_factory.mktemp("runs")
    cfg = dict(iterations=20, m=10, lr=0.03, init_scale=0.05, log_every=10, checkpoint_every=10)
    v = load_victim(tiny_victim)
    reconstruct(Payload.of(v), HaimConfig(**cfg), root / "rec", log=QUIET)
    reconstruct(Payload.of(v), BuzagloRegressionConfig(**cfg), root / "rec_reg", log=QUIET)
    save_victim(root / "other", v.spec, [p * 2 for p in v.params], v.input_mean, v.train_info)
    reconstruct(Payload.of(load_victim(root / "other")), HaimConfig(**cfg), root / "rec_other", log=QUIET)
    spec = MLPSpec([64, 8, 10], [True, False], input_shape=[1, 8, 8])
    save_victim(root / "multiclass", spec, init_params(spec, [1.0, 1.0], 0), v.input_mean, v.train_info)
    save_poly_victim(root / "poly", np.ones(3), np.eye(3, 10), 3, {"trainer_kind": "exact_kkt"})
    return root


# 1. controls a user cannot replace --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["null_mean", "NULL_MEAN", "mean", "null_noise", "noise", "null_heldout_mean",
                                  "heldout_mean", "heldout", "positive", "attack", "null_typical", "typical",
                                  "null_attack", "", " ", "a b", " x", "x\t"])
def test_a_null_set_cannot_take_a_control_name_or_an_odd_one(name, runs, tiny_victim, tmp_path, capsys, monkeypatch):
    c = runs / "rec" / "candidates.npz"
    refused(["evaluate", tiny_victim, c, "--out", tmp_path / "e", "--null", f"{name}={c}"], capsys, monkeypatch,
            "null set name")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("names", [("a", "a"), ("other", "Other")])
def test_a_null_set_name_given_twice_is_refused(names, runs, tiny_victim, tmp_path, capsys, monkeypatch):
    c = runs / "rec" / "candidates.npz"
    argv = ["evaluate", tiny_victim, c, "--out", tmp_path / "e"]
    for n in names:
        argv += ["--null", f"{n}={c}"]
    refused(argv, capsys, monkeypatch, "given twice")


def test_a_further_null_set_is_added_beside_the_controls(runs, tiny_task, tiny_victim, tmp_path, capsys, monkeypatch):
    c = runs / "rec" / "candidates.npz"
    code, err = cli_in_process(["evaluate", tiny_victim, c, "--out", tmp_path / "e", "--null", f"other_run={c}"],
                               capsys, monkeypatch)
    assert code == 0, err
    controls = json.loads((tmp_path / "e" / "metrics.json").read_text())["headline"]["controls"]
    assert {"null_mean", "null_noise", "null_heldout_mean", "other_run", "heldout", "positive"} <= set(controls)
    x = np.load(c)["x"]  # the library refuses a built-in name too
    with pytest.raises(TrainreconError, match="built-in"):
        evaluate(x, tiny_task.x_train, tiny_task.heldout_all, tiny_task.mean, extra_nulls={"heldout": x})


# 2. what belongs together ---------------------------------------------------------------------------------------

def test_runs_trials_and_unions_record_their_victim_and_method(runs, tiny_victim):
    fp = Payload.of(load_victim(tiny_victim)).fingerprint()
    for path in (runs / "rec", runs / "rec" / "candidates.npz"):
        rec = origin(path)
        assert rec["victim"] == fp and rec["method"] == "haim"
    assert origin(runs / "rec_reg" / "candidates.npz")["method"] == "buzaglo-regression"
    assert belongs(origin(runs / "rec_other"), fp) and belongs(origin(runs / "rec"), fp) is None
    assert belongs(origin(runs / "rec"), fp, "loo-ntk") and belongs(None, fp) is None  # no record: a user's own file


def test_evaluate_and_union_refuse_another_victims_runs_unless_asked(runs, tiny_victim, tmp_path, capsys, monkeypatch):
    other = runs / "rec_other" / "candidates.npz"
    refused(["evaluate", tiny_victim, other, "--out", tmp_path / "e1"], capsys, monkeypatch, "another victim",
            "--allow-cross-victim")
    refused(["union", tiny_victim, runs / "rec", runs / "rec_other", "--out", tmp_path / "u1"], capsys, monkeypatch,
            "rec_other", "another victim")
    refused(["union", tiny_victim, runs / "rec", runs / "rec_reg", "--out", tmp_path / "u2"], capsys, monkeypatch,
            "buzaglo-regression", "--allow-mixed-methods")
    assert not (tmp_path / "e1").exists() and not (tmp_path / "u1" / "union.npz").exists()
    code, err = cli_in_process(["evaluate", tiny_victim, other, "--out", tmp_path / "e3", "--allow-cross-victim"],
                               capsys, monkeypatch)
    assert code == 0, err
    prov = json.loads((tmp_path / "e3" / "metrics.json").read_text())["provenance"]
    assert prov["cross_victim"] and prov["cross_victim_allowed"] and prov["sources"][0]["victim"] != prov["victim"]
    code, err = cli_in_process(["union", tiny_victim, runs / "rec", runs / "rec_reg", "--out", tmp_path / "u3",
                                "--allow-mixed-methods"], capsys, monkeypatch)
    assert code == 0, err
    union = json.loads((tmp_path / "u3" / "metrics.json").read_text())["union"]
    assert union["provenance"]["methods"] == ["buzaglo-regression", "haim"] and union["provenance"]["mixed_methods_allowed"]
    assert origin(tmp_path / "u3" / "union.npz")["victim"] == prov["victim"]  # a union records its victim too


def fake_sweep(folder: Path, run: Path, victim_fp: str) -> Path:
    """A sweep folder (as sweep writes it) whose one complete trial is ``run``."""
    shutil.copytree(run, folder / "trials" / "0000")
    (folder / "trials" / "0000" / "trial.json").write_text(json.dumps({"trial": 0, "state": "COMPLETE", "score": 0.5}))
    (folder / "sweep_config.json").write_text(json.dumps({"identity": {"victim": victim_fp, "method": "haim",
                                                                        "study": "s", "storage": "journal file"}}))
    return folder


def test_a_sweep_of_another_victim_is_neither_merged_nor_continued(runs, tiny_victim, tmp_path, capsys, monkeypatch):
    other_fp = Payload.of(load_victim(runs / "other")).fingerprint()
    sweep = fake_sweep(tmp_path / "s", runs / "rec_other", other_fp)
    refused(["union", tiny_victim, "--sweep", sweep, "--out", tmp_path / "u"], capsys, monkeypatch, "another victim")
    before = snapshot(sweep)
    refused(["sweep", tiny_victim, sweep, "--trials", 1, "--iterations", 10], capsys, monkeypatch, "holds another sweep",
            "victim")
    (sweep / "sweep_config.json").unlink()  # an older sweep folder without the record: its trials still tell
    refused(["sweep", tiny_victim, sweep, "--trials", 1, "--iterations", 10], capsys, monkeypatch, "another sweep",
            "0000")
    refused(["sweep", runs / "other", sweep, "--method", "buzaglo-regression", "--trials", 1], capsys, monkeypatch,
            "another sweep", "method")
    assert snapshot(sweep) == {k: v for k, v in before.items() if k != "sweep_config.json"}


def test_truth_heldout_and_candidates_must_fit_the_victim(runs, tiny_task, tiny_victim, tmp_path, capsys, monkeypatch):
    c = runs / "rec" / "candidates.npz"
    x = np.load(c)["x"]
    files = {"more.npz": {"x": np.concatenate([tiny_task.x_train, tiny_task.x_train[:1]]),
                          "y": np.concatenate([tiny_task.y_train, tiny_task.y_train[:1]])},
             "fewer.npz": {"x": tiny_task.x_train[:-1]},
             "truth.npz": {"x": tiny_task.x_train, "y": tiny_task.y_train},
             "complex_y.npz": {"x": tiny_task.x_train, "y": tiny_task.y_train + 0.5j},
             "complex_truth.npz": {"x": tiny_task.x_train.astype(complex)},
             "small_heldout.npz": {"x": np.zeros((20, 7, 7))},
             "complex.npz": {"x": x.astype(np.complex128)}, "bool.npz": {"x": x > 0},
             "text.npz": {"x": np.array([["a"] * 64] * 10)}, "nan.npz": {"x": np.where(x > 0, np.nan, x)}}
    for name, arrays in files.items():
        np.savez(tmp_path / name, **arrays)
    ev = ["evaluate", tiny_victim]
    t = tmp_path
    cases = [
        (ev + [c, "--out", t / "o", "--truth", t / "more.npz"], "n = 10"),
        (ev + [c, "--out", t / "o", "--truth", t / "fewer.npz"], "n = 10"),
        (ev + [c, "--out", t / "o", "--truth", t / "complex_y.npz"], "complex_y.npz"),
        (ev + [c, "--out", t / "o", "--truth", t / "complex_truth.npz"], "complex_truth.npz"),
        (ev + [c, "--out", t / "o", "--truth", t / "truth.npz", "--heldout", t / "small_heldout.npz"], "small_heldout.npz"),
        (ev + [c, "--out", t / "o", "--heldout", t / "small_heldout.npz"], "(1, 7, 7)"),
        (ev + [t / "complex.npz", "--out", t / "o"], "complex128"),
        (ev + [t / "bool.npz", "--out", t / "o"], "bool"),
        (ev + [t / "text.npz", "--out", t / "o"], "text.npz"),
        (ev + [t / "nan.npz", "--out", t / "o"], "NaN"),
        (ev + [c, "--out", t / "o", "--null", f"cplx={t / 'complex.npz'}"], "complex128"),
        (["union", tiny_victim, t / "complex.npz", "--out", t / "u"], "complex128"),
    ]
    for argv, needle in cases:
        refused(argv, capsys, monkeypatch, needle)
    assert not (t / "o").exists() or not [p for p in (t / "o").iterdir() if not p.name.startswith(".trainrecon")]


# 3. a sweep checks method, victim, m and memory once, as reconstruct does -------------------------------------

def test_sweep_refuses_what_reconstruct_refuses_before_any_trial(runs, tiny_victim, tmp_path, capsys, monkeypatch):
    def cfg(**base):
        p = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*')))}.json"
        p.write_text(json.dumps({"trials": 2, "iterations": 10, "base": base}))
        return p

    cases = [
        ([tiny_victim, "--method", "loo-ntk"], "initial parameters"),
        ([tiny_victim, "--method", "buzaglo-multiclass"], "several outputs"),
        ([runs / "multiclass", "--method", "haim"], "binary"),  # reconstruct's auto would pick multiclass
        ([runs / "poly"], "not disclosed"),
        ([tiny_victim, "--config", cfg(m=9)], "even number"),
        ([tiny_victim, "--config", cfg(m=10**9)], "GiB"),
        ([tiny_victim, "--workers", 4, "--config", cfg(m=10**8)], "4 at once"),
        ([tiny_victim, "--workers", 10**6], "CPU cores"),
    ]
    for k, (args, needle) in enumerate(cases):
        out = tmp_path / f"s{k}"
        refused(["sweep", args[0], out, *args[1:]], capsys, monkeypatch, needle)
        assert not out.exists(), args  # refused before the first trial, nothing written
    for args, needle in cases[:4]:  # and reconstruct says the same
        argv = ["reconstruct", args[0], tmp_path / "r", *[a for a in args[1:] if a != "--config"]]
        argv = [a for a in argv if not (isinstance(a, Path) and a.name.startswith("cfg"))]
        refused(argv, capsys, monkeypatch, needle)


# 4. import drops nothing ----------------------------------------------------------------------------------------

def test_import_refuses_tensors_the_architecture_does_not_account_for(tmp_path, capsys, monkeypatch):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"widths": [4, 3, 1], "bias": [True, False], "input_shape": [1, 2, 2]}))
    good = {"layers.0.weight": torch.ones(3, 4), "layers.0.bias": torch.zeros(3), "layers.1.weight": torch.ones(1, 3)}
    for extra in ({"layers.1.bias": torch.zeros(1)}, {"layers.2.weight": torch.ones(1, 1)},
                  {"running_mean": torch.zeros(3), "layers.2.weight": torch.ones(1, 1)}):
        f = tmp_path / "w.safetensors"
        save_file({**good, **extra}, str(f))
        err = refused(["import", f, arch, tmp_path / "v"], capsys, monkeypatch, "does not account for")
        assert all(repr(k) in err for k in extra), err
        assert not (tmp_path / "v" / "model.json").exists()
    save_file({**good, "input_mean": torch.zeros(1, 2, 2)}, str(tmp_path / "ok.safetensors"))
    assert cli_in_process(["import", tmp_path / "ok.safetensors", arch, tmp_path / "v"], capsys, monkeypatch)[0] == 0


def test_a_refused_pickle_prints_one_line_and_no_torch_warning(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"layers.0.weight": Evil()}, f, protocol=4)  # protocol 4: torch warns before refusing
    (tmp_path / "arch.json").write_text(json.dumps({"widths": [4, 1], "bias": [False], "input_shape": [1, 2, 2]}))
    r = subprocess.run([sys.executable, "-m", "trainrecon", "import", str(tmp_path / "evil.pt"),
                        str(tmp_path / "arch.json"), str(tmp_path / "v")], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "refused to load" in r.stderr and "Warning" not in r.stderr and "pwned" not in r.stdout


# 5. no command writes into what it did not write -----------------------------------------------------------------

def test_every_command_refuses_a_folder_it_did_not_write(runs, tiny_victim, tmp_path, capsys, monkeypatch):
    victim = tmp_path / "victim"
    shutil.copytree(tiny_victim, victim)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"task": {"dataset": "digits", "n_per_class": 3}, "train": {"hidden": [8]}}))
    w = tmp_path / "w.safetensors"
    save_file({"layers.0.weight": torch.ones(1, 64)}, str(w))
    (tmp_path / "arch.json").write_text(json.dumps({"widths": [64, 1], "bias": [False], "input_shape": [1, 8, 8]}))
    c = runs / "rec" / "candidates.npz"
    commands = {
        "train": lambda o: ["train", o, "--n-per-class", 3],
        "import": lambda o: ["import", w, tmp_path / "arch.json", o],
        "exact-kkt": lambda o: ["exact-kkt", o, "--n", 3],
        "train-poly": lambda o: ["train-poly", o, "--steps", 10],
        "reconstruct": lambda o: ["reconstruct", tiny_victim, o, "--iterations", 5],
        "sweep": lambda o: ["sweep", tiny_victim, o, "--trials", 1, "--iterations", 5],
        "union": lambda o: ["union", tiny_victim, runs / "rec", "--out", o],
        "evaluate": lambda o: ["evaluate", tiny_victim, c, "--out", o],
        "identify": lambda o: ["identify", runs / "poly", "--out", o],
        "run": lambda o: ["run", case, "--out", o],
        "demo": lambda o: ["demo", "--out", o],
    }
    before = {f: snapshot(f) for f in (victim, mine, runs / "rec")}
    for name, argv in commands.items():
        for folder in (victim, mine) + ((runs / "rec",) if name not in ("reconstruct",) else ()):
            if name == "train" and folder == victim:
                continue  # train's own folder kind: it compares train.json field by field (test_robustness)
            refused(argv(folder), capsys, monkeypatch, str(folder))
    assert {f: snapshot(f) for f in before} == before


def test_exact_kkt_and_train_poly_keep_their_own_victim_and_refuse_another(tiny_victim, tmp_path, capsys, monkeypatch):
    poly = tmp_path / "poly"
    code, err = cli_in_process(["exact-kkt", poly, "--n", 4, "--d", 10], capsys, monkeypatch)
    assert code == 0, err
    before = snapshot(poly)
    code, err = cli_in_process(["exact-kkt", poly, "--n", 4, "--d", 10], capsys, monkeypatch)
    assert code == 0 and snapshot(poly) == before, err  # a rerun keeps the very same victim
    refused(["exact-kkt", poly, "--n", 5, "--d", 10], capsys, monkeypatch, "another victim", "data.n")
    refused(["train-poly", poly, "--n", 4, "--d", 10, "--steps", 10], capsys, monkeypatch, "another victim",
            "trainer_kind")
    refused(["exact-kkt", tiny_victim, "--n", 3], capsys, monkeypatch, "another victim", "trainer_kind")
    assert snapshot(poly) == before


def test_reconstruct_never_writes_over_another_runs_results(runs, tiny_victim, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(runs / "rec", copy)
    (copy / "checkpoint.safetensors").unlink()  # a copied, finished run: results without a checkpoint
    before = snapshot(copy)
    refused(["reconstruct", tiny_victim, copy, "--iterations", 7], capsys, monkeypatch, "another run")
    refused(["reconstruct", runs / "other", copy, "--iterations", 20], capsys, monkeypatch, "another run")
    assert snapshot(copy) == before
    claim_folder(copy, "reconstruct", ["*"])  # the helper itself: anything allowed passes


def test_evaluate_and_identify_refuse_a_folder_of_other_inputs(runs, tiny_victim, tmp_path, capsys, monkeypatch):
    c = runs / "rec" / "candidates.npz"
    assert cli_in_process(["evaluate", tiny_victim, c, "--out", tmp_path / "e"], capsys, monkeypatch)[0] == 0
    assert cli_in_process(["evaluate", tiny_victim, c, "--out", tmp_path / "e"], capsys, monkeypatch)[0] == 0  # again
    before = snapshot(tmp_path / "e")
    refused(["evaluate", tiny_victim, c, "--out", tmp_path / "e", "--threshold", 0.4], capsys, monkeypatch,
            "other inputs", "threshold")
    refused(["evaluate", tiny_victim, runs / "rec_reg" / "candidates.npz", "--out", tmp_path / "e"], capsys,
            monkeypatch, "other inputs", "candidates")
    assert snapshot(tmp_path / "e") == before
    assert cli_in_process(["identify", runs / "poly", "--out", tmp_path / "i", "--no-score"], capsys, monkeypatch)[0] == 0
    refused(["identify", runs / "poly", "--out", tmp_path / "i", "--no-score", "--no-polish"], capsys, monkeypatch,
            "another identification")


# 6. sizes before work, storages that cannot hang or crash, interrupts -------------------------------------------

def test_sizes_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    t0 = time.time()
    refused(["exact-kkt", tmp_path / "a", "--n", 1000000], capsys, monkeypatch, "--n")
    refused(["exact-kkt", tmp_path / "b", "--n", 20, "--d", 20, "--alpha", 6], capsys, monkeypatch, "lower degree")
    refused(["train-poly", tmp_path / "c", "--n", 1000000], capsys, monkeypatch, "multiply-adds")
    refused(["train-poly", tmp_path / "d", "--steps", 10**9], capsys, monkeypatch, "steps")
    assert time.time() - t0 < 30 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_storage_is_refused(url, tiny_victim, tmp_path, capsys, monkeypatch):
    assert in_memory(url) and not in_memory("sqlite:///study.db") and not in_memory("postgresql://h/db")
    refused(["sweep", tiny_victim, tmp_path / "s", "--storage", url], capsys, monkeypatch, "in-memory")


def test_a_damaged_or_foreign_storage_is_named_in_one_line(tiny_victim, tmp_path, capsys, monkeypatch):
    first = json.dumps({"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]})
    journals = {"garbage": "garbage line\n", "mixed": first + "\nnot json\n" + first + "\n",
                "binary": "\x00\x01\xff\n", "unknown_op": json.dumps({"op_code": 99, "worker_id": "w"}) + "\n"}
    for name, text in journals.items():
        out = tmp_path / name
        out.mkdir()
        (out / "study.journal").write_text(text, errors="surrogateescape")
        refused(["sweep", tiny_victim, out, "--trials", 1, "--iterations", 5], capsys, monkeypatch, "study.journal")
    (tmp_path / "not_a.db").write_bytes(b"not a database" * 100)
    db = sqlite3.connect(tmp_path / "foreign.db")
    db.execute("create table studies (x int)")
    db.commit()
    db.close()
    for f in ("not_a.db", "foreign.db"):
        refused(["sweep", tiny_victim, tmp_path / f"s_{f}", "--trials", 1, "--storage", f"sqlite:///{tmp_path / f}"],
                capsys, monkeypatch, "sweep.storage")


def test_a_database_server_that_never_answers_is_reported(tiny_victim, tmp_path, capsys, monkeypatch):
    """A server that accepts the connection and never says a word: the connect timeout ends the wait."""
    import trainrecon.sweeps.study as study

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def accept():
        try:
            while True:
                held.append(server.accept())
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(study, "CONNECT_TIMEOUT", 1)
    url = f"postgresql://nobody@127.0.0.1:{server.getsockname()[1]}/db"
    assert engine_kwargs(url)["connect_args"] == {"connect_timeout": 1}
    assert "connect_args" not in engine_kwargs(url + "?connect_timeout=3")  # the URL's own is kept
    t0 = time.time()
    refused(["sweep", tiny_victim, tmp_path / "s", "--trials", 1, "--storage", url], capsys, monkeypatch,
            "sweep.storage", "timeout")
    assert time.time() - t0 < 30
    server.close()


def test_a_nested_stop_request_takes_a_pending_stop_and_passes_its_own_out():
    with StopRequest(signals=(signal.SIGTERM,)) as outer:
        assert signal.getsignal(signal.SIGINT) != outer._handle  # only the signals it was given
        with StopRequest() as inner:
            assert inner.signals == outer.signals and inner.requested is None
            signal.raise_signal(signal.SIGTERM)
            assert inner.requested == "SIGTERM"
        assert outer.requested == "SIGTERM"  # the worker starts no further trial
        with StopRequest() as later:
            assert later.requested == "SIGTERM"  # the next run stops at once


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_of_a_sweep_in_one_line(tiny_victim, tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) of a two-worker sweep: every worker stops, each running
    trial keeps its checkpoint and is marked for retry, and one line says how to continue."""
    (tmp_path / "cfg.json").write_text(json.dumps({"trials": 4, "iterations": 100000, "prune": False,
                                                   "base": {"m": 10, "lr": 0.03, "init_scale": 0.05,
                                                            "checkpoint_every": 20, "log_every": 20}}))
    out = tmp_path / "s"
    p = subprocess.Popen([sys.executable, "-m", "trainrecon", "sweep", str(tiny_victim), str(out), "--workers", "2",
                          "--config", str(tmp_path / "cfg.json")], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("trials/*/checkpoint.safetensors"))) < 2:
            time.sleep(0.1)
        assert len(list(out.glob("trials/*/checkpoint.safetensors"))) == 2
        os.killpg(p.pid, signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and len(stderr.strip().splitlines()) == 1, stderr
    assert "rerun the same command to continue" in stderr and "Traceback" not in stdout + stderr
    records = [json.loads(line) for line in (out / "study.journal").read_text().splitlines()]
    workers = {r["user_attr"]["worker"] for r in records if r["op_code"] == 8 and "worker" in r.get("user_attr", {})}
    assert len(workers) == 2
    for w in workers:  # every worker process is gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(w.rpartition(":")[2]), 0)
    for folder in out.glob("trials/*"):
        info = json.loads((folder / "trial.json").read_text())
        assert info["state"] == "FAIL" and info["why"] == "interrupted" and (folder / "checkpoint.safetensors").is_file()


def test_refuse_other_record_is_the_one_same_folder_check(tmp_path):
    """evaluate, union, sweep and identify share it: a differing record is refused naming the field, a missing
    file or record passes, and a folder name with braces is kept as it is."""
    from trainrecon.provenance import refuse_other_record
    from trainrecon.config import save_json

    folder = tmp_path / "out{x}"
    refuse_other_record(folder / "metrics.json", ("union", "request"), {"top": 1}, "unused {diff}")
    save_json(folder / "metrics.json", {"union": {"request": {"top": 1, "dedupe": 0.99}}})
    refuse_other_record(folder / "metrics.json", ("union", "request"), {"top": 1, "dedupe": 0.99}, "unused {diff}")
    refuse_other_record(folder / "metrics.json", ("provenance", "inputs"), {"a": 1}, "unused {diff}")
    with pytest.raises(TrainreconError) as e:
        refuse_other_record(folder / "metrics.json", ("union", "request"), {"top": 2, "dedupe": 0.99},
                            f"{folder}: holds another union ({{diff}}); choose a new folder")
    assert str(e.value).startswith(f"{folder}: holds another union (top (1 then, 2 now))")
