"""The last faults (issue 29): a sweep that survives a trial's numerical failure, refusals that leave every byte
of a folder as they found it, strict JSON in every result, malformed fields and damaged state named in one line
where the file is read, a full disk named with its file, and Ctrl-C while the command is still importing."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from test_misuse import refused, snapshot
from test_robustness import cli_in_process
from trainrecon import reconstruct
from trainrecon.attacks import HaimConfig, LooConfig, Payload
from trainrecon.attacks.loo import beta_schedule as beta_at
from trainrecon.checkpoint import META_KEY, save_checkpoint
from trainrecon.config import save_json
from trainrecon.models.victim import load_victim
from trainrecon.pipeline.sweep import run_sweep
from trainrecon.refinement.splitting import smallest_eigenpairs
from trainrecon.sweeps import SweepConfig

QUIET = lambda *_: None  # noqa: E731
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def strict_load(path: Path):
    """JSON as a strict parser reads it: NaN and infinities are refused."""
    def no(c):
        raise AssertionError(f"{path}: {c} is not JSON")
    return json.loads(path.read_text(), parse_constant=no)


def tiny_sweep(**kw) -> SweepConfig:
    base = {"m": 6, "lr": 0.03, "init_scale": 0.05, "log_every": 2, "checkpoint_every": 2, **kw.pop("base", {})}
    return SweepConfig(**{"trials": 3, "iterations": 4, "prune": False, "base": base, **kw})


# -- sweeps --------------------------------------------------------------------------------------------------------

def test_a_trial_that_fails_numerically_is_marked_fail_and_the_sweep_goes_on(tiny_victim, tmp_path, monkeypatch):
    """The second trial's attack raises as linalg.eigh does near divergence: that trial is FAIL with its reason (in
    trial.json and sweep.json), the other trials run, and the sweep ends with its summary written."""
    import trainrecon.sweeps.study as study

    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (error code: 17).")
        return reconstruct(*args, **kw)

    monkeypatch.setattr(study, "reconstruct", flaky)
    out = tmp_path / "sweep"
    lines: list[str] = []
    res = run_sweep(tiny_sweep(), tiny_victim, out, log=lines.append)
    assert res["states"]["FAIL"] == 1 and res["states"]["COMPLETE"] == 2 and len(calls) == 3
    failed = [t for t in res["trials"] if t["state"] == "FAIL"][0]
    assert "failed to converge" in failed["error"]
    info = strict_load(out / failed["folder"] / "trial.json")
    assert info["state"] == "FAIL" and "failed to converge" in info["why"]
    assert strict_load(out / "sweep.json")["states"]["FAIL"] == 1
    assert any("failed to converge" in line and f"trial {failed['trial']}" in line for line in lines)


def test_a_refused_sweep_leaves_its_folder_byte_for_byte(tiny_victim, tmp_path, capsys, monkeypatch):
    """A second sweep into the folder with other iterations is refused before it writes: sweep_config.json and the
    journal keep every byte (they were overwritten, then refused, before)."""
    out = tmp_path / "sweep"
    argv = ["sweep", tiny_victim, out, "--trials", 1, "--iterations", 4]
    code, err = cli_in_process(argv, capsys, monkeypatch)
    assert code == 0, err
    before = snapshot(out)
    refused(["sweep", tiny_victim, out, "--trials", 1, "--iterations", 6], capsys, monkeypatch, "another sweep",
            "iterations")
    assert snapshot(out) == before


@pytest.mark.parametrize("base, field", [(3, "sweep.base"), ([1], "sweep.base"),
                                         ({"lr": 1e308, "x_optimiser": "sgd"}, "sweep.base.lr"),
                                         ({"lr": 1e-320}, "sweep.base.lr")])
def test_a_sweep_config_that_cannot_be_drawn_from_is_refused_before_any_trial(base, field, tiny_victim, tmp_path,
                                                                               capsys, monkeypatch):
    cfg = tmp_path / "sweep.json"
    cfg.write_text(json.dumps({"base": base, "trials": 1, "iterations": 4}))
    refused(["sweep", tiny_victim, tmp_path / "s", "--config", cfg], capsys, monkeypatch, field)
    assert not (tmp_path / "s").exists()


def test_union_refuses_a_trial_record_it_cannot_rank(tiny_victim, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    assert cli_in_process(["sweep", tiny_victim, out, "--trials", 1, "--iterations", 4], capsys, monkeypatch)[0] == 0
    trial = next((out / "trials").glob("*/trial.json"))
    for field, value in (("score", "abc"), ("score", [1]), ("state", 5)):
        info = json.loads(trial.read_text())
        trial.write_text(json.dumps({**info, field: value}))
        refused(["union", tiny_victim, "--sweep", out, "--out", tmp_path / "u"], capsys, monkeypatch, "trial.json",
                field)
        trial.write_text(json.dumps(info))
    assert not (tmp_path / "u").exists()


# -- strict JSON ---------------------------------------------------------------------------------------------------

def test_the_json_writer_writes_null_for_what_is_not_a_number(tmp_path):
    save_json(tmp_path / "a.json", {"a": float("nan"), "b": [float("inf"), -math.inf, 1.5], "c": np.float32(2.0),
                                    "d": np.int64(3), "e": {"f": np.float64("nan")}})
    assert strict_load(tmp_path / "a.json") == {"a": None, "b": [None, None, 1.5], "c": 2.0, "d": 3, "e": {"f": None}}


@pytest.mark.parametrize("m", [1, 9])
def test_evaluate_with_fewer_candidates_than_images_writes_numbers(m, tiny_victim, tiny_task, tmp_path, capsys,
                                                                    monkeypatch):
    """Unmatched training images score 0 in the means of the one-to-one protocols and are counted; nothing is NaN
    (oracle: the mean over n of the matched SSIMs with zeros for the rest)."""
    x = tiny_task.centred(tiny_task.x_train[:m])  # the first m training images themselves
    np.savez(tmp_path / "c.npz", x=x)
    code, err = cli_in_process(["evaluate", tiny_victim, tmp_path / "c.npz", "--out", tmp_path / "e"], capsys,
                               monkeypatch)
    assert code == 0, err
    metrics = strict_load(tmp_path / "e" / "metrics.json")
    n = metrics["n"]
    for proto in ("hungarian", "loo_greedy"):
        entry = metrics["protocols"][proto]
        s = entry["ssim_paper"] if entry["ssim_paper"].get("defined", True) else entry["ssim_classic"]
        assert s["unmatched"] == n - m
        assert s["count_gt_0.5"] == m  # each candidate is its training image
        assert s["mean"] == pytest.approx(m / n, abs=2e-3)  # SSIM ~1 for the m matched, 0 for the others


# -- malformed fields, named where they are read --------------------------------------------------------------------

@pytest.mark.parametrize("field, value, said", [
    ("task", None, "task must be an object"), ("train_indices", 3, "train_indices must be a list"),
    ("train_indices", ["a", "b"], "train_indices must be a list"), ("trainer", "x", "trainer must be an object"),
    ("n_train", "ten", "n_train must be a positive"), ("rescaled_to_unit_margin", "yes", "true or false")])
def test_a_malformed_train_json_is_named_by_evaluate(field, value, said, tiny_victim, tmp_path, capsys, monkeypatch):
    v = tmp_path / "v"
    shutil.copytree(tiny_victim, v)
    info = json.loads((v / "train.json").read_text())
    (v / "train.json").write_text(json.dumps({**info, field: value}))
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 64)) + np.arange(64))
    refused(["evaluate", v, tmp_path / "c.npz", "--out", tmp_path / "e"], capsys, monkeypatch, "train.json", said)
    assert not (tmp_path / "e").exists()


@pytest.fixture(scope="module")
def exact_victim(tmp_path_factory) -> Path:
    from trainrecon.identifiability.power_victims import make_exact_victim
    from trainrecon.identifiability.polynomial import PolyDataConfig

    folder = tmp_path_factory.mktemp("exact") / "v"
    make_exact_victim(folder, PolyDataConfig(n=3, d=5), 3)
    return folder


def edited(src: Path, dst: Path, train=None, model=None, tensors=None) -> Path:
    shutil.copytree(src, dst)
    if train:
        info = json.loads((dst / "train.json").read_text())
        info.update({k: v for k, v in train.items() if v is not ...})
        for k in [k for k, v in train.items() if v is ...]:
            info.pop(k)
        (dst / "train.json").write_text(json.dumps(info))
    if model:
        (dst / "model.json").write_text(json.dumps({**json.loads((dst / "model.json").read_text()), **model}))
    if tensors:
        t = load_file(str(dst / "model.safetensors"))
        save_file({k: tensors(k, v) for k, v in t.items()}, str(dst / "model.safetensors"))
    return dst


@pytest.mark.parametrize("case, edit, said", [
    ("alpha huge", {"train": {"alpha": 1e300}}, "alpha must be a whole number"),
    ("trainer a string", {"train": {"trainer": "x"}}, "trainer must be an object"),
    ("degree 1", {"model": {"degree": 1}}, "degree"),
    ("zero weights", {"tensors": lambda k, v: torch.zeros_like(v)}, "first-layer weights are all zero"),
    ("zero second layer", {"tensors": lambda k, v: torch.zeros_like(v) if k.startswith("layers.1") else v},
     "second-layer weights are all zero")])
def test_identify_names_what_it_cannot_use(case, edit, said, exact_victim, tmp_path, capsys, monkeypatch):
    v = edited(exact_victim, tmp_path / "v", **edit)
    refused(["identify", v, "--out", tmp_path / "i"], capsys, monkeypatch, said)
    assert not (tmp_path / "i").exists()


def test_identify_rebuilds_an_exact_victims_samples_without_its_recorded_alpha(exact_victim, tmp_path, capsys,
                                                                                 monkeypatch):
    """train.json without alpha: the degree is model.json's (it was a KeyError reaching the user)."""
    v = edited(exact_victim, tmp_path / "v", train={"alpha": ...})
    code, err = cli_in_process(["identify", v, "--out", tmp_path / "i"], capsys, monkeypatch)
    assert code == 0, err
    assert strict_load(tmp_path / "i" / "report.json")["score"]["n_train"] == 3


