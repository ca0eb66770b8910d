"""The attack design: layering, the threat model, one-file methods, candidate sets, the objective's parts."""

import ast
import dataclasses
import pathlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch.func import grad

from conftest import build_objective
from trainrecon import reconstruct
from trainrecon.attacks import CandidateSet, Haim, HaimConfig, METHODS, method_named, payload_from_folder
from trainrecon.attacks.buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig
from trainrecon.attacks.loo import LooConfig, LooNTK
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import init_params
from trainrecon.models.victim import Victim

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "trainrecon"

# what each layer may not import: data -> victim (models) -> objective -> refinement -> hooks -> attack / training
# -> sweeps (attacker side) -> evaluation (metrics); a sweep sees the training set only through a callable the
# pipeline hands it.  An entry "pkg.module" forbids that module alone: the attacks carry the splitting settings
# (refinement.settings) in their config and know the hook interface (hooks.interface), never the refinement or its
# hooks, which attach to a run through api.py.
FORBIDDEN = {
    "data": {"hooks", "models", "objective", "refinement", "training", "attacks", "sweeps", "metrics", "pipeline",
             "identifiability", "cli", "api"},
    "models": {"hooks", "objective", "refinement", "training", "attacks", "sweeps", "metrics", "pipeline",
               "identifiability", "cli", "api"},
    "objective": {"hooks", "data", "models", "refinement", "training", "attacks", "sweeps", "metrics", "pipeline",
                  "identifiability", "cli", "api", "pictures"},
    "refinement": {"hooks", "data", "training", "attacks", "sweeps", "metrics", "pipeline", "identifiability", "cli",
                   "api", "pictures"},
    "hooks": {"data", "training", "attacks", "sweeps", "metrics", "pipeline", "identifiability", "cli", "api",
              "pictures", "runfolder"},
    "training": {"attacks", "sweeps", "metrics", "pipeline", "cli", "api"},
    "attacks": {"data", "training", "sweeps", "metrics", "pipeline", "identifiability", "cli", "api",
                "refinement.splitting", "refinement.merging", "hooks.refinement", "hooks.pruning", "hooks.start",
                "pictures", "runfolder"},
    "sweeps": {"data", "training", "metrics", "pipeline", "identifiability", "cli"},
    "metrics": {"hooks", "attacks", "objective", "refinement", "training", "sweeps", "models", "pipeline",
                "identifiability", "cli", "api"},
    "identifiability": {"hooks", "attacks", "objective", "refinement", "sweeps", "metrics", "pipeline", "cli", "api"},
}
# the runner knows no refinement at all, not even its settings' module (hooks, attached by api.py); it draws no
# picture and knows no folder (a run folder is a store it is handed, runfolder.py)
FORBIDDEN_MODULES = {"attacks/runner.py": {"refinement", "pictures", "runfolder", "hooks.budget"}}
SUBPACKAGES = {"data", "models", "objective", "refinement", "hooks", "training", "attacks", "sweeps", "metrics",
               "pipeline", "identifiability"}
# top-level modules with a place in the layering: what an attack returns depends on nothing of trainrecon (the
# attack that makes it, the folder that stores it and the scoring that reads it meet there); the run folder knows
# files, locks and records, not methods, models or data; the registry mechanism knows only its errors
FORBIDDEN_TOP = {
    "reconstruction.py": SUBPACKAGES | {"cli", "api", "checkpoint", "config", "runfolder", "pictures", "runtime",
                                        "atomic", "registry", "audit_report", "provenance"},
    # provenance decides what a run is and what belongs together from records, files and locks: no checkpoint,
    # run folder, method, model or data
    "provenance.py": SUBPACKAGES | {"cli", "api", "checkpoint", "runfolder", "pictures", "runtime", "audit_report",
                                    "reconstruction", "registry"},
    "checkpoint.py": SUBPACKAGES | {"cli", "api", "runfolder", "pictures", "runtime", "audit_report",
                                    "reconstruction", "registry", "provenance"},
    "runfolder.py": SUBPACKAGES | {"cli", "api", "runtime", "audit_report"},
    "registry.py": SUBPACKAGES | {"cli", "api", "checkpoint", "config", "runfolder", "pictures", "runtime",
                                  "reconstruction", "atomic", "audit_report", "provenance"},
}


