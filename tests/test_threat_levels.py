"""Threat levels as data: what an owner knows (theta_0, the recipe) imported, restricted by level, recorded; the
attacks that use theta_0 (the residual blind to theta_0, Loo's kernel at both ends) against dense oracles; the
simulation attack end to end; the method chosen for each level."""

import dataclasses
import html
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from trainrecon import reconstruct
from trainrecon.attacks import BuzagloMulticlassConfig, LooConfig, LooNTK, SimulationConfig, payload_from_folder
from trainrecon.attacks.choice import ADAM_FIRST_LAYER, FIRST_LAYER, REPLAY, WINNERS, default_attack
from trainrecon.errors import TrainreconError
from trainrecon.models.user_weights import import_module_victim
from trainrecon.models.recipe import Recipe, load_recipe
from trainrecon.models.stationarity import NTK
from trainrecon.models.parameters import flatten, unflatten
from trainrecon.models.victim import load_victim
from trainrecon.objective.weighted_sum import ProjectedDistance

FACTORY = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
"""
#: a network whose first layer is a convolution (not dense over the input): with the recipe, the simulation runs
CNN_FACTORY = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
"""
RECIPE = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "loss": "cross_entropy",
          "batch_size": 4, "epochs": 3, "data_order_seed": 7}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainrecon", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def owner_files(tmp_path, seed=3, factory=FACTORY):
    """What an owner keeps of a network trained as people train them: the trained state dict, the initial one (the
    factory after torch.manual_seed(seed)), the recipe and the factory; trained on 12 random 4x4 images."""
    (tmp_path / "factory.py").write_text(factory)
    ns: dict = {}
    exec(factory, ns)
    torch.manual_seed(seed)
    net = ns["build"]()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 16, generator=g) - 0.5, torch.arange(12) % 3
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        for k in range(0, 12, 4):
            opt.zero_grad()
            batch = x[k:k + 4] if isinstance(net[0], nn.Linear) else x[k:k + 4].reshape(-1, 1, 4, 4)
            nn.functional.cross_entropy(net(batch), y[k:k + 4]).backward()
            opt.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    save_file(init, str(tmp_path / "init.safetensors"))
    (tmp_path / "recipe.json").write_text(json.dumps(RECIPE))
    np.savez(tmp_path / "mean.npz", x=np.full((1, 4, 4), 0.5))
    return net, init


def owner_victim(tmp_path, name="v", init=True, recipe=True, n=None):
    """The owner's victim folder, imported in process (the CLI's --module route): theta_0 and the recipe as asked."""
    import_module_victim(tmp_path / "model.safetensors", f"{tmp_path / 'factory.py'}:build", [1, 4, 4], tmp_path / name,
                         tmp_path / "mean.npz", tmp_path / "init.safetensors" if init else None,
                         recipe=load_recipe(tmp_path / "recipe.json") if recipe else None, n=n)
    return tmp_path / name


@pytest.mark.slow
def test_the_owner_imports_theta0_and_the_recipe_by_every_route(tmp_path):
    net, init = owner_files(tmp_path)
    w, i, r, m = (tmp_path / f for f in ("model.safetensors", "init.safetensors", "recipe.json", "mean.npz"))
    runs = {
        "inferred": _cli("import", w, tmp_path / "v_inferred", "--input-shape", "1,4,4", "--mean", m, "--init", i,
                         "--recipe", r),
        "module": _cli("import", w, tmp_path / "v_module", "--module", f"{tmp_path / 'factory.py'}:build",
                       "--input-shape", "1,4,4", "--mean", m, "--init", i, "--recipe", r),
        "seed": _cli("import", w, tmp_path / "v_seed", "--module", f"{tmp_path / 'factory.py'}:build",
                     "--input-shape", "1,4,4", "--mean", m, "--init-seed", "3", "--recipe", r),
        "weights only": _cli("import", w, tmp_path / "v_plain", "--module", f"{tmp_path / 'factory.py'}:build",
                             "--input-shape", "1,4,4", "--mean", m),
    }
    assert all(p.returncode == 0 for p in runs.values()), {k: p.stderr for k, p in runs.items()}
    assert "threat levels up to 'recipe'" in runs["module"].stdout
    want = [init[k].double() for k in ("0.weight", "0.bias", "2.weight", "2.bias")]
    for name in ("v_inferred", "v_module", "v_seed"):
        v = load_victim(tmp_path / name)
        assert v.level == "recipe" and v.recipe == Recipe(**RECIPE)
        assert all(torch.equal(a, b) for a, b in zip(v.init_params, want)), name
    assert load_victim(tmp_path / "v_plain").level == "weights"
    assert Recipe(**RECIPE).total_steps(12) == 9


BAD_RECIPES = [
    ({**RECIPE, "lr": -1}, "recipe.lr: must be positive"),
    ({**RECIPE, "epochs": 0}, "give exactly one of them"),
    ({**RECIPE, "optimizer": "lbfgs"}, "recipe.json.optimizer: 'lbfgs' is not one of"),
    ({**RECIPE, "images": [1, 2]}, "unknown field 'images'"),
    ({k: v for k, v in RECIPE.items() if k != "loss"}, "recipe.json"),
    ({**RECIPE, "optimizer": "adam"}, "recipe.momentum / recipe.nesterov: apply to sgd"),
    ({**RECIPE, "label_offset": 0.1}, "recipe.label_offset: shifts mse targets only"),
]