def test_identify_refuses_a_truth_file_without_samples(exact_victim, tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "t.npz", x=np.zeros((0, 5)), y=np.zeros(0))
    refused(["identify", exact_victim, "--out", tmp_path / "i", "--truth", tmp_path / "t.npz"], capsys, monkeypatch,
            "t.npz", "no samples")


@pytest.mark.parametrize("text, said", [("[" * 100_000 + "]" * 100_000, "nested too deep"),
                                        ('{"iterations": ' + "9" * 5000 + "}", "4300 digits")])
def test_json_nested_too_deep_or_with_a_huge_integer_is_named(text, said, tiny_victim, tmp_path, capsys, monkeypatch):
    (tmp_path / "c.json").write_text(text)
    refused(["reconstruct", tiny_victim, tmp_path / "r", "--config", tmp_path / "c.json"], capsys, monkeypatch,
            "c.json", said)
    v = tmp_path / "v"
    shutil.copytree(tiny_victim, v)
    (v / "train.json").write_text(text)
    np.savez(tmp_path / "c.npz", x=np.zeros((2, 64)) + np.arange(64))
    refused(["evaluate", v, tmp_path / "c.npz", "--out", tmp_path / "e"], capsys, monkeypatch, "train.json", said)


def test_candidates_too_large_to_score_and_constant_unions_are_refused(tiny_victim, tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "huge.npz", x=np.random.default_rng(0).normal(size=(4, 64)) * 1e300)
    refused(["evaluate", tiny_victim, tmp_path / "huge.npz", "--out", tmp_path / "e"], capsys, monkeypatch,
            "huge.npz", "values up to")
    np.savez(tmp_path / "flat.npz", x=np.ones((4, 64)))
    refused(["union", tiny_victim, tmp_path / "flat.npz", "--out", tmp_path / "u"], capsys, monkeypatch, "constant")
    assert not (tmp_path / "e").exists() and not (tmp_path / "u").exists()


