"""The in-memory core: an attack returns a Reconstruction; a run folder is one way of keeping it; the time budget
is a hook; methods, trainers and scoring protocols are found through one registry mechanism."""

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

import trainrecon
from trainrecon import HaimConfig, Reconstruction, RunFolder, payload_from_folder, reconstruct
from trainrecon.checkpoint import load_checkpoint
from trainrecon.provenance import OutputFolder
from trainrecon.errors import TrainreconError
from trainrecon.refinement import MergeConfig, SplitConfig
from trainrecon.registry import Registry
from trainrecon.attacks import Payload
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import init_params

QUIET = lambda *a: None  # noqa: E731

#: what loss.json holds besides its history, in this order (the CLI's outputs are unchanged)
LOSS_KEYS = ["history", "method", "m", "m0", "iterations_done", "finished", "stopped_by_monitor", "seconds",
             "seconds_per_iteration", "final_loss", "refit_residual", "normalisation",  # the loop's own, then
             "second_order", "collapse", "merging", "splitting", "multiplier_solves",  # the planned hooks' keys
             "stopped_by_max_seconds"]
TIMINGS = ("seconds", "seconds_per_iteration")


def untimed(stats: dict) -> dict:
    """A run's summary without its wall-clock numbers (the splitting summary's included)."""
    out = {k: v for k, v in stats.items() if k not in TIMINGS}
    if out.get("splitting"):
        out["splitting"] = {k: v for k, v in out["splitting"].items() if k not in ("seconds", "share_of_wall_clock")}
    return out


def test_in_memory_reconstruction_is_the_folder_runs_bit_for_bit(tmp_path, tiny_victim, monkeypatch):
    payload = payload_from_folder(tiny_victim)
    cfg = HaimConfig(iterations=12, checkpoint_every=4, log_every=4, seed=3)
    monkeypatch.chdir(tmp_path)
    rec = reconstruct(payload, cfg, log=QUIET)
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    assert isinstance(rec, Reconstruction) and rec.finished and rec.m == 20 and rec.method == "haim"
    assert rec.x.dtype == torch.float64 and tuple(rec.x.shape) == (20, 1, 8, 8)
    kept = reconstruct(payload, cfg, tmp_path / "run", log=QUIET)
    saved = np.load(tmp_path / "run" / "candidates.npz")
    for name, array in rec.to_arrays().items():
        assert saved[name].dtype == array.dtype and np.array_equal(saved[name], array), name
    assert str(saved["victim"]) == payload.fingerprint() == rec.victim and str(saved["method"]) == "haim"
    loss = json.loads((tmp_path / "run" / "loss.json").read_text())
    assert loss["history"] == rec.history == kept.history and [h["iteration"] for h in rec.history] == [4, 8, 12]
    assert untimed({k: v for k, v in loss.items() if k != "history"}) == untimed(rec.stats) == untimed(kept.stats)
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == rec.config == kept.config
    assert torch.equal(rec.images(), rec.x + torch.as_tensor(payload.mean_chw()))
    with pytest.raises(TrainreconError, match="^resume: a run without a folder"):
        reconstruct(payload, cfg, resume=True, log=QUIET)
    # a different seed is a different reconstruction (the comparison above can fail)
    other = reconstruct(payload, dataclasses.replace(cfg, seed=4), log=QUIET)
    assert not torch.equal(other.x, rec.x)