def test_a_bad_recipe_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    owner_files(tmp_path)
    for recipe, message in BAD_RECIPES:
        (tmp_path / "recipe.json").write_text(json.dumps(recipe))
        with pytest.raises(TrainreconError, match=message.replace("(", r"\(")):
            load_recipe(tmp_path / "recipe.json")
    r = _cli("import", tmp_path / "model.safetensors", tmp_path / "v", "--input-shape", "1,4,4", "--recipe",
             tmp_path / "recipe.json")
    assert r.returncode == 2 and BAD_RECIPES[-1][1] in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_theta0_refusals_are_one_line(tmp_path):
    owner_files(tmp_path)
    save_file({"0.weight": torch.zeros(6, 15)}, str(tmp_path / "bad_init.safetensors"))
    cases = [
        (["--init-seed", "3"], "--init-seed: needs --module"),
        (["--init", tmp_path / "bad_init.safetensors"], "bad_init.safetensors"),
        (["--module", f"{tmp_path / 'factory.py'}:build", "--init", tmp_path / "init.safetensors", "--init-seed", "1"],
         "not both"),
    ]
    for k, (args, message) in enumerate(cases):
        r = _cli("import", tmp_path / "model.safetensors", tmp_path / f"v{k}", "--input-shape", "1,4,4", *args)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_threat_level_hides_what_it_does_not_disclose(tmp_path, one_thread):
    """At level 'weights' the attacker of a victim with theta_0 and a recipe has exactly what the attacker of the
    same weights imported alone has: the same candidates, bit for bit; the run records its level and keeps the
    victim's fingerprint; a level the victim lacks is refused in one line."""
    owner_files(tmp_path)
    owner_victim(tmp_path, "full")
    owner_victim(tmp_path, "plain", init=False, recipe=False)
    full, plain = payload_from_folder(tmp_path / "full"), payload_from_folder(tmp_path / "plain")
    low = full.at_level("weights")
    assert low.init_params is None and low.recipe is None and low.fingerprint() == full.fingerprint()
    assert full.at_level("init").recipe is None and full.at_level("init").init_params is not None
    cfg = BuzagloMulticlassConfig(m=6, iterations=15)
    a = reconstruct(full, BuzagloMulticlassConfig(m=6, iterations=15, given="weights"), log=lambda *_: None)
    b = reconstruct(plain, cfg, log=lambda *_: None)
    assert torch.equal(a.x, b.x) and a.config["payload"]["threat_level"] == "weights"
    assert a.config["victim"] == full.fingerprint() != plain.fingerprint()
    c = reconstruct(full, cfg, log=lambda *_: None)
    assert c.config["payload"]["threat_level"] == "recipe" and c.config["attack"]["remove_init"] == "project"
    assert "theta_0 is given" in c.config["adapted"]["reason"]
    with pytest.raises(TrainreconError, match="attack.given: 'init' needs the initial weights"):
        reconstruct(plain, BuzagloMulticlassConfig(m=6, iterations=5, given="init"), log=lambda *_: None)
    r = _cli("reconstruct", tmp_path / "plain", tmp_path / "r", "--given", "recipe", "--m", "6")
    assert r.returncode == 2 and "--given: 'recipe' needs" in r.stderr and not (tmp_path / "r").exists(), r.stderr