def test_a_sparse_tensor_in_a_state_dict_is_refused(tmp_path, capsys, monkeypatch):
    sd = {"layers.0.weight": torch.randn(4, 64).to_sparse(), "layers.1.weight": torch.randn(1, 4)}
    torch.save(sd, tmp_path / "w.pt")
    refused(["import", tmp_path / "w.pt", tmp_path / "v", "--input-shape", "1,8,8"], capsys, monkeypatch,
            "layers.0.weight", "sparse")
    assert not (tmp_path / "v").exists()


# -- numerical edges inside an attack -------------------------------------------------------------------------------

def test_lanczos_gives_nan_for_a_block_whose_curvature_overflowed_and_the_exact_pair_for_the_others():
    """float64 oracle: two 3 x 3 blocks, the second one infinite; the first block's smallest eigenpair is eigh's."""
    A = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, -1.0]], dtype=torch.float64)

    def hvp(V):
        return torch.stack([V[0] @ A, V[1] * math.inf])

    mu, v, _ = smallest_eigenpairs(hvp, 2, 3, 3, torch.zeros(2, 3, dtype=torch.float64))
    ev, evec = torch.linalg.eigh(A)
    assert float(mu[0]) == pytest.approx(float(ev[0]), abs=1e-12)
    assert abs(float(v[0] @ evec[:, 0])) == pytest.approx(1.0, abs=1e-10)
    assert math.isnan(float(mu[1])) and float(v[1].abs().sum()) == 0