def test_the_folder_run_writes_the_same_files_as_before(tmp_path, tiny_victim):
    payload = payload_from_folder(tiny_victim)
    plain = HaimConfig(iterations=8, checkpoint_every=4, log_every=4)
    reconstruct(payload, plain, RunFolder(tmp_path / "plain").claim(), log=QUIET)
    names = lambda d: sorted(p.name for p in (tmp_path / d).iterdir())  # noqa: E731
    base = ["candidates.npz", "candidates.png", "checkpoint.safetensors", "config.json", "loss.json"]
    assert names("plain") == sorted(base)  # the lock's files go when the run is done
    assert list(json.loads((tmp_path / "plain" / "loss.json").read_text())) == LOSS_KEYS
    assert list(json.loads((tmp_path / "plain" / "config.json").read_text())) == \
        ["method", "m", "attack", "victim", "payload", "normalisation", "adapted"]
    assert sorted(np.load(tmp_path / "plain" / "candidates.npz").files) == \
        ["ids", "method", "multipliers", "parents", "victim", "x", "y"]
    refined = dataclasses.replace(plain, split=SplitConfig(enabled=True, start=0.5, every=0.25, per_round=2,
                                                           lanczos_steps=6),
                                  merge=MergeConfig(enabled=True, threshold=0.3, start=0.25, every=0.25, stop=0.5))
    rec = reconstruct(payload, refined, tmp_path / "refined", log=QUIET)
    extra = {"merges.json", "splits.json"} | ({"split_images.npz"} if rec.stats["splitting"]["accepted"] else set())
    assert set(names("refined")) == set(names("plain")) | extra
    assert set(rec.artifacts) == extra
    _, meta = load_checkpoint(tmp_path / "refined" / "checkpoint.safetensors")
    assert {"iteration", "config", "history", "seconds", "candidates", "splits", "merges"} <= set(meta)
    # the run folder refuses what a run does not write, and another run's results
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(TrainreconError, match="notes.txt"):
        RunFolder(tmp_path / "plain").claim()
    with pytest.raises(TrainreconError, match="checkpoint of an earlier run"):
        reconstruct(payload, plain, tmp_path / "refined", log=QUIET)


def test_the_time_budget_is_a_hook_that_ends_the_run_as_finished(tmp_path, tiny_victim):
    payload = payload_from_folder(tiny_victim)
    cfg = HaimConfig(iterations=50, checkpoint_every=100, log_every=20, max_seconds=1e-6)
    rec = reconstruct(payload, cfg, tmp_path / "r", log=QUIET)
    st = rec.stats
    assert st["stopped_by_max_seconds"] and st["finished"] and st["iterations_done"] == 1 and not st["stopped_by_monitor"]
    assert [h["iteration"] for h in rec.history] == [1] and (tmp_path / "r" / "candidates.png").is_file()
    _, meta = load_checkpoint(tmp_path / "r" / "checkpoint.safetensors")
    assert meta["iteration"] == 1 and meta["seconds"] > 0
    # resumed with its budget spent: no further step, the seconds keep adding up over the sessions
    again = reconstruct(payload, cfg, tmp_path / "r", resume=True, log=QUIET).stats
    assert again["stopped_by_max_seconds"] and again["iterations_done"] == 1 and again["seconds"] >= meta["seconds"]
    # a budget that is not reached changes nothing; in memory the budget holds too
    ample = reconstruct(payload, dataclasses.replace(cfg, iterations=6, max_seconds=3600.0), log=QUIET)
    assert not ample.stats["stopped_by_max_seconds"] and ample.stats["iterations_done"] == 6
    assert reconstruct(payload, cfg, log=QUIET).stats["iterations_done"] == 1
    from trainrecon.attacks.plan import RunPlan, plan_run
    from trainrecon.attacks.runner import run_attack
    from trainrecon.hooks import Reports, TimeBudget, time_budget

    with pytest.raises(TrainreconError, match="attack.max_seconds: this needs its hook"):
        plan_run(payload, cfg).with_hooks([])
    with pytest.raises(TrainreconError, match="attack.max_seconds: this needs its hook"):  # a plan made by hand
        run_attack(RunPlan(**{**plan_run(payload, cfg).__dict__, "hooks": ()}), log=QUIET)
    assert isinstance(time_budget(0.0)[0], Reports) and isinstance(time_budget(2.0)[0], TimeBudget)
    t0 = time.time()
    slow_cfg = dataclasses.replace(cfg, iterations=100000, max_seconds=0.5)
    slow = run_attack(plan_run(payload, slow_cfg).with_hooks(time_budget(0.5)), log=QUIET).stats
    assert slow["stopped_by_max_seconds"] and 1 <= slow["iterations_done"] < 100000 and time.time() - t0 < 30


