"""Collapse count and merging of near-duplicate candidates: the clustering against a brute-force oracle, the merge
against the weighted sum it replaces (float64), re-seeding, and the hook in a run (resumed bit for bit)."""

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import build_objective
from trainrecon import reconstruct
from trainrecon.attacks import payload_from_folder
from trainrecon.attacks.buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig
from trainrecon.attacks.haim import Haim, HaimConfig
from trainrecon.errors import TrainreconError
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import init_params
from trainrecon.models.victim import Victim
from trainrecon.refinement import MergeConfig, SplitConfig
from trainrecon.refinement.merging import collapse_report, cosine_matrix, merge_groups, similarity_groups
from trainrecon.refinement.splitting import contribution

D = 6


def planted(seed=0, noise=1e-3):
    """Three well-separated directions with 4, 2 and 1 noisy copies, shuffled; (x, true group of each row)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linalg.qr(torch.randn(D, 3, generator=g, dtype=torch.float64))[0].T * 3.0
    sizes = [4, 2, 1]
    truth = torch.tensor([k for k, s in enumerate(sizes) for _ in range(s)])
    x = base[truth] * (1 + torch.rand(len(truth), 1, generator=g, dtype=torch.float64)) \
        + noise * torch.randn(len(truth), D, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(truth), generator=g)
    return x[perm], truth[perm]


def oracle_groups(x, threshold, mult=None, labels=None):
    """The greedy leader rule written out with plain Python floats."""
    m = len(x)
    cos = [[float(x[a] @ x[b]) / (float(x[a].norm()) * float(x[b].norm())) for b in range(m)] for a in range(m)]
    order = sorted(range(m), key=lambda j: (-float(mult[j].abs().max()) if mult is not None else 0.0, j))
    free, out = set(range(m)), []
    for lead in order:
        if lead not in free:
            continue
        members = [j for j in sorted(free) if (j == lead or cos[lead][j] >= threshold)
                   and (labels is None or labels[j] == labels[lead])]
        free -= set(members)
        out.append([lead] + [j for j in members if j != lead])
    return out


def test_cosine_matrix_matches_pairwise_definition():
    x, _ = planted()
    c = cosine_matrix(x)
    for a, b in itertools.product(range(len(x)), repeat=2):
        assert float(c[a, b]) == pytest.approx(float(torch.nn.functional.cosine_similarity(x[a], x[b], dim=0)), abs=1e-12)
    z = torch.cat([x, torch.zeros(1, D, dtype=torch.float64)])
    cz = cosine_matrix(z)
    assert float(cz[-1, -1]) == 1.0 and float(cz[-1, :-1].abs().max()) == 0.0


def test_similarity_groups_find_planted_duplicates_and_match_the_oracle():
    x, truth = planted()
    mult = torch.rand(len(x), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    groups = similarity_groups(x, 0.99, mult)
    assert sorted(sorted(truth[g].tolist()) for g in groups) == [[0, 0, 0, 0], [1, 1], [2]]
    assert all(float(mult[g[0]]) == float(mult[g].max()) for g in groups)  # the leader: largest |multiplier|
    assert groups == oracle_groups(x, 0.99, mult)
    # labels split a group; a looser threshold on random points: still the oracle's greedy rule
    labels = torch.arange(len(x)) % 2
    assert similarity_groups(x, 0.99, mult, labels) == oracle_groups(x, 0.99, mult, labels)
    r = torch.randn(30, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rm = torch.randn(30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for t in (0.3, 0.6, 0.9):
        assert similarity_groups(r, t, rm) == oracle_groups(r, t, rm)
    rep = collapse_report(x, mult)
    assert rep == {"m": 7, "0.99": {"distinct": 3, "largest": 4}, "0.95": {"distinct": 3, "largest": 4}}
    # far apart points: every candidate distinct
    assert collapse_report(torch.eye(5, dtype=torch.float64))["0.95"] == {"distinct": 5, "largest": 1}


def haim_problem(m=8, seed=0):
    spec = MLPSpec([D, 7, 5, 1], [True, False, False])
    params = init_params(spec, [2.0] * spec.n_layers, seed=seed)
    obj, cands = build_objective(Haim, Victim(spec, params, np.full((1, 1, D), 0.3)), HaimConfig(alpha=4.0), m)
    g = torch.Generator().manual_seed(seed + 1)
    cands.x = torch.randn(m, D, generator=g, dtype=torch.float64)
    cands.multipliers = cands.multipliers + 0.3
    return obj, cands


@pytest.mark.parametrize("delta", [0.0, 1e-4, 1e-3])
def test_merge_keeps_the_weighted_sum_up_to_the_duplicates_difference(delta):
    obj, cands = haim_problem()
    # candidates 1, 2 copy candidate 0 (label -1), 5 copies 4 (label +1); perturbed by delta
    g = torch.Generator().manual_seed(7)
    x = cands.x.clone()
    for j, src in ((1, 0), (2, 0), (5, 4)):
        x[j] = x[src] + delta * torch.randn(D, generator=g, dtype=torch.float64)
    cands.x = x
    cands.state_x = {"buf": torch.ones_like(x)}
    groups = similarity_groups(cands.x, 0.99, cands.multipliers, cands.labels)
    assert sorted(sorted(gr) for gr in groups if len(gr) > 1) == [[0, 1, 2], [4, 5]]
    freed = [j for gr in groups for j in gr[1:]]
    fx = torch.randn(len(freed), D, generator=g, dtype=torch.float64)
    # fresh multipliers 0: the merged set's weighted sum must equal the original's up to the duplicates' offsets
    merged = merge_groups(cands, groups, fx, torch.zeros(len(freed), dtype=torch.float64))
    s0 = contribution(obj, cands, list(range(cands.m)))
    s1 = contribution(obj, merged, list(range(merged.m)))
    diff = sum(float(((a - b) ** 2).sum()) for a, b in zip(s0, s1)) ** 0.5
    size = sum(float((a ** 2).sum()) for a in s0) ** 0.5
    if delta == 0:
        assert diff <= 1e-13 * size
    else:  # s' - s = sum_j w_j (g(x_lead) - g(x_j)): first order in delta, and not zero
        assert 1e-3 * delta * size < diff < 50 * delta * size
    # the count is kept: m, labels, m0; the freed rows are fresh, with new ids, no parent and zeroed state
    assert merged.m == cands.m and merged.m0 == cands.m0 and torch.equal(merged.labels, cands.labels)
    for gr in groups:
        assert float(merged.multipliers[gr[0]]) == pytest.approx(float(cands.multipliers[gr].sum()), abs=1e-15)
        assert torch.equal(merged.x[gr[0]], cands.x[gr[0]])
    assert torch.equal(merged.x[freed], fx) and (merged.parents[freed] == -1).all()
    assert len(set(merged.ids.tolist())) == merged.m and int(merged.ids[freed].min()) > int(cands.ids.max())
    assert float(merged.state_x["buf"][freed].abs().max()) == 0 and bool((merged.state_x["buf"][[gr[0] for gr in groups]] == 1).all())


def test_merge_with_vector_multipliers_and_the_methods_own_fresh_starts():
    spec = MLPSpec([D, 7, 3], [True, False])
    params = init_params(spec, [2.0] * spec.n_layers, seed=1)
    method_cfg = BuzagloMulticlassConfig(alpha=4.0, seed=3)
    obj, cands = build_objective(BuzagloMulticlass, Victim(spec, params, np.full((1, 1, D), 0.3)), method_cfg, 6)
    cands.x = torch.randn(6, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cands.x[1] = cands.x[0]  # same class (block labels 0 0 1 1 2 2)
    groups = similarity_groups(cands.x, 0.999, cands.multipliers, cands.labels)
    assert [sorted(gr) for gr in groups if len(gr) > 1] == [[0, 1]]
    from trainrecon.attacks.payload import Payload

    method = BuzagloMulticlass(Payload.of(Victim(spec, params, np.full((1, 1, D), 0.3)), disclose_n=False), method_cfg)
    fx, fm = method.draw(1, torch.Generator().manual_seed(11))
    fx2, fm2 = method.draw(1, torch.Generator().manual_seed(11))
    assert torch.equal(fx, fx2) and torch.equal(fm, fm2) and float(fx.abs().max()) < 10 * method_cfg.init_scale
    merged = merge_groups(cands, groups, fx, fm)
    lead = groups[[len(gr) for gr in groups].index(2)]
    assert float(merged.multipliers[lead[0]]) == pytest.approx(float(cands.multipliers[0] + cands.multipliers[1]))
    s0, s1 = contribution(obj, cands, [0, 1]), contribution(obj, merged, [lead[0]])
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(s0, s1))


def test_merge_config_validates_and_schedules():
    assert MergeConfig(start=0.2, every=0.1, stop=0.6).round_iterations(100) == [20, 30, 40, 50, 60]
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"start": 0.7, "stop": 0.6}, {"every": 0.0}):
        with pytest.raises(TrainreconError):
            MergeConfig(**bad)


@pytest.mark.slow
def test_runner_merges_reports_collapse_and_resumes_bit_for_bit(tmp_path, tiny_victim):
    payload = payload_from_folder(tiny_victim)
    # a loose threshold so that rounds on this tiny victim merge something
    cfg = HaimConfig(iterations=16, checkpoint_every=4, log_every=4,
                     merge=MergeConfig(enabled=True, threshold=0.3, start=0.25, every=0.25, stop=0.75))
    res = reconstruct(payload, cfg, tmp_path / "a", log=lambda *a: None).stats
    merges = json.loads((tmp_path / "a" / "merges.json").read_text())["merges"]
    assert [e["iteration"] for e in merges] == [4, 8, 12] and res["merging"]["rounds"] == 3
    assert res["merging"]["reseeded"] == sum(e["reseeded"] for e in merges) > 0
    assert res["m"] == 20  # re-seeding keeps the count
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["attack"]["merge"]["enabled"] is True
    x = np.load(tmp_path / "a" / "candidates.npz")["x"]
    assert res["collapse"] == collapse_report(torch.from_numpy(x.reshape(len(x), -1)),
                                              torch.from_numpy(np.load(tmp_path / "a" / "candidates.npz")["multipliers"]))
    reconstruct(payload, cfg, tmp_path / "b", log=lambda *a: None, stop_after=9)
    reconstruct(payload, cfg, tmp_path / "b", resume=True, log=lambda *a: None)
    a, b = np.load(tmp_path / "a" / "candidates.npz"), np.load(tmp_path / "b" / "candidates.npz")
    assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["ids"], b["ids"])
    # merge and split together; and a plain run reports its collapse without merging
    both = HaimConfig(iterations=16, checkpoint_every=4, log_every=4, merge=cfg.merge,
                      split=SplitConfig(enabled=True, start=0.5, every=0.25, per_round=2, lanczos_steps=6))
    r2 = reconstruct(payload, both, tmp_path / "c", log=lambda *a: None).stats
    assert r2["merging"]["rounds"] == 3 and r2["splitting"]["rounds"] == 2
    plain = reconstruct(payload, HaimConfig(iterations=8), tmp_path / "d", log=lambda *a: None).stats
    assert plain["merging"] is None and plain["collapse"]["m"] == 20 and 1 <= plain["collapse"]["0.95"]["distinct"] <= 20
    from trainrecon.attacks.plan import plan_run

    with pytest.raises(TrainreconError, match="attack.merge.enabled"):
        plan_run(payload, cfg).with_hooks([])
    assert not (tmp_path / "e").exists()