def test_a_run_whose_splitting_curvature_overflows_ends_with_a_report(tiny_victim, tmp_path):
    """Haim's sharpness 1e300 overflows the splitting matrices: the run's second-order report says so (None and a
    count), and loss.json is strict JSON."""
    cfg = HaimConfig(iterations=4, m=4, log_every=2, checkpoint_every=2, alpha=1e300)
    res = reconstruct(Payload.of(load_victim(tiny_victim)), cfg, tmp_path / "r", log=QUIET)
    so = res.stats["second_order"]
    assert so["candidates_without_eigenvalue"] == 4 and so["min_splitting_eigenvalue"] is None
    strict_load(tmp_path / "r" / "loss.json")


def test_loos_sharpness_schedule_does_not_overflow():
    cfg = LooConfig(beta_period=1e-3)
    assert beta_at(cfg, 0) == pytest.approx(cfg.beta_start + 1) and beta_at(cfg, 10**6) == cfg.beta_max
    assert beta_at(LooConfig(), 20000) == pytest.approx(20.0)  # 10 + 10^(20000 / 20000)


# -- damaged state ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_run(tiny_victim, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stopped") / "run"
    reconstruct(Payload.of(load_victim(tiny_victim)), HaimConfig(iterations=6, m=4, log_every=2, checkpoint_every=2),
                folder, stop_after=2, log=QUIET)
    return folder


@pytest.mark.parametrize("case", ["iteration 1e9", "iteration -5", "iteration a string", "history a string",
                                  "history not records", "2 rows for m = 4", "seconds a string", "nan candidates",
                                  "a foreign image shape"])