def test_registries_refuse_an_unknown_name_in_one_line():
    from trainrecon.attacks import METHODS, method_named
    from trainrecon.metrics.protocols import PROTOCOLS, match
    from trainrecon.training import TRAINERS, TrainConfig

    with pytest.raises(TrainreconError) as e:
        method_named("kkt-magic")
    assert str(e.value) == ("--method: unknown method 'kkt-magic' (available: haim, buzaglo-multiclass, "
                            "buzaglo-regression, loo-ntk, simulation)")
    with pytest.raises(TrainreconError, match=r"^experiment.trainer: unknown trainer 'sgd' \(available: kkt, "
                                              r"regression, ntk, polynomial\)$"):
        TRAINERS.get("sgd", "experiment.trainer")
    # what a saved record names, looked up without raising: a known name's config class, else None
    assert TRAINERS.config_named("kkt") is TrainConfig
    assert TRAINERS.config_named("sgd") is None and TRAINERS.config_named(["kkt"]) is None
    with pytest.raises(TrainreconError, match=r"^protocol: unknown scoring protocol 'ssim' \(available: haim_nn, "
                                              r"hungarian, loo_greedy, l2_permutation\)$"):
        match("ssim", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    assert list(PROTOCOLS) == PROTOCOLS.names() == ["haim_nn", "hungarian", "loo_greedy", "l2_permutation"]
    assert TRAINERS.for_config(TrainConfig()) == ("kkt", TRAINERS["kkt"]) and TRAINERS["kkt"][0] is TrainConfig
    assert METHODS.for_config(HaimConfig())[0] == "haim"
    with pytest.raises(TrainreconError, match="^no method takes a MergeConfig$"):
        METHODS.for_config(MergeConfig())
    r: Registry[int] = Registry("thing")
    r.register("a", 1)
    assert r.register("a", 1) == 1 and len(r) == 1 and "a" in r
    with pytest.raises(ValueError, match="a thing named 'a' is already registered"):
        r["a"] = 2
    with pytest.raises(TrainreconError, match=r"^unknown thing 'b' \(available: a\)$"):
        r.get("b")


def test_score_takes_a_reconstruction(tiny_victim, tiny_task):
    rec = reconstruct(payload_from_folder(tiny_victim), HaimConfig(iterations=10), log=QUIET)
    direct = trainrecon.score(rec, tiny_task.x_train, tiny_task.heldout_all)
    by_hand = trainrecon.score(rec.x.numpy(), tiny_task.x_train, tiny_task.heldout_all, mean=tiny_task.mean)
    assert direct.metrics == by_hand.metrics and direct.headline["n"] == 10
    moved = trainrecon.score(rec, tiny_task.x_train, tiny_task.heldout_all, mean=tiny_task.mean + 0.5)
    assert moved.metrics != direct.metrics  # an explicit mean is taken over the reconstruction's own


def test_one_ncc_for_matching_and_the_union():
    from trainrecon.metrics.matching import ncc_dist, ncc_similarity
    from trainrecon.pipeline.sweep import union_dedupe

    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 1, 6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64)
    pearson = np.corrcoef(a.reshape(5, -1).numpy(), b.reshape(4, -1).numpy())[:5, 5:]
    assert np.allclose(ncc_similarity(a, b).numpy(), pearson, atol=1e-12)
    assert np.allclose(ncc_similarity(a, 2.5 * a + 0.3).diagonal().numpy(), 1, atol=1e-12)
    assert torch.allclose(1 - ncc_dist(a, b) / (2 * 35), ncc_similarity(a, b))
    x = np.concatenate([a.numpy(), 3 * a[:2].numpy() - 1, np.full((1, 1, 6, 6), 0.25)])  # duplicates, a constant image
    kept, idx = union_dedupe(x, 0.99)
    assert idx.tolist() == [0, 1, 2, 3, 4] and np.array_equal(kept, x[:5])


