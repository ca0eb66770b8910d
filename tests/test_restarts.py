"""Independent restarts in one run (``attack.restarts``) and their consensus: the grouping and the median against
plain oracles, the summed objective against each block's own, each block of a run against the run of its seed,
the truth-start control in every block, and the refusals."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from trainrecon import reconstruct
from trainrecon.attacks import LooConfig, LooNTK, SimulationConfig, payload_from_folder
from trainrecon.checkpoint import load_checkpoint, save_checkpoint
from trainrecon.errors import TrainreconError
from trainrecon.hooks.start import StartAt
from trainrecon.objective.candidates import CandidateSet
from trainrecon.refinement import SplitConfig
from trainrecon.refinement.consensus import consensus_groups, merge_restarts

from test_threat_levels import owner_files, owner_victim


def planted(R=4, d=30, noise=0.05, seed=0):
    """R restarts of 3 candidates: noisy copies of two images every restart finds (in shuffled slots), and one
    image of its own per restart (an attractor of that descent alone)."""
    g = np.random.default_rng(seed)
    truth = g.normal(size=(2, d))
    blocks = []
    for r in range(R):
        rows = [truth[0] + noise * g.normal(size=d), truth[1] + noise * g.normal(size=d), g.normal(size=d)]
        blocks.append(np.stack(rows)[g.permutation(3)])
    return truth, np.concatenate(blocks)


def oracle_groups(x, restart, tau):
    """The module's grouping by plain loops in float64: support, score, order, then greedy groups."""
    N, R = len(x), restart.max() + 1
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    best = np.array([[1.0 if restart[a] == b else max(cos[a, j] for j in range(N) if restart[j] == b)
                      for b in range(R)] for a in range(N)])
    support = (best > tau).sum(1)
    order = sorted(range(N), key=lambda a: (-support[a], -best[a].mean(), a))
    free, groups = set(range(N)), []
    for a in order:
        if a not in free:
            continue
        members = [a]
        for b in range(R):
            pool = [j for j in free if restart[j] == b and b != restart[a] and cos[a, j] > tau]
            if pool:
                members.append(max(pool, key=lambda j: cos[a, j]))
        free -= set(members)
        groups.append(members)
    return groups


def test_the_consensus_keeps_what_every_restart_finds_as_the_pixel_median():
    truth, x = planted()
    restart = np.repeat(np.arange(4), 3)
    groups = consensus_groups(torch.as_tensor(x), torch.as_tensor(restart), 0.7)
    assert groups == oracle_groups(x, restart, 0.7)
    assert [len(g) for g in groups[:2]] == [4, 4] and all(len(g) == 1 for g in groups[2:])
    M = torch.arange(12, dtype=torch.float64).reshape(12, 1)
    cands = CandidateSet(torch.as_tensor(x), M, restarts=4)
    merged, sizes = merge_restarts(cands, 0.7)
    assert sizes == [4, 4, 1] and merged.m == merged.m0 == 3 and merged.restarts == 1
    for k, g in enumerate(groups[:3]):
        assert np.allclose(merged.x[k].numpy(), np.median(x[g], axis=0), rtol=0, atol=1e-12)
        assert float(merged.multipliers[k]) == pytest.approx(float(np.median(M[g].numpy())))
        assert int(merged.ids[k]) == g[0]
    found = sorted(int(np.argmax([abs(np.corrcoef(merged.x[k].numpy(), t)[0, 1]) for t in truth])) for k in range(2))
    assert found == [0, 1]
    err = [np.linalg.norm(merged.x[k].numpy() - truth[found[k]]) for k in range(2)]
    one = [np.linalg.norm(x[groups[k][0]] - truth[found[k]]) for k in range(2)]
    assert sum(err) < sum(one)  # the median of the copies is nearer the image than any one copy