def test_a_damaged_checkpoint_is_refused_before_it_is_trusted(case, stopped_run, tiny_victim, tmp_path, capsys,
                                                              monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    path = run / "checkpoint.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        state, tensors = json.loads(f.metadata()[META_KEY]), {k: f.get_tensor(k) for k in f.keys()}
    edit = {"iteration 1e9": {"iteration": 10**9}, "iteration -5": {"iteration": -5},
            "iteration a string": {"iteration": "2"}, "history a string": {"history": "x"},
            "history not records": {"history": [1, 2]}, "seconds a string": {"seconds": "x"}}.get(case, {})
    state.update(edit)
    if case == "2 rows for m = 4":
        tensors = {k: v[:2] if v.ndim and v.shape[0] == 4 else v for k, v in tensors.items()}
    if case == "nan candidates":
        tensors["x"] = tensors["x"] * math.nan
    if case == "a foreign image shape":
        tensors["x"], tensors["opt_x.m"] = tensors["x"][:, :10], tensors["opt_x.m"][:, :10]
    save_checkpoint(path, tensors, state)
    before = snapshot(run)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"iterations": 6, "m": 4, "log_every": 2, "checkpoint_every": 2}))
    refused(["reconstruct", tiny_victim, run, "--method", "haim", "--config", cfg, "--resume"], capsys, monkeypatch,
            "checkpoint")
    assert snapshot(run) == before


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(stopped_run, tiny_victim, tmp_path, capsys,
                                                                   monkeypatch):
    import trainrecon.checkpoint as checkpoint

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    kept = (run / "checkpoint.safetensors").read_bytes()

    def full(*args, **kw):  # what safetensors raises when the disk is full
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                              'left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", full)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"iterations": 6, "m": 4, "log_every": 2, "checkpoint_every": 2}))
    refused(["reconstruct", tiny_victim, run, "--method", "haim", "--config", cfg, "--resume"], capsys, monkeypatch,
            "checkpoint.safetensors", "No space left on device")
    assert (run / "checkpoint.safetensors").read_bytes() == kept
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_train_into_a_folder_another_process_holds_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "victim"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom trainrecon.provenance import folder_lock\n"
                               f"with folder_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused(["train", out, "--dataset", "digits", "--n-per-class", 2, "--hidden", "8"], capsys, monkeypatch,
                "another trainrecon run", str(holder.pid))
        assert sorted(p.name for p in out.iterdir()) == [".trainrecon.lock", ".trainrecon.pid"]
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_while_the_command_is_still_importing_ends_in_one_line(tmp_path):
    """Ctrl-C arriving while the command imports torch (made certain here: an import hook raises
    KeyboardInterrupt when torch is imported, as the signal would) ends in one line, exit 130."""
    code = ("import sys\n"
            "class Stop:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Stop())\n"
            "sys.argv = ['trainrecon', 'reconstruct', '--help']\n"
            "from trainrecon.__main__ import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == "interrupted while starting; nothing was done" and r.stdout == ""


# -- every refusal leaves its folder as it found it ------------------------------------------------------------------

def every_byte(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``, hidden ones (lock and PID files) included, with its content hash."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_each_commands_refusal_of_its_own_folder_changes_no_byte(tiny_victim, exact_victim, tmp_path, capsys,
                                                                  monkeypatch):
    """Each command writes its folder, then is run again into it with other inputs: refused in one line, and no
    file (hidden ones included) is added, removed or changed."""
    w = tmp_path / "w.safetensors"
    save_file({"layers.0.weight": torch.randn(8, 64), "layers.1.weight": torch.randn(1, 8)}, str(w))
    case = lambda it: tmp_path / f"case{it}.json"  # noqa: E731
    for it in (4, 6):
        case(it).write_text(json.dumps({"task": {"dataset": "digits", "n_per_class": 2},
                                        "train": {"hidden": [8], "lbfgs_iters": 5, "margin_schedule": [10.0]},
                                        "attack": {"iterations": it, "m": 4}}))
    o = lambda name: tmp_path / name  # noqa: E731
    rec = ["reconstruct", tiny_victim, o("rec"), "--method", "haim", "--m", 4]
    pairs = {
        "train": (["train", o("tr"), "--dataset", "digits", "--n-per-class", 2, "--hidden", "8"],
                  ["train", o("tr"), "--dataset", "digits", "--n-per-class", 2, "--hidden", "9"], "trained differently"),
        "train-poly": (["train-poly", o("tp"), "--steps", 10], ["train-poly", o("tp"), "--steps", 11], "another victim"),
        "exact-kkt": (["exact-kkt", o("ek"), "--n", 3], ["exact-kkt", o("ek"), "--n", 4], "another victim"),
        "import": (["import", w, o("imp"), "--input-shape", "1,8,8"], ["import", w, o("imp"), "--input-shape", "1,8,8"],
                   "empty folder"),
        "reconstruct": ([*rec, "--iterations", 4], [*rec, "--iterations", 6, "--resume"], "different attack config"),
        "evaluate": (["evaluate", tiny_victim, o("rec") / "candidates.npz", "--out", o("ev")],
                     ["evaluate", tiny_victim, o("rec") / "candidates.npz", "--out", o("ev"), "--threshold", 0.4],
                     "other inputs"),
        "identify": (["identify", exact_victim, "--out", o("id"), "--no-score"],
                     ["identify", exact_victim, "--out", o("id"), "--no-score", "--no-polish"], "another identification"),
        "sweep": (["sweep", tiny_victim, o("sw"), "--trials", 1, "--iterations", 4],
                  ["sweep", tiny_victim, o("sw"), "--trials", 1, "--iterations", 6], "another sweep"),
        "run": (["run", case(4), "--out", o("run")], ["run", case(6), "--out", o("run")], "different experiment"),
    }
    for name, (first, again, said) in pairs.items():
        code, err = cli_in_process(first, capsys, monkeypatch)
        assert code == 0, (name, err)
        folder = Path(str(first[first.index("--out") + 1] if "--out" in first else first[2 if name in
                                                                                       ("reconstruct", "sweep", "import") else 1]))
        before = every_byte(folder)
        refused(again, capsys, monkeypatch, said)
        assert every_byte(folder) == before, name