def test_every_command_folder_goes_through_an_output_folder(tmp_path):
    folder = OutputFolder(tmp_path / "o", "evaluate", ("metrics.json",))
    with folder.claim() as held:  # claimed, then locked (re-entrant in one process)
        assert held is folder and (tmp_path / "o" / ".trainrecon.lock").exists()
        with folder:
            (tmp_path / "o" / "metrics.json").write_text("{}")
    (tmp_path / "o" / "model.safetensors").write_text("")
    with pytest.raises(TrainreconError, match="not a `trainrecon evaluate` folder.*a victim folder"):
        folder.claim()
    import pathlib

    src = pathlib.Path(trainrecon.__file__).parent
    callers = [p.relative_to(src).as_posix() for p in src.rglob("*.py")
               if any(w in p.read_text() for w in ("claim_folder(", "folder_lock("))]
    assert callers == ["provenance.py"], callers


def test_a_default_step_that_diverges_on_a_victim_at_its_own_scale_is_backed_off(monkeypatch):
    """trainrecon.reconstruct's plan probes the default lr on a victim attacked at its own scale (not homogeneous:
    a bias after the first layer) and divides it by 3 while the probe diverges (here: a probe diverges at lr > 0.002);
    the adapted record says so.  A given lr, a normalised victim and a method without a probe are left alone."""
    import trainrecon.api as api
    from trainrecon.attacks.plan import plan_run
    from trainrecon.errors import Diverged

    spec = MLPSpec([16, 8, 1], [True, True])  # bias after the first layer: attacked at its own scale
    payload = Payload(spec, init_params(spec, [1.0, 1.0], 0), n_train=4)
    probes = []

    def run(plan, **kw):
        probes.append(plan.cfg.lr)
        if plan.cfg.lr > 0.002:
            raise Diverged("diverged")

    monkeypatch.setattr(api, "run_attack", run)
    plan = api.steady(plan_run(payload, HaimConfig(iterations=50)))
    assert probes == pytest.approx([0.01, 0.01 / 3, 0.01 / 9]) and plan.cfg.lr == pytest.approx(0.01 / 9)
    assert plan.adapted["fields"]["lr"] == pytest.approx(0.01 / 9)
    assert "diverged within 20 iterations" in plan.adapted["reason"]
    probes.clear()
    assert api.steady(plan_run(payload, HaimConfig(iterations=50, lr=0.005))).cfg.lr == 0.005 and probes == []
    homogeneous = MLPSpec([16, 8, 1], [True, False])
    assert api.steady(plan_run(Payload(homogeneous, init_params(homogeneous, [1.0, 1.0], 0), n_train=4),
                               HaimConfig(iterations=50))).cfg.lr == 0.01 and probes == []


def test_run_scores_its_candidates_in_memory_as_evaluate_scores_the_file(tmp_path, monkeypatch):
    """One road to the headline: `run` (and every command that has just attacked) scores the Reconstruction it
    holds, never reading candidates.npz back; `evaluate` on that file (the file-input client of the same
    function) gives the same headline, protocols, exposure and provenance, shadow null included."""
    import trainrecon.pipeline.evaluation as evaluation
    from trainrecon.pipeline import evaluate_run, run_experiment

    case = tmp_path / "case.json"
    case.write_text(json.dumps({"task": {"dataset": "digits", "n_per_class": 2}, "shadow": True,
                                "train": {"hidden": [32], "lbfgs_iters": 5, "margin_schedule": [10.0]},
                                "attack": {"iterations": 6, "m": 4}}))

    def read_back(path, shape):
        raise AssertionError(f"{path} was read back")

    with monkeypatch.context() as mp:
        mp.setattr(evaluation, "read_candidates", read_back)
        run_experiment(case, tmp_path / "run", log=QUIET)
    run = tmp_path / "run"
    evaluate_run(run / "victim", [run / "reconstruction" / "candidates.npz"], tmp_path / "ev", log=QUIET,
                 null_files={"shadow": run / "shadow_reconstruction" / "candidates_in_victim_space.npz"})
    in_memory, from_file = (json.loads((d / "metrics.json").read_text()) for d in (run, tmp_path / "ev"))
    assert in_memory["headline"]["controls"]["shadow"] == from_file["headline"]["controls"]["shadow"]
    for key in ("headline", "protocols", "exposure", "paper_measures", "provenance", "candidate_files", "null_files",
                "collapse"):
        assert in_memory[key] == from_file[key], key
    with pytest.raises(AssertionError, match="read back"):  # the file road does read: the check above can fail
        with monkeypatch.context() as mp:
            mp.setattr(evaluation, "read_candidates", read_back)
            evaluate_run(run / "victim", [run / "reconstruction" / "candidates.npz"], tmp_path / "ev2", log=QUIET)