def test_the_residual_blind_to_theta0_is_a_least_squares_minimum():
    """ProjectedDistance = min over c_p of sum_p ||t_p - c_p d_p - s_p||^2 (dense least squares per tensor), and
    its u = dF/ds is autograd's."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (3,), (2, 3)]
    t = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    d = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    s = [torch.randn(sh, generator=g, dtype=torch.float64, requires_grad=True) for sh in shapes]
    F = ProjectedDistance(t, d)
    oracle = 0.0
    for tp, dp, sp in zip(t, d, s):
        r = (tp - sp).detach().reshape(-1, 1)
        c = torch.linalg.lstsq(dp.reshape(-1, 1), r).solution
        oracle += float(((r - dp.reshape(-1, 1) @ c) ** 2).sum())
    value = F.value(s)
    assert math.isclose(float(value), oracle, rel_tol=1e-12)
    auto = torch.autograd.grad(value, s)
    assert all(torch.allclose(a, b, rtol=1e-12) for a, b in zip(auto, F.grad([x.detach() for x in s])))
    assert math.isclose(F.baseline, float(F.value([torch.zeros_like(x) for x in t])), rel_tol=1e-12)


def test_loo_kernel_at_both_ends_averages_the_two_kernels(tmp_path):
    """kernel_at 'both': s = (grad at theta_0 + grad at theta_T) / 2 of the same weighted features (float64)."""
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path, recipe=False))
    cfg = dict(m=4, dtype="float64", normalise="none")
    both = LooNTK(p, LooConfig(kernel_at="both", **cfg))
    ends = [LooNTK(p, LooConfig(kernel_at=k, **cfg)) for k in ("init", "final")]
    cands = both.init(4)
    W = both.weights(cands.multipliers, 4)
    s = both.objective(0, cands).feature_sum(cands.x, W)
    s0, sT = (e.objective(0, cands).feature_sum(cands.x, W) for e in ends)
    n = len(s0)
    assert all(torch.allclose(s[i] + s[i + n], (s0[i] + sT[i]) / 2, rtol=1e-12, atol=1e-15) for i in range(n))
    # the refit residual of the candidates uses the same averaged gradients
    J = sum(NTK.per_sample_grads(p.spec, pt, cands.x, None) for pt in (p.init_params, p.params)) / 2
    assert J.shape[0] == 4 * 3 and both.refit_residual(cands) is not None
    flat = flatten(p.params)  # row (i, k) = grad_theta f_k(x_i), in blocks of 1 and of 3 inputs (3 rows each)
    dense = torch.autograd.functional.jacobian(lambda th: p.spec.forward(unflatten(p.spec, th), cands.x), flat)
    for chunk in (1, 3):
        assert torch.allclose(NTK.per_sample_grads(p.spec, p.params, cands.x, None, chunk=chunk),
                              dense.reshape(4 * 3, -1), rtol=1e-10, atol=1e-12)


def test_the_simulation_attack_runs_at_both_levels_and_chooses_its_learning_rate(tmp_path, one_thread):
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    rec = reconstruct(p, SimulationConfig(m=6, iterations=20, steps=3, log_every=5, sim_lr_factors=[1.0, 3.0],
                                          search_iterations=3, warm_iterations=10), log=lambda *_: None)
    report = rec.stats["method_report"]
    tried = {float(k): v for k, v in report["lr_search"]["tried"].items()}
    assert report["recipe_given"] and report["momentum"] == 0.9 and set(tried) == {0.1, 0.1 * 3.0}
    assert report["sim_lr"] == min(tried, key=tried.get)
    assert rec.history[-1]["relative_stationarity"] < rec.history[0]["relative_stationarity"]
    grid = [0.01, 0.1, 1.0]
    rec = reconstruct(p, SimulationConfig(m=6, iterations=10, steps=3, given="init", sim_lr_grid=grid,
                                          search_iterations=5, warm_iterations=10), log=lambda *_: None)
    search = rec.stats["method_report"]["lr_search"]
    found = {float(k): v for k, v in search["tried"].items()}
    assert search["sim_lr"] == min(found, key=found.get) == rec.stats["method_report"]["sim_lr"]
    assert rec.stats["method_report"]["optimizer"] == "sgd" and rec.stats["method_report"]["momentum"] == 0.0
    with pytest.raises(TrainreconError, match="trains its candidates from the initial weights"):
        reconstruct(p, SimulationConfig(m=6, iterations=5, given="weights"), log=lambda *_: None)


def test_the_learning_rate_search_takes_its_share_of_a_time_budget_and_no_more(tmp_path, one_thread, monkeypatch):
    """With attack.max_seconds the search stops each rate when its part (search_share x max_seconds / rates) is
    spent, and every rate runs as many iterations as the first (a clock that advances 1 s per reading); without a
    budget every rate runs search_iterations."""
    import trainrecon.attacks.simulation as simulation

    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    clock = iter(range(10**6))
    monkeypatch.setattr(simulation.time, "perf_counter", lambda: float(next(clock)))
    cfg = dict(m=6, steps=3, log_every=5, sim_lr_factors=[1.0, 3.0], search_iterations=50, warm_start="none")
    rec = reconstruct(p, SimulationConfig(iterations=5, max_seconds=40.0, search_share=0.25, **cfg), log=lambda *_: None)
    search = rec.stats["method_report"]["lr_search"]
    assert search["iterations_each"] == 6  # 5 s per rate; each reading advances 1 s: over after the 6th iteration
    rec = reconstruct(p, SimulationConfig(iterations=5, **{**cfg, "search_iterations": 4}), log=lambda *_: None)
    assert rec.stats["method_report"]["lr_search"]["iterations_each"] == 4


def test_the_simulation_runs_at_the_victims_own_scale(tmp_path, one_thread):
    """The recipe's learning rate holds at the victim's own scale: normalise 'auto' is refused where it would
    rescale theta (a homogeneous victim) and is the same run as 'none' where it would not (biases after the first
    layer).  It runs every step in its dtype: attack.autocast is refused in one line."""
    cfg = dict(m=6, iterations=3, steps=2, sim_lr=0.1, log_every=1, warm_iterations=5)
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    runs = [reconstruct(p, SimulationConfig(**cfg, normalise=mode), log=lambda *_: None) for mode in ("auto", "none")]
    assert torch.equal(runs[0].x, runs[1].x)
    (tmp_path / "h").mkdir()
    owner_files(tmp_path / "h", factory=FACTORY.replace("nn.Linear(6, 3)", "nn.Linear(6, 3, bias=False)"))
    p = payload_from_folder(owner_victim(tmp_path / "h"))
    reconstruct(p, SimulationConfig(**cfg), log=lambda *_: None)
    with pytest.raises(TrainreconError, match="attack.normalise: the simulation trains at the victim's own scale"):
        reconstruct(p, SimulationConfig(**cfg, normalise="auto"), log=lambda *_: None)
    with pytest.raises(TrainreconError, match="^attack.autocast: for the weighted-sum methods"):
        reconstruct(p, SimulationConfig(**cfg, dtype="float32", autocast="bfloat16"), log=lambda *_: None)


def test_tv_is_simudys_anisotropic_total_variation_and_loo_takes_it(tmp_path, one_thread):
    """TV(x) = mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]| per image (float64, by loops); Loo with
    tv > 0 records that prior, tv F(0) (1/m0) sum_j TV(x_j + mean), and moves its candidates otherwise."""
    from trainrecon.attacks.method import total_variation

    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 2 * 3 * 4, generator=g, dtype=torch.float64)
    img = X.reshape(3, 2, 3, 4)
    want = [sum(abs(float(im[c, i + 1, j] - im[c, i, j])) for c in range(2) for i in range(2) for j in range(4)) / 16
            + sum(abs(float(im[c, i, j + 1] - im[c, i, j])) for c in range(2) for i in range(3) for j in range(3)) / 18
            for im in img]
    assert torch.allclose(total_variation(X, (2, 3, 4)), torch.tensor(want, dtype=torch.float64), rtol=1e-12)
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    runs = {tv: reconstruct(p, LooConfig(m=6, iterations=5, log_every=1, tv=tv), log=lambda *_: None) for tv in (0, 0.5)}
    assert runs[0.5].history[0]["prior"] > runs[0].history[0]["prior"] + 1e-3 * runs[0].history[0]["total"]
    assert not torch.equal(runs[0].x, runs[0.5].x)


def test_the_simulations_tv_prior_is_unchanged_by_a_split_at_eps_0(tmp_path):
    """A split at eps = 0 (two children of half the weight) leaves the simulation's prior as it was, so splitting
    is judged by the match alone; without the weighting the child's own TV term would veto every split."""
    from trainrecon.attacks.simulation import Simulation

    owner_files(tmp_path)
    sim = Simulation(payload_from_folder(owner_victim(tmp_path)), SimulationConfig(m=6, tv=0.3, sim_lr=0.1, warm_start="none"))
    cands = sim.init(6)
    obj = sim.objective(0, cands)
    v = torch.randn(cands.x.shape[1], dtype=cands.x.dtype)
    for j in (0, 5):
        zero = cands.split(j, v, 0.0)
        assert float(obj.prior(zero.x, zero.multipliers)) == pytest.approx(float(obj.prior(cands.x, cands.multipliers)),
                                                                            rel=1e-12)
    moved = cands.split(0, v, 0.1)
    assert float(obj.prior(moved.x, moved.multipliers)) != pytest.approx(float(obj.prior(cands.x, cands.multipliers)))


