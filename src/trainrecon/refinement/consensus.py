"""Consensus of independent restarts: R descents of one objective from independent starts (``attack.restarts``,
batched in one run by :class:`~trainrecon.objective.restarts.Restarts`) merged into m / R candidates.

A training image that the objective singles out is found by several restarts, each copy with its own noise; an
attractor of one descent is found by few.  Everything here uses the candidates alone (no training set):

* support: candidate a of restart r(a) is matched in restart b by its most similar candidate there,
  c_ab = max_{j in b} cos(x_a, x_j) (cosine in the centred input space); its support is the number of restarts
  (its own included) where c_ab > tau, its score the mean of c_ab over the restarts (c_aa = 1).
* groups: candidates in order of decreasing (support, score); each one not yet grouped leads a group of, from
  every other restart, its most similar ungrouped candidate with cos > tau there (at most one per restart).
* merge: the first k groups (the most supported) become the median of their members, pixel by pixel, with the
  median of their multipliers (the mean of the two middle values for an even count; a group of one is its
  leader).  The pixel median of r copies x + e_i keeps x and shrinks independent noise e_i (its spread by about
  sqrt(pi / (2 r)) for Gaussian noise).
"""

from __future__ import annotations

import dataclasses

import torch

from ..objective.candidates import CandidateSet, cosine_matrix

#: the cosine above which two restarts' candidates count as one image (bench/RESULTS.md, "Restarts and their
#: consensus": 0.5, 0.7 and 0.8 gave 19-22 of 40 on the Adam MLP; 0.7 the most)
THRESHOLD = 0.7


def consensus_groups(x: torch.Tensor, restart: torch.Tensor, tau: float = THRESHOLD) -> list[list[int]]:
    """The groups of the module docstring, most supported first; each lists its leader first.  ``x`` (N, d),
    ``restart`` (N,) the restart of each candidate."""
    N = x.shape[0]
    R = int(restart.max()) + 1 if N else 0
    cos = cosine_matrix(x.reshape(N, -1).double())
    best = torch.full((N, R), -1.0, dtype=torch.float64)
    for b in range(R):
        rows = restart == b
        if rows.any():
            best[:, b] = cos[:, rows].max(dim=1).values
    best[torch.arange(N), restart] = 1.0
    support = (best > tau).sum(dim=1)
    score = best.mean(dim=1)
    order = sorted(range(N), key=lambda a: (-int(support[a]), -float(score[a]), a))
    free = torch.ones(N, dtype=torch.bool)
    groups: list[list[int]] = []
    for a in order:
        if not free[a]:
            continue
        members = [a]
        for b in range(R):
            if b == int(restart[a]):
                continue
            pool = torch.nonzero(free & (restart == b) & (cos[a] > tau)).reshape(-1)
            if len(pool):
                members.append(int(pool[cos[a, pool].argmax()]))
        free[members] = False
        groups.append(members)
    return groups


def merge_restarts(cands: CandidateSet, tau: float = THRESHOLD) -> tuple[CandidateSet, list[int]]:
    """The m / R most supported groups of ``cands`` (its R = ``cands.restarts`` blocks, :meth:`CandidateSet.blocks`)
    merged into one candidate each (module docstring): ids, labels and provenance of each group's leader, optimiser
    state dropped, m0 the number of groups.  Returns (the merged set, each group's size)."""
    per = cands.m // cands.restarts
    restart = torch.arange(cands.m) // per
    groups = consensus_groups(cands.x.detach(), restart, tau)[:per]
    leaders = cands.take([g[0] for g in groups])
    x = torch.stack([torch.quantile(cands.x[g], 0.5, dim=0) for g in groups])
    M = torch.stack([torch.quantile(cands.multipliers[g], 0.5, dim=0) for g in groups])
    merged = dataclasses.replace(leaders, x=x.detach().clone(), multipliers=M.detach().clone(), state_x={},
                                 state_m={}, m0=len(groups))
    return merged, [len(g) for g in groups]


__all__ = ["THRESHOLD", "consensus_groups", "merge_restarts"]