def imported_modules(path: pathlib.Path, root: pathlib.Path = SRC.parent) -> set[str]:
    """What one source file imports from trainrecon, as "subpackage" and "subpackage.module" (absolute or
    relative imports; ``from .. import x`` counts as the subpackage or module x)."""
    rel = path.relative_to(root).with_suffix("").parts
    pkg = list(rel[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = (pkg[: len(pkg) - node.level + 1] if node.level else []) + (node.module or "").split(".")
            parts = [p for p in parts if p]
            if parts[:1] == ["trainrecon"]:
                targets = [parts[1:]] if len(parts) > 1 else [[a.name] for a in node.names]
                for t in targets:
                    out |= {".".join(t[:k]) for k in (1, 2) if len(t) >= k}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("trainrecon."):
                    t = a.name.split(".")[1:]
                    out |= {".".join(t[:k]) for k in (1, 2) if len(t) >= k}
    return out


def test_every_subpackage_has_a_layering_rule():
    subpackages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    exempt = {"pipeline"}  # the top: it composes everything below it
    assert subpackages - exempt <= set(FORBIDDEN), sorted(subpackages - exempt - set(FORBIDDEN))


def test_import_graph_has_no_back_references():
    bad = []
    for layer, forbidden in FORBIDDEN.items():
        for f in (SRC / layer).rglob("*.py"):
            hits = imported_modules(f) & (forbidden | FORBIDDEN_MODULES.get(str(f.relative_to(SRC)), set()))
            if hits:
                bad.append(f"{f.relative_to(SRC)} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


def test_top_level_modules_keep_their_place():
    bad = [f"{name} imports {sorted(imported_modules(SRC / name) & forbidden)}"
           for name, forbidden in FORBIDDEN_TOP.items() if imported_modules(SRC / name) & forbidden]
    assert not bad, "\n".join(bad)
    # the runner reaches its folder through the store it is handed, and no picture code
    runner = imported_modules(SRC / "attacks" / "runner.py")
    assert "reconstruction" in runner and not runner & {"pictures", "runfolder", "atomic"}


def test_the_layering_check_sees_a_back_reference(tmp_path):
    """The checker itself: relative imports of a forbidden package or module are found."""
    assert "refinement" not in imported_modules(SRC / "attacks" / "runner.py")
    fake = tmp_path / "trainrecon" / "attacks" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..refinement.splitting import split_round\nfrom .. import pipeline\nimport trainrecon.cli\n")
    assert {"refinement", "refinement.splitting", "pipeline", "cli"} <= imported_modules(fake, tmp_path)


def test_the_attack_runs_with_every_data_loader_broken(tmp_path, tiny_victim, monkeypatch):
    """The threat model: reconstruct sees the payload only; any access to the training data fails loudly."""
    import trainrecon.data.formats as formats
    import trainrecon.data.tasks as tasks

    def forbidden(*a, **k):
        raise AssertionError("the attack touched the training data")

    for mod, names in ((tasks, ["build_task", "load_split", "labelled_npz"]),
                       (formats, ["read_npz", "read_idx", "read_cifar_batch", "to_float_nchw"])):
        for name in names:
            monkeypatch.setattr(mod, name, forbidden)
    payload = payload_from_folder(tiny_victim)
    assert payload.n_train == 10 and payload.record()["training_labels"] == "not given"
    res = reconstruct(payload, HaimConfig(iterations=5, checkpoint_every=5), tmp_path / "rec", log=lambda *a: None)
    assert res.finished and res.m == 20
    with pytest.raises(AssertionError, match="training data"):
        tasks.build_task(None)
    hidden = payload_from_folder(tiny_victim, disclose_n=False)
    assert hidden.n_train is None
    from trainrecon.errors import TrainreconError

    with pytest.raises(TrainreconError, match="not disclosed"):
        reconstruct(hidden, HaimConfig(iterations=5), tmp_path / "rec2", log=lambda *a: None)


# a toy method, defined in this one file: the registry, the runner and the checkpoint take it as it is
from trainrecon.attacks.method import AttackConfig, Method, register  # noqa: E402
from trainrecon.attacks.optim import SGDMomentum  # noqa: E402
from trainrecon.models import Surrogate  # noqa: E402
from trainrecon.models.stationarity import WEIGHT_DECAY  # noqa: E402


@dataclass
class ToyConfig(AttackConfig):
    iterations: int = 6


class Toy(Method):
    name = "toy-softplus"
    Config = ToyConfig
    form = WEIGHT_DECAY

    def weights(self, M, m0):
        return (M / m0)[:, None]

    def prior(self, X, M):
        return (X**2).sum() * 1e-3

    def surrogate(self, it):
        return Surrogate("softplus", 5.0)

    def multipliers(self, m, g):
        return torch.randn(m, generator=g, dtype=torch.float64)

    def optimisers(self):
        return SGDMomentum(self.cfg.lr, 0.0), SGDMomentum(self.cfg.lr, 0.0)


@pytest.fixture
def toy_method():
    """Toy, registered for one test and taken out of the global registry after it."""
    assert Toy.name not in METHODS
    register(Toy)
    try:
        yield Toy
    finally:
        del METHODS[Toy.name]


def test_a_toy_method_defined_in_one_file_runs(tmp_path, tiny_victim, toy_method):
    assert method_named("toy-softplus") is Toy and "toy-softplus" in METHODS
    res = reconstruct(payload_from_folder(tiny_victim), ToyConfig(m=4, checkpoint_every=3), tmp_path / "toy",
                      log=lambda *a: None)
    assert res.method == "toy-softplus" and res.finished
    assert np.load(tmp_path / "toy" / "candidates.npz")["x"].shape == (4, 1, 8, 8)


def test_the_toy_method_is_gone_after_its_test():
    """The registry holds the package's methods only: no test leaves one behind."""
    assert set(METHODS) == {"haim", "buzaglo-multiclass", "buzaglo-regression", "loo-ntk", "simulation"}


# candidate sets ----------------------------------------------------------------------------------------------------

def test_split_take_concat_and_round_trip():
    g = torch.Generator().manual_seed(0)
    c = CandidateSet(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.tensor([1.0, 2.0, 3.0, 4.0]),
                     torch.tensor([-1.0, -1.0, 1.0, 1.0]), {"buf": torch.randn(4, 3, generator=g)},
                     {"buf": torch.randn(4, generator=g), "t": torch.tensor(7.0)})
    v = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    s = c.split(2, v, 0.1)
    assert s.m == 5 and s.m0 == 4
    assert torch.allclose(s.x[2], c.x[2] + 0.1 * v) and torch.allclose(s.x[4], c.x[2] - 0.1 * v)
    assert s.multipliers[2] == s.multipliers[4] == 1.5 and s.multipliers.sum() == c.multipliers.sum()
    assert s.labels[4] == 1.0 and torch.equal(s.state_x["buf"][4], c.state_x["buf"][2])
    assert float(s.state_m["t"]) == 7.0  # shared scalars are kept
    assert s.parents.tolist() == [-1, -1, 2, -1, 2] and len(set(s.ids.tolist())) == 5
    t = s.take([4, 0])
    assert torch.equal(t.x[0], s.x[4]) and t.ids.tolist() == [s.ids[4].item(), s.ids[0].item()]
    back = CandidateSet.from_tensors(s.tensors(), s.record())
    assert torch.equal(back.x, s.x) and back.m0 == 4 and torch.equal(back.parents, s.parents)
    u = CandidateSet.concat([c, s])
    assert u.m == 9 and u.m0 == 9 and len(set(u.ids.tolist())) == 9 and u.parents.tolist()[-1] >= 4


def test_a_split_leaves_the_weighted_sum_unchanged_to_first_order(tiny_victim):
    """s(split) - s = O(eps^2): (x + eps v, w/2) + (x - eps v, w/2) = (x, w) + eps^2/2 (v . d^2 g v) w."""
    from trainrecon.models.victim import load_victim

    obj, cands = build_objective(Haim, load_victim(tiny_victim), HaimConfig(), 20)
    v = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s0 = torch.cat([t.flatten() for t in obj.feature_sum(cands.x, obj.weights(cands.multipliers))])
    diffs = []
    for eps in (1e-2, 5e-3):
        sp = cands.split(3, v, eps)
        o = dataclasses.replace(obj, labels=sp.labels)
        s1 = torch.cat([t.flatten() for t in o.feature_sum(sp.x, o.weights(sp.multipliers))])
        diffs.append(float((s1 - s0).norm()))
    assert diffs[1] < diffs[0] / 3  # quadratic, not linear, in eps


# the objective's parts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["haim", "multiclass", "loo"])
def test_per_candidate_term_gives_the_objectives_gradients(which):
    spec = {"haim": MLPSpec([6, 5, 4, 1], [True, False, False]), "multiclass": MLPSpec([6, 5, 4, 3], [True, False, False]),
            "loo": MLPSpec([6, 5, 4, 2], [True, True, True])}[which]
    params = init_params(spec, [2.0] * spec.n_layers, seed=2)
    init = init_params(spec, [1.5] * spec.n_layers, seed=9) if which == "loo" else None
    victim = Victim(spec, params, np.full((1, 1, 6), 0.3), init)
    cls, cfg = {"haim": (Haim, HaimConfig(alpha=5.0)), "multiclass": (BuzagloMulticlass, BuzagloMulticlassConfig(alpha=5.0)),
                "loo": (LooNTK, LooConfig(dtype="float64"))}[which]
    obj, cands = build_objective(cls, victim, cfg, 6)
    X = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.3
    M = cands.multipliers + 0.2
    _, gx, gm = obj.value_and_grad(X, M)
    u = obj.u(X, M)
    W = obj.weights(M)
    h = obj.per_candidate_term(X.requires_grad_(True), W.detach(), u)
    (gh,) = torch.autograd.grad(h.sum(), X)
    px = grad(lambda x: obj.prior(x, M))(X.detach())
    assert torch.allclose(gh + px, gx, rtol=1e-10, atol=1e-12)
    if which != "loo":  # one weight per candidate: dJ/dlambda_j = h_j / lambda_j (+ the prior's part)
        pm = grad(lambda mm: obj.prior(X.detach(), mm))(M)
        assert torch.allclose(h.detach() / M + pm, gm, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_a_run_folder_of_the_previous_version_resumes(tmp_path, tiny_victim):
    """Checkpoints written before candidate sets (tensors x / multipliers / opt_* and a checkpoint.json beside
    them, no victim hash) resume to the same candidates as an uninterrupted run."""
    import json

    from safetensors.torch import save_file

    from trainrecon.checkpoint import load_checkpoint

    cfg = HaimConfig(iterations=12, checkpoint_every=4, log_every=4)
    payload = payload_from_folder(tiny_victim)
    reconstruct(payload, cfg, tmp_path / "straight", log=lambda *a: None)
    run = tmp_path / "old"
    reconstruct(payload, cfg, run, log=lambda *a: None, stop_after=8)
    tensors, state = load_checkpoint(run / "checkpoint.safetensors")
    old = {k: v for k, v in tensors.items() if k in ("x", "multipliers") or k.startswith("opt_")}
    save_file(old, str(run / "checkpoint.safetensors"))  # no embedded state: the old layout
    record = {k: v for k, v in state["config"].items() if k != "victim"}
    (run / "checkpoint.json").write_text(json.dumps({"iteration": state["iteration"], "config": record,
                                                     "history": state["history"]}))
    reconstruct(payload, cfg, run, resume=True, log=lambda *a: None)
    a, b = np.load(tmp_path / "straight" / "candidates.npz"), np.load(run / "candidates.npz")
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])
    assert not (run / "checkpoint.json").exists()


def test_the_loop_knows_no_refinement_by_name():
    """attacks/runner.py names no refinement, budget or summary key a hook reports (as a string or an attribute)
    and never adapts a config: the run's plan (attacks/plan.py) carries the adapted config and the hooks, and each
    hook its key, so the loop cannot decide what a run gets."""
    names = {"split", "merge", "max_seconds", "splitting", "merging", "second_order", "stopped_by_max_seconds",
             "collapse", "adapt"}
    tree = ast.parse((SRC / "attacks" / "runner.py").read_text())
    found = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)} \
        | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} \
        | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & found, sorted(names & found)