def test_each_level_gets_its_bench_winner(tmp_path):
    """With theta_0 an MLP gets Loo's form on its first layer at both levels that give it; a CNN gets Loo's form on
    every layer with theta_0 alone and the simulation with the recipe, replaying its batches where the recipe
    records their order; with the weights alone, the KKT attack for the outputs."""
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    names = {level: default_attack(p, level)[0] for level in ("all", "recipe", "init", "weights")}
    assert names["all"] == names["recipe"] == names["init"] == "loo-ntk" and names["weights"] == "buzaglo-multiclass"
    assert default_attack(p, "init")[1] == {**FIRST_LAYER[0], "given": "init"}
    assert default_attack(p, "recipe")[1] == {**FIRST_LAYER[0], "given": "recipe"}
    assert p.spec.first_layer_dense()
    adam = dataclasses.replace(p.recipe, optimizer="adam", momentum=0.0, lr=1e-3)  # Adam's: more, shorter restarts
    q = dataclasses.replace(p, recipe=adam)
    assert default_attack(q, "recipe")[1] == {**FIRST_LAYER[0], **ADAM_FIRST_LAYER[0], "given": "recipe"}
    assert default_attack(q, "init")[1] == {**FIRST_LAYER[0], "given": "init"}  # the optimiser is not disclosed
    runs = [reconstruct(p, LooConfig(**{**fields, "iterations": 20, "m": 6}), log=lambda *_: None)
            for fields in (default_attack(p, level)[1] for level in ("init", "recipe"))]
    assert torch.equal(runs[0].x, runs[1].x)  # the recipe adds nothing this attack uses: the same candidates
    assert [r.config["payload"]["threat_level"] for r in runs] == ["init", "recipe"]
    with pytest.raises(TrainreconError, match="--given: 'recipe' needs"):
        default_attack(p.at_level("weights"), "recipe")
    assert load_recipe(tmp_path / "recipe.json") == p.recipe
    cnn = tmp_path / "cnn"
    cnn.mkdir()
    owner_files(cnn, factory=CNN_FACTORY)
    c = payload_from_folder(owner_victim(cnn))
    assert not c.spec.first_layer_dense()
    assert default_attack(c, "init")[1] == {**WINNERS["init"][1], "given": "init"}
    assert default_attack(c, "recipe")[0] == "simulation"
    assert "replay_epochs" not in default_attack(c, "recipe")[1]  # n is not disclosed: no slot per training image
    told = payload_from_folder(owner_victim(cnn, "told", n=12))  # its recipe records the order's seed: a replay
    assert default_attack(told, "recipe")[1] == {**REPLAY[0], "given": "recipe"}
    recipe = json.loads((cnn / "recipe.json").read_text())
    (cnn / "recipe.json").write_text(json.dumps({k: v for k, v in recipe.items() if k != "data_order_seed"}))
    unordered = payload_from_folder(owner_victim(cnn, "unordered", n=12))
    assert default_attack(unordered, "recipe")[1] == {**WINNERS["recipe"][1], "given": "recipe"}
    (cnn / "recipe.json").write_text(json.dumps({**recipe, "batch_size": 0, "data_order_seed": None}))
    full = payload_from_folder(owner_victim(cnn, "full", n=12))  # the full batch needs no seed
    assert default_attack(full, "recipe")[1]["replay_epochs"] == 20
    (cnn / "recipe.json").write_text(json.dumps({**recipe, "loss": "mse"}))  # learned labels need a likelihood
    squared = payload_from_folder(owner_victim(cnn, "mse", n=12))
    assert default_attack(squared, "recipe")[1] == {**WINNERS["recipe"][1], "given": "recipe"}
    with pytest.raises(TrainreconError, match="^attack.labels: learned soft labels need a likelihood loss .* not mse$"):
        reconstruct(squared, SimulationConfig(**{**REPLAY[0], "given": "recipe", "iterations": 1}), log=lambda *_: None)