def test_records_written_before_a_field_existed_still_belong_and_a_changed_field_is_named(tmp_path, monkeypatch):
    """One rule for fields added since a folder's record was written (provenance.with_defaults): they count at
    their defaults, in an experiment folder's experiment.json and a victim folder's train.json alike; a field that
    really differs is refused in one line that names it, and nothing is written."""
    import trainrecon.pipeline.experiments as experiments
    from trainrecon.config import to_dict
    from trainrecon.data.tasks import TaskConfig
    from trainrecon.errors import TrainreconError
    from trainrecon.pipeline import run_experiment, train_victim
    from trainrecon.provenance import with_defaults
    from trainrecon.training import TrainConfig

    old = {"task": {"dataset": "digits"}, "trainer": {"hidden": [8]}, "note": 1}
    got = with_defaults(old, {"task": TaskConfig, "trainer": TrainConfig, "absent": TaskConfig})
    assert got["task"] == to_dict(TaskConfig(dataset="digits")) and got["trainer"]["hidden"] == [8]
    assert got["trainer"]["dtype"] == "float64" and got["note"] == 1 and "absent" not in got
    assert with_defaults({"task": {"no_such": 1}}, {"task": TaskConfig}) == {"task": {"no_such": 1}}
    assert with_defaults([1], {"task": TaskConfig}) == [1]

    case = tmp_path / "case.json"
    case.write_text(json.dumps({"task": {"dataset": "digits", "n_per_class": 2},
                                "train": {"hidden": [32], "lbfgs_iters": 5, "margin_schedule": [10.0]},
                                "attack": {"iterations": 6, "m": 4}}))
    run = tmp_path / "run"
    run.mkdir()
    written = {"task": {"dataset": "digits", "n_per_class": 2}, "trainer": "kkt",  # an older version's record
               "train": {"hidden": [32], "lbfgs_iters": 5, "margin_schedule": [10.0]}, "method": "haim",
               "attack": {"iterations": 6, "m": 4}}
    (run / "experiment.json").write_text(json.dumps(written))
    monkeypatch.setattr(experiments, "_run_experiment", lambda *a: {"ran": True})
    assert run_experiment(case, run, log=QUIET) == {"ran": True}
    (run / "experiment.json").write_text(json.dumps({**written, "train": {**written["train"], "hidden": [16]}}))
    before = (run / "experiment.json").read_bytes()
    with pytest.raises(TrainreconError, match=r"different experiment \(train.hidden"):
        run_experiment(case, run, log=QUIET)
    assert (run / "experiment.json").read_bytes() == before

    victim = tmp_path / "victim"
    task = TaskConfig(dataset="digits", n_per_class=2)
    cfg = TrainConfig(hidden=[8], lbfgs_iters=2, margin_schedule=[10.0])
    train_victim(task, cfg, victim, log=QUIET)
    info = json.loads((victim / "train.json").read_text())
    del info["trainer"]["dtype"], info["task"]["centring"]  # as a version without these fields wrote it
    (victim / "train.json").write_text(json.dumps(info))
    said = []
    train_victim(task, cfg, victim, log=said.append)
    assert any("already trained" in s for s in said)
    with pytest.raises(TrainreconError, match=r"trained differently \(trainer.seed"):
        train_victim(task, TrainConfig(hidden=[8], lbfgs_iters=2, margin_schedule=[10.0], seed=1), victim, log=QUIET)