def test_every_hook_lives_beside_the_hook_interface():
    """What acts on a running attack is found in one package: every class that subclasses AttackHook (directly or
    through another hook) is defined in trainrecon/hooks/."""
    classes = {}  # class name -> (file, base names)
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))}
                classes[node.name] = (path.relative_to(SRC), bases)

    def is_hook(name, seen=()):
        return name == "AttackHook" or any(is_hook(b, seen + (name,)) for b in classes.get(name, ((), set()))[1]
                                           if b not in seen)

    hooks = {name: path for name, (path, _) in classes.items() if is_hook(name)}
    assert {"TimeBudget", "PruneHook", "StartAt", "SplittingHook", "Reports"} <= set(hooks)
    outside = sorted(f"{p}: {n}" for n, p in hooks.items() if p.parts[0] != "hooks")
    assert not outside, outside


def test_an_import_inside_a_function_says_what_it_defers():
    """No import circle is hidden by an import inside a function: such an import stays only where it defers a
    heavy dependency, with a comment on its line or the line above saying so (cli.py says it once, at the top:
    every command imports what it needs)."""
    unexplained = []
    for path in SRC.rglob("*.py"):
        if path.name == "cli.py":
            assert "imports what it needs inside its function" in path.read_text()
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        k = node.lineno - 1  # this line, or up through the block of imports it belongs to
                        while "#" not in lines[k] and k > 0 and lines[k - 1].strip().startswith(("from ", "import ", "#")):
                            k -= 1
                        if "#" not in lines[k]:
                            unexplained.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not unexplained, unexplained