@pytest.mark.slow
def test_the_owners_audit_gives_a_verdict_per_level(tmp_path):
    """`trainrecon audit`: every level the victim supports, its default attack under a wall-clock budget, every
    control, one page with the verdict per level; a rerun with other settings is refused in one line."""
    owner_files(tmp_path)
    owner_victim(tmp_path)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(12, 16, generator=g), torch.arange(12) % 3  # the owner's training images (as trained: x - 0.5)
    np.savez(tmp_path / "truth.npz", x=x.reshape(12, 1, 4, 4).numpy(), y=y.numpy())
    np.savez(tmp_path / "heldout.npz", x=np.random.default_rng(1).random((84, 1, 4, 4)))
    args = ["audit", tmp_path / "v", "--out", tmp_path / "audit", "--truth", tmp_path / "truth.npz", "--heldout",
            tmp_path / "heldout.npz", "--minutes", "0.02"]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert [row["level"] for row in result["levels"]] == ["weights", "init", "recipe"]
    assert [row["method"] for row in result["levels"]] == ["buzaglo-multiclass", "loo-ntk", "loo-ntk"]
    page = (tmp_path / "audit" / "report.html").read_text()
    for row in result["levels"]:
        assert (tmp_path / "audit" / row["report"]).is_file() and html.escape(row["verdict"]) in page
        assert row["controls"]["positive"] == 12
    assert "the weights, the initial weights and the training recipe" in result["levels"][2]["verdict"]
    r = _cli(*args[:-1], "0.5")
    assert r.returncode == 2 and "holds an audit of other inputs" in r.stderr, r.stderr


def test_a_replayed_run_keeps_what_it_chose():
    """The truth-start control replays a run with what it chose fixed: the simulation's searched rate becomes
    sim_lr (no second search); a given sim_lr, a run without a report and other methods keep their config."""
    from trainrecon.attacks import HaimConfig, METHODS

    sim = METHODS["simulation"]
    assert sim.replayed(SimulationConfig(), {"sim_lr": 0.3}).sim_lr == 0.3
    assert sim.replayed(SimulationConfig(sim_lr=0.1), {"sim_lr": 0.3}).sim_lr == 0.1
    assert sim.replayed(SimulationConfig(), None).sim_lr == 0.0
    assert sim.replayed(SimulationConfig(), None).warm_start == "none"  # a replay starts where it is put
    assert METHODS["haim"].replayed(HaimConfig(), {"sim_lr": 0.3}) == HaimConfig()


