"""attack.compile: the weighted-sum objective's pass compiled into one graph (objective/fused.py).

The compiled pass computes the same F(s), dJ/dX and dJ/dW as the eager double-backward, checked in float64 against
that eager oracle on tiny victims of every kind of feature (binary KKT, multiclass, a CNN); "auto" resolves by
the iteration's size, the surrogate and whether the compiler works; a failing compiler falls back to the eager
passes and the run says so."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from conftest import build_objective
from trainrecon import reconstruct
from trainrecon.attacks.buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig
from trainrecon.attacks.haim import Haim, HaimConfig
from trainrecon.attacks.loo import LooConfig
from trainrecon.errors import TrainreconError
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import init_params
from trainrecon.models.user_weights import victim_from_module
from trainrecon.models.victim import Victim, load_victim
from trainrecon.objective.fused import CompiledPass, CompiledPrior


def _needs_compiler():
    """These tests measure the compiled graph itself: where torch.compile has no working compiler (no C++
    compiler on a CPU) there is none to measure, and the fallback test below covers that machine."""
    from trainrecon.runtime import compiler_works

    if not compiler_works("cpu"):
        pytest.skip("torch.compile has no working compiler on this machine")


def _victim(spec, seed=0):
    params = init_params(spec, [2.0] * spec.n_layers, seed=seed)
    params = [p + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + i), dtype=p.dtype)
              for i, p in enumerate(params)]
    return Victim(spec, params, np.linspace(0.1, 0.6, spec.widths[0]).reshape(1, 1, -1))


def _cnn():
    torch.manual_seed(0)
    mod = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(27, 1)).double()
    w = victim_from_module(mod, [1, 6, 6])
    return Victim(w.spec, w.params, np.full((1, 6, 6), 0.3))


CASES = {
    "haim": (Haim, HaimConfig(alpha=5.0, tv=0.1, box_space="centred", x_optimiser="sgd"),
             lambda: _victim(MLPSpec(widths=[6, 5, 4, 1], bias=[True, False, False]))),
    "multiclass": (BuzagloMulticlass, BuzagloMulticlassConfig(alpha=5.0, box_space="centred"),
                   lambda: _victim(MLPSpec(widths=[6, 5, 4, 3], bias=[True, True, False]))),
    "cnn": (Haim, HaimConfig(alpha=5.0, tv=0.1, x_optimiser="sgd"), _cnn),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_compiled_pass_equals_the_eager_double_backward_in_float64(case, one_thread):
    """F(s), the prior, dJ/dX and dJ/dM of the objective with the compiled pass and the compiled prior against the
    eager double-backward and autograd of the eager prior, float64, at a random point of a tiny victim (candidates
    outside the box, multipliers below lambda_min: every term of the prior active): to 1e-10 relative; both ran
    compiled (no fallback), and the pass is the objective's one chunk (a chunked objective takes the eager loop)."""
    _needs_compiler()
    method_cls, cfg, make = CASES[case]
    victim = make()
    m = 6
    eager, cands = build_objective(method_cls, victim, cfg, m)
    compiled, _ = build_objective(method_cls, victim, dataclasses.replace(cfg, compile="inductor"), m)
    assert eager.fused is None and isinstance(compiled.fused, CompiledPass)
    assert eager.fused_prior is None and isinstance(compiled.fused_prior, CompiledPrior)
    X = cands.x + 0.8 * torch.randn(cands.x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale = torch.linspace(0.01, 3.0, cands.m, dtype=torch.float64)  # some below lambda_min: its penalty active
    M = cands.multipliers * scale.reshape(-1, *[1] * (cands.multipliers.ndim - 1))
    (va, gxa, gma), (vb, gxb, gmb) = (o.value_and_grad(X, M) for o in (compiled, eager))
    assert compiled.fused.failure is None and compiled.fused_prior.failure is None
    assert va["prior"] > 0 and math.isclose(va["prior"], vb["prior"], rel_tol=1e-10)
    assert math.isclose(va["total"], vb["total"], rel_tol=1e-10)
    assert math.isclose(va["stationarity"], vb["stationarity"], rel_tol=1e-10)
    for a, b in ((gxa, gxb), (gma, gmb)):
        assert a.dtype == torch.float64
        assert float((a - b).norm() / b.norm()) < 1e-10
    chunked = dataclasses.replace(compiled, chunk_size=4)  # two chunks: the eager loop, the same numbers
    vc, gxc, _ = chunked.value_and_grad(X, M)
    assert math.isclose(vc["total"], vb["total"], rel_tol=1e-10) and float((gxc - gxb).norm() / gxb.norm()) < 1e-10


def test_a_compiled_run_finds_the_eager_runs_candidates_and_records_it(tiny_victim, tmp_path, one_thread):
    """A float64 Haim run with compile 'inductor' against the same run eager: the same candidates to rounding
    (20 iterations), and loss.json says it ran compiled."""
    _needs_compiler()
    v = load_victim(tiny_victim)
    base = HaimConfig(iterations=20, dtype="float64", m=8, seed=3)
    eager = reconstruct(v, base, log=lambda *a: None)
    fused = reconstruct(v, dataclasses.replace(base, compile="inductor"), tmp_path / "run", log=lambda *a: None)
    assert float((fused.x - eager.x).abs().max()) < 1e-8
    stats = json.loads((tmp_path / "run" / "loss.json").read_text())
    assert stats["compile"] == {"compiled": True, "prior_compiled": True, "failure": None}
    assert "compile" not in eager.stats


def test_a_failing_compiler_falls_back_to_the_eager_passes_and_says_so(tiny_victim, monkeypatch, one_thread):
    """Where the compiled graph raises (no C++ compiler, an unsupported operation), the run goes on with the eager
    passes: the very candidates of an eager run, and the record names the failure in one line."""
    from trainrecon.objective import fused as fused_module

    def broken(fn, **options):
        def call(*a, **k):
            raise RuntimeError("no working C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(fused_module.torch, "compile", broken)
    v = load_victim(tiny_victim)
    base = HaimConfig(iterations=10, dtype="float64", m=8)
    eager = reconstruct(v, base, log=lambda *a: None)
    fell = reconstruct(v, dataclasses.replace(base, compile="inductor"), log=lambda *a: None)
    assert torch.equal(fell.x, eager.x)
    assert fell.stats["compile"]["compiled"] is False and fell.stats["compile"]["prior_compiled"] is False
    assert fell.stats["compile"]["failure"] == ("the compiler failed (no working C++ compiler); the eager passes "
                                                "ran instead")


@pytest.mark.parametrize("works", [True, False])
def test_compile_auto_compiles_a_large_iteration_with_a_fixed_surrogate_where_the_compiler_works(
        tiny_victim, monkeypatch, works):
    """compile = "auto": "inductor" where m * n_params reaches the method's compile_work, the surrogate is fixed
    and runtime.compiler_works says yes (recorded with its reason in config.json["adapted"]); "none" for a small
    iteration (the tiny victim at the real threshold), a continuation in alpha, or a compiler that fails; an
    explicit 'inductor' where it cannot apply is refused in one line."""
    from trainrecon.attacks import method as method_module
    from trainrecon.attacks.plan import plan_run

    v = load_victim(tiny_victim)
    assert plan_run(v, HaimConfig()).cfg.compile == "none"  # the real threshold: a tiny iteration stays eager
    monkeypatch.setattr(method_module, "compiler_works", lambda device: works)
    monkeypatch.setattr(Haim, "compile_work", 1.0)
    for adapt in (True, False):
        plan = plan_run(v, HaimConfig(adapt=adapt))
        assert plan.cfg.compile == ("inductor" if works else "none")
        if works and adapt:
            assert plan.adapted["fields"]["compile"] == "inductor" and "torch.compile" in plan.adapted["reason"]
        assert plan_run(v, HaimConfig(alpha_start=3.0, adapt=adapt)).cfg.compile == "none"
    with pytest.raises(TrainreconError, match=r"^attack.compile: 'inductor' is for a weighted-sum objective"):
        plan_run(v, HaimConfig(alpha_start=3.0, compile="inductor"))
    with pytest.raises(TrainreconError, match=r"^attack.compile: .*this loo-ntk run has none"):
        plan_run(dataclasses.replace(v, init_params=[p.clone() for p in v.params]), LooConfig(compile="inductor"))


def test_runs_recorded_before_compile_existed_read_back_eager():
    """A run recorded before the field existed resumes as it ran: eager."""
    assert HaimConfig.BEFORE["compile"] == "none"
    assert LooConfig().compile == "none" and BuzagloMulticlassConfig().compile == "none"
    assert HaimConfig().compile == "auto"


def test_more_compiled_methods_than_the_compiler_cache_holds_still_run_compiled(one_thread):
    """Every CompiledPass compiles the same function, so torch's cache holds one entry per kind of network: past
    its limit torch would run the function uncompiled, silently, and the run's record would say 'compiled'
    (measured: with the limit at 1, the second and third networks ran uncompiled). With the limit at 1, networks of
    two, three and four layers each compile a graph of their own (the cache is emptied and the call retried) and
    give the eager oracle's numbers, and the first one, its entry gone, compiles again."""
    _needs_compiler()
    from torch._dynamo.utils import counters

    method_cls, cfg, _ = CASES["haim"]
    widths = [[6, 5, 1], [6, 5, 4, 1], [6, 5, 4, 3, 1]]
    built = [build_objective(method_cls, _victim(MLPSpec(widths=w, bias=[True] + [False] * (len(w) - 2)), seed=s),
                             dataclasses.replace(cfg, compile=c), 6)
             for s, w in enumerate(widths) for c in ("inductor", "none")]
    with torch._dynamo.config.patch(recompile_limit=1):
        for (compiled, cands), (eager, _) in [*zip(built[::2], built[1::2]), (built[0], built[1])]:
            graphs = counters["stats"]["unique_graphs"]
            va, gxa, _ = compiled.value_and_grad(cands.x, cands.multipliers)
            assert compiled.fused.failure is None
            assert counters["stats"]["unique_graphs"] > graphs  # a graph of its own, not the uncompiled function
            vb, gxb, _ = eager.value_and_grad(cands.x, cands.multipliers)
            assert math.isclose(va["total"], vb["total"], rel_tol=1e-10)
            assert float((gxa - gxb).norm() / gxb.norm()) < 1e-10