def test_each_block_of_a_run_moves_as_the_run_of_its_seed(tmp_path, one_thread):
    """A run with restarts R, stopped before its end: block r of its candidates is, bit for bit, the run with seed
    + r stopped there; resumed to its end, its candidates are the consensus of those runs' final candidates, and a
    budget that ends it early takes the consensus too.  R = 1 is the run of the seed."""
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    base = dict(m=6, iterations=15, dtype="float64", given="init", remove_init="project", log_every=5)
    quiet = dict(log=lambda *_: None)
    stopped = [reconstruct(p, LooConfig(**base, seed=s), stop_after=10, **quiet) for s in (4, 5, 6)]
    run = reconstruct(p, LooConfig(**base, seed=4, restarts=3), tmp_path / "run", stop_after=10, **quiet)
    assert run.x.shape[0] == 18 and run.stats["restarts"] is None  # not finished: no consensus yet
    for r, a in enumerate(stopped):
        assert torch.equal(run.x[6 * r:6 * (r + 1)], a.x)
    alone = [reconstruct(p, LooConfig(**base, seed=s), **quiet) for s in (4, 5, 6)]
    run = reconstruct(p, LooConfig(**base, seed=4, restarts=3), tmp_path / "run", resume=True, **quiet)
    blocks = CandidateSet(torch.cat([a.x.reshape(6, -1) for a in alone]), torch.cat([a.multipliers for a in alone]),
                          restarts=3)
    want, sizes = merge_restarts(blocks)
    assert run.x.shape[0] == 6 and torch.equal(run.x.reshape(6, -1), want.x)
    assert run.stats["restarts"] == {"restarts": 3, "threshold": 0.7, "group_sizes": sizes}
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert meta["candidates"]["restarts"] == 1 and meta["restarts_merged"]["group_sizes"] == sizes
    tensors, meta = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    save_checkpoint(tmp_path / "run" / "checkpoint.safetensors", tensors, {**meta, "restarts_merged": "three"})
    with pytest.raises(TrainreconError, match="^checkpoint: damaged state \\(restarts's"):
        reconstruct(p, LooConfig(**base, seed=4, restarts=3), tmp_path / "run", resume=True, **quiet)
    budget = reconstruct(p, LooConfig(**{**base, "iterations": 10 ** 6}, seed=4, restarts=3, max_seconds=1.0), **quiet)
    assert budget.x.shape[0] == 6 and budget.stats["restarts"]["restarts"] == 3
    assert reconstruct(p, LooConfig(**base, seed=4, restarts=1), **quiet).x.equal(alone[0].x)


def test_the_summed_objective_is_each_blocks_own_and_the_truth_starts_every_block(tmp_path):
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path)).at_level("init")
    attack = LooNTK(p, LooConfig(m=4, dtype="float64", remove_init="project", restarts=2, tv=0.1))
    cands = attack.init(4)
    assert cands.m == 8 and cands.m0 == 8 and [b.m0 for b in cands.blocks()] == [4, 4]
    values, gx, gm = attack.objective(3, cands).value_and_grad(cands.x, cands.multipliers)
    single = LooNTK(p, LooConfig(m=4, dtype="float64", remove_init="project", tv=0.1))
    parts = [single.objective(3, b).value_and_grad(b.x, b.multipliers) for b in cands.blocks()]
    assert values["total"] == pytest.approx(sum(v["total"] for v, _, _ in parts), rel=1e-12)
    assert torch.equal(gx, torch.cat([g for _, g, _ in parts])) and torch.equal(gm, torch.cat([h for _, _, h in parts]))
    images = torch.randn(3, cands.x.shape[1], dtype=torch.float64)
    hook = StartAt(images, None)
    hook.before_loop(SimpleNamespace(attack=attack, cands=cands, done=0))
    assert hook.slots == [0, 1, 2, 4, 5, 6] and hook.finish(None, 0.0)["started"] == 3
    assert torch.equal(cands.x[[0, 1, 2]], images) and torch.equal(cands.x[[4, 5, 6]], images)


def test_restarts_are_refused_in_one_line_where_they_cannot_run(tmp_path):
    owner_files(tmp_path)
    p = payload_from_folder(owner_victim(tmp_path))
    with pytest.raises(TrainreconError, match="^attack.restarts: the number of independent descents, must be >= 1"):
        LooConfig(restarts=0)
    with pytest.raises(TrainreconError, match="^attack.restarts: 2 independent descents cannot take attack.split"):
        reconstruct(p, LooConfig(m=6, iterations=2, given="init", restarts=2, split=SplitConfig(enabled=True)),
                    log=lambda *_: None)
    with pytest.raises(TrainreconError, match="^attack.restarts: the simulation runs one descent"):
        SimulationConfig(restarts=2)