def test_the_simulation_starts_where_loos_attack_ends_in_slots_of_its_label(tmp_path, one_thread, monkeypatch):
    """warm_start: Loo's NTK attack runs first, in memory (its config: this run's seed and level, m = 2 x m,
    warm_iterations); each slot takes the unused Loo candidate with the largest coefficient in the slot's label's
    column (here K = 3 outputs, slots in class blocks); the report says so; a resumed run does not run it again."""
    import trainrecon.attacks.simulation as simulation
    from trainrecon.hooks import AttackHook

    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))

    class First(AttackHook):
        key = "first"

        def before_loop(self, step):
            self.x = step.cands.x.clone()

    first = First()
    cfg = SimulationConfig(m=6, iterations=4, steps=2, sim_lr=0.1, log_every=1, warm_iterations=15, checkpoint_every=2)
    rec = reconstruct(p, cfg, tmp_path / "run", log=lambda *_: None, stop_after=2, hooks=[first])
    loo = reconstruct(p, LooConfig(m=12, iterations=15, log_every=10**9, checkpoint_every=10**9, dtype="float64"),
                      log=lambda *_: None)
    w, used = loo.multipliers.numpy(), []
    for j, label in enumerate([0, 0, 1, 1, 2, 2]):
        k = next(int(k) for k in np.argsort(-w[:, label], kind="stable") if int(k) not in used)
        used.append(k)
        assert torch.allclose(first.x[j].double(), loo.x[k].reshape(-1), atol=1e-6), j
    assert rec.stats["method_report"]["warm_start"] == {**rec.stats["method_report"]["warm_start"], "method": "loo-ntk",
                                                        "iterations": 15, "started": 6, "of": 6}
    ran = []
    monkeypatch.setattr(simulation, "run_attack", lambda *a, **k: ran.append(1))
    again = reconstruct(p, cfg, tmp_path / "run", resume=True, log=lambda *_: None)
    assert not ran and again.stats["method_report"]["warm_start"] == rec.stats["method_report"]["warm_start"]


def test_the_recipes_batch_order_is_a_seeded_dataloaders():
    """Recipe.batch_order: each epoch torch.randperm(n, generator) of one generator seeded with data_order_seed
    (or, data_order 'dataloader', a DataLoader(shuffle=True) on that generator), cut into batches (the last one
    shorter) and at the given number of steps; the full batch needs no seed; mini-batches without a seed are refused
    in one line."""
    r = Recipe(optimizer="adam", lr=1e-3, loss="logistic", batch_size=4, epochs=3, data_order_seed=11)
    g = torch.Generator().manual_seed(11)
    want = [perm[k:k + 4] for perm in [torch.randperm(10, generator=g) for _ in range(3)] for k in (0, 4, 8)]
    got = r.batch_order(10, r.total_steps(10))
    assert len(got) == len(want) == 9 and all(torch.equal(a, b) for a, b in zip(got, want))
    assert [len(b) for b in got[:3]] == [4, 4, 2]
    assert all(torch.equal(a, b) for a, b in zip(r.batch_order(10, 5), want[:5])) and len(r.batch_order(10, 5)) == 5
    loader = torch.utils.data.DataLoader(torch.arange(10), batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(11))
    want = [b for _ in range(3) for b in loader]  # a DataLoader draws a worker seed from g before each epoch
    got = dataclasses.replace(r, data_order="dataloader").batch_order(10, 9)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and not torch.equal(got[3], r.batch_order(10, 9)[3])
    full = Recipe(optimizer="sgd", lr=0.1, loss="logistic", epochs=2)
    assert all(torch.equal(b, torch.arange(10)) for b in full.batch_order(10, 2))
    with pytest.raises(TrainreconError, match="^recipe.data_order_seed: replaying"):
        Recipe(optimizer="sgd", lr=0.1, loss="logistic", batch_size=4, epochs=2).batch_order(10, 3)


ADAM_FACTORY = FACTORY.replace("nn.Linear(6, 3))", "nn.Linear(6, 3)).double()")


def adam_owner(tmp_path, seed=7, name="v", recorded=None):
    """An owner who trains in float64 with Adam on mini-batches of 4 of 12 images in a seeded DataLoader's order
    (3 epochs), and records that seed (or ``recorded``) in the recipe; returns the victim folder and the training
    set."""
    (tmp_path / "factory.py").write_text(ADAM_FACTORY)
    ns: dict = {}
    exec(ADAM_FACTORY, ns)
    torch.manual_seed(3)
    net = ns["build"]()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(12, 16, generator=g, dtype=torch.float64) - 0.5), torch.arange(12) % 3
    loader = torch.utils.data.DataLoader(torch.arange(12), batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(3):
        for b in loader:  # as people load data: recorded as data_order 'dataloader'
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    save_file(init, str(tmp_path / "init.safetensors"))
    (tmp_path / "recipe.json").write_text(json.dumps({"optimizer": "adam", "lr": 0.05, "loss": "cross_entropy",
                                                      "batch_size": 4, "epochs": 3,
                                                      "data_order_seed": seed if recorded is None else recorded,
                                                      "data_order": "dataloader"}))
    np.savez(tmp_path / "mean.npz", x=np.full((1, 4, 4), 0.5))
    return owner_victim(tmp_path, name, n=12), x, y


@pytest.mark.parametrize("removal", ["subtract", "project"])
def test_a_replay_of_the_whole_recipe_from_the_truth_matches_exactly(tmp_path, removal):
    """attack.replay_epochs: the recipe's own batches at its own rate, candidate j for training image j. Started at
    the training set with its labels (the truth-start control's start), a replay of all 3 epochs is the owner's
    training: D = 0 to rounding. Two epochs, or another batch order, or other images, match worse."""
    from trainrecon.attacks.plan import plan_run

    folder, x, y = adam_owner(tmp_path)
    p = payload_from_folder(folder)

    def match(epochs, images=x, labels=y):
        cfg = SimulationConfig(replay_epochs=epochs, labels="learned", dtype="float64", remove_init=removal,
                               warm_start="none")
        plan = plan_run(p, cfg)
        attack = plan.method(plan.attacked, plan.cfg)
        cands = attack.init(plan.m)
        assert torch.equal(cands.multipliers, torch.full((12, 3), 1 / 3, dtype=torch.float64))  # labels unknown
        assert attack.start_at(cands, images, labels.numpy()) == list(range(12))
        assert torch.equal(cands.multipliers.argmax(1), labels)
        obj = attack.objective(0, cands)
        assert len(obj.batches(12)) == 3 * epochs and attack.report()["sim_lr"] == 0.05
        return obj.loss_of(cands.x, cands.multipliers) - float(obj.prior(cands.x, cands.multipliers))

    assert match(3) < 1e-12
    assert match(2) > 1e-3
    assert match(3, x[torch.randperm(12, generator=torch.Generator().manual_seed(1))]) > 1e-3
    folder, _, _ = adam_owner(tmp_path, seed=8, name="v8", recorded=7)  # trained in another order than recorded
    p = payload_from_folder(folder)
    assert match(3) > 1e-3


def test_the_simulations_memory_estimate_counts_its_graph_and_refuses_what_does_not_fit(tmp_path, monkeypatch):
    """The simulation keeps every simulated step's graph for the backward pass: item x S (6 P + 4 b sum_l a_l), S
    steps of b rows (a replay: the recipe's batch; the coarse simulation: all m or sim_batch), or k steps at a time
    (checkpoint_steps) item (ceil(S / k) 4 P + k (6 P + 4 b sum_l a_l)); the estimate is the generic one plus the
    least graph a run can keep; a run that would not fit even so is refused in one line before any work."""
    import trainrecon.runtime
    from trainrecon.attacks.method import Method
    from trainrecon.attacks.plan import plan_run
    from trainrecon.attacks.simulation import Simulation

    folder, _, _ = adam_owner(tmp_path)  # n = 12, batch 4: 3 steps an epoch, 3 epochs
    p = payload_from_folder(folder)
    spec = p.spec
    P, acts = spec.n_params(), sum(spec.activation_sizes())

    def cfg_of(**kw):
        return plan_run(p, SimulationConfig(warm_start="none", dtype="float64", labels="learned", **kw)).cfg

    def graph(k=0, **kw):
        return Simulation.graph_bytes(p, 12, cfg_of(**kw), k)

    assert graph(replay_epochs=2) == 8 * 6 * (6 * P + 4 * 4 * acts)
    assert graph(replay_epochs=9) == 8 * 9 * (6 * P + 4 * 4 * acts)  # at most the whole training's 9 steps
    assert graph(steps=5) == 8 * 5 * (6 * P + 4 * 12 * acts)
    assert graph(steps=5, sim_batch=3) == 8 * 5 * (6 * P + 4 * 3 * acts)
    assert graph(2, replay_epochs=3) == 8 * (5 * 4 * P + 2 * (6 * P + 4 * 4 * acts))  # 9 steps, 2 at a time
    assert graph(9, replay_epochs=3) == graph(0, replay_epochs=3)  # k >= S: the whole graph
    k = Simulation.least_segment(p, 12, cfg_of(replay_epochs=3))
    assert 0 < k < 9 and all(graph(k, replay_epochs=3) <= graph(j, replay_epochs=3) for j in range(10))
    for kw in ({"replay_epochs": 3}, {"replay_epochs": 3, "checkpoint_steps": 4}):
        cfg = cfg_of(**kw)
        assert Simulation.memory_bytes(p, 12, cfg) - Method.memory_bytes(p, 12, cfg) == \
            Simulation.graph_bytes(p, 12, cfg, cfg.checkpoint_steps or k)
    free = int(graph(replay_epochs=3))  # the whole graph of 9 steps, and nothing besides
    monkeypatch.setattr(trainrecon.runtime, "available_bytes", lambda device="cpu": free)
    plan_run(p, SimulationConfig(warm_start="none", dtype="float64", labels="learned", steps=1, sim_batch=1))
    with pytest.raises(TrainreconError, match=r"^attack with m = 12 candidates: needs about .* GiB, only .* GiB"):
        reconstruct(p, SimulationConfig(replay_epochs=3, labels="learned", warm_start="none", dtype="float64",
                                        checkpoint_steps=9), log=lambda *_: None)
    with pytest.raises(TrainreconError, match=r"^attack.checkpoint_steps: must be >= 0"):
        SimulationConfig(checkpoint_steps=-1)


def test_a_replay_that_would_not_fit_keeps_its_graph_in_segments_and_finds_the_same_candidates(tmp_path, monkeypatch,
                                                                                                one_thread):
    """checkpoint_steps 0 (the default): a replay whose whole graph fits keeps it (k = 0, the code of before);
    with less memory free than that, the run keeps it k steps at a time (the least graph, loss.json's method_report
    says which k) instead of being refused, and its candidates are those of the whole graph's run to rounding
    (float64, 5 iterations)."""
    import trainrecon.runtime
    from trainrecon.attacks.method import Method
    from trainrecon.attacks.simulation import Simulation

    folder, _, _ = adam_owner(tmp_path)
    p = payload_from_folder(folder)
    cfg = SimulationConfig(replay_epochs=3, labels="learned", warm_start="none", dtype="float64", iterations=5)
    whole = reconstruct(p, cfg, log=lambda *_: None)
    assert whole.stats["method_report"]["checkpoint_steps"] == 0
    need = Method.memory_bytes(p, 12, cfg) + Simulation.graph_bytes(p, 12, cfg, 0)
    monkeypatch.setattr(trainrecon.runtime, "available_bytes", lambda device="cpu": int(need) - 1)
    seg = reconstruct(p, cfg, log=lambda *_: None)
    k = seg.stats["method_report"]["checkpoint_steps"]
    assert k == Simulation.least_segment(p, 12, cfg) and 0 < k < 9
    assert torch.allclose(seg.x, whole.x, rtol=1e-10, atol=1e-12)
    assert torch.allclose(seg.multipliers, whole.multipliers, rtol=1e-10, atol=1e-12)
    assert not torch.equal(seg.x, reconstruct(p, dataclasses.replace(cfg, iterations=4), log=lambda *_: None).x)


def test_the_graphs_choice_counts_concurrent_runs_and_sample_splittings_growth(tmp_path, monkeypatch):
    """Each of ``copies`` runs at once (a sweep's workers) finds the memory free now and keeps its whole graph if it
    fits there: the plan asks copies x that, and refuses what would not fit, rather than counting on segments no
    worker would choose.  A run whose sample splitting may double m chooses for the largest m."""
    import trainrecon.runtime
    from trainrecon.attacks.method import Method
    from trainrecon.attacks.plan import plan_run
    from trainrecon.attacks.simulation import Simulation
    from trainrecon.refinement.settings import SplitConfig

    folder, _, _ = adam_owner(tmp_path)
    p = payload_from_folder(folder)
    cfg = plan_run(p, SimulationConfig(replay_epochs=3, labels="learned", warm_start="none", dtype="float64")).cfg
    need = Method.memory_bytes(p, 12, cfg) + Simulation.graph_bytes(p, 12, cfg, 0)
    monkeypatch.setattr(trainrecon.runtime, "available_bytes", lambda device="cpu": int(need))
    assert plan_run(p, cfg).m == 12  # one run: its whole graph fits
    with pytest.raises(TrainreconError, match=r"^attack with m = 12 candidates, 2 at once: needs about"):
        plan_run(p, cfg, copies=2)
    coarse = SimulationConfig(steps=6, warm_start="none", dtype="float64", labels="fixed")
    grow = dataclasses.replace(coarse, split=SplitConfig(enabled=True, mode="grow", max_factor=2.0))
    at_m = Method.memory_bytes(p, 12, coarse) + Simulation.graph_bytes(p, 12, coarse, 0)
    at_2m = Method.memory_bytes(p, 24, coarse) + Simulation.graph_bytes(p, 24, coarse, 0)
    assert at_2m > at_m
    monkeypatch.setattr(trainrecon.runtime, "available_bytes", lambda device="cpu": int(at_m))
    for c, segmented in ((coarse, False), (grow, True)):
        plan = plan_run(p, c)
        attack = plan.method(plan.attacked, plan.cfg)
        attack.init(plan.m)
        assert (attack.segment > 0) == segmented


def test_a_replay_runs_and_records_itself_and_is_refused_in_one_line_where_it_cannot_run(tmp_path, one_thread):
    folder, x, y = adam_owner(tmp_path)
    p = payload_from_folder(folder)
    rec = reconstruct(p, SimulationConfig(replay_epochs=2, labels="learned", iterations=6, log_every=1,
                                          warm_start="none", dtype="float64"), log=lambda *_: None)
    report = rec.stats["method_report"]
    assert (report["steps"], report["replay_epochs"], report["sim_lr"], report["lr_search"]) == (6, 2, 0.05, None)
    assert rec.history[-1]["stationarity"] < rec.history[0]["stationarity"] and rec.m == 12
    cfg = dict(replay_epochs=1, labels="learned", iterations=1)
    for bad, msg in [({**cfg, "given": "init"}, "^attack.replay_epochs: replays the recipe's own batches"),
                     ({**cfg, "m": 6}, "^attack.m: a replay's candidate j stands for training image j; need m = n"),
                     ({**cfg, "labels": "fixed"}, "^attack.labels: in a replay"),
                     ({**cfg, "sim_batch": 4}, "^attack.replay_epochs: a replay's candidate j"),
                     ({**cfg, "replay_epochs": -1}, "^attack.replay_epochs: must be >= 0")]:
        with pytest.raises(TrainreconError, match=msg):
            reconstruct(p, SimulationConfig(**bad), log=lambda *_: None)
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    del recipe["data_order_seed"]
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    p = payload_from_folder(owner_victim(tmp_path, "noseed", n=12))
    with pytest.raises(TrainreconError, match="^recipe.data_order_seed: replaying"):
        reconstruct(p, SimulationConfig(**cfg), log=lambda *_: None)
