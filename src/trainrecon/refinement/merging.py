"""Collapse of the candidate set onto a few attractors: counting distinct candidates, merging near-duplicates.

The attacks' objectives are sums J = F(s) + R,  s = sum_j w_j g(x_j)  (:mod:`trainrecon.objective.weighted_sum`).
Two candidates at the same point contribute (w_a + w_b) g(x_a): the objective cannot tell them from one
candidate with the summed multiplier, so a run whose candidates have collapsed onto a few attractors spends
most of its candidate budget on copies.  Everything here uses the candidates alone (no training set):

* :func:`similarity_groups`: greedy leader clustering by cosine similarity in the centred input space,
  cos(x_a, x_b) = <x_a, x_b> / (||x_a|| ||x_b||).  Candidates are taken in order of decreasing |multiplier|
  (the Frobenius norm of a row where there are several); each one not yet grouped leads a group of every
  ungrouped candidate (of its label, when labels are given) with cos >= threshold to it.
* :func:`collapse_report`: the number of groups (distinct candidates) and the largest group at each threshold,
  labels ignored: what an attacker sees of the collapse (``loss.json["collapse"]``, :class:`.hooks.CollapseHook`).
* :func:`merge_groups`: each group becomes its leader with the group's multipliers summed,

      (x_l, sum_{j in G} M_j),   so  s' - s = sum_{j in G} w_j (g(x_l) - g(x_j))

  (zero for exact copies, first order in the duplicates' distance otherwise), and each freed candidate is
  replaced, at its own position and with its label, by a fresh start (x, M) from the method's initialisation
  with zeroed optimiser state, a new id and no parent: m, the label layout and m0 (the weight normalisation)
  are kept (:func:`reseed`).
"""

from __future__ import annotations

import dataclasses

import torch

from ..objective.candidates import CandidateSet, cosine_matrix


def multiplier_size(multipliers: torch.Tensor) -> torch.Tensor:
    """|M_j|, the Frobenius norm of row j where a candidate has several multipliers."""
    return multipliers.reshape(multipliers.shape[0], -1).norm(dim=1)


def similarity_groups(x: torch.Tensor, threshold: float, multipliers: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy leader clustering (see the module docstring); each group lists its leader first, then its members
    in index order.  Without multipliers candidates are taken in index order."""
    m = x.shape[0]
    if m == 0:
        return []
    cos = cosine_matrix(x.detach())
    order = list(range(m)) if multipliers is None else \
        torch.argsort(-multiplier_size(multipliers.detach()), stable=True).tolist()
    same = torch.ones(m, m, dtype=torch.bool, device=x.device) if labels is None else \
        (labels.reshape(m, -1)[:, None, :] == labels.reshape(m, -1)[None, :, :]).all(-1)
    close = (cos >= threshold) & same
    free = torch.ones(m, dtype=torch.bool, device=x.device)
    groups = []
    for lead in order:
        if not free[lead]:
            continue
        members = torch.nonzero(close[lead] & free).flatten().tolist()
        free[members] = False
        groups.append([lead] + [j for j in members if j != lead])
    return groups


def collapse_report(x: torch.Tensor, multipliers: torch.Tensor | None = None,
                    thresholds: tuple[float, ...] = (0.99, 0.95)) -> dict:
    """{"m": m, "<t>": {"distinct": groups, "largest": size of the largest group}} for each threshold t."""
    out: dict = {"m": int(x.shape[0])}
    for t in thresholds:
        groups = similarity_groups(x, t, multipliers)
        out[f"{t:g}"] = {"distinct": len(groups), "largest": max((len(g) for g in groups), default=0)}
    return out


def _zero_rows(state: dict[str, torch.Tensor], m: int, rows: list[int]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if v.ndim and v.shape[0] == m:
            v = v.clone()
            v[rows] = 0
        out[k] = v
    return out


def reseed(cands: CandidateSet, rows: list[int], fresh_x: torch.Tensor, fresh_multipliers: torch.Tensor) -> CandidateSet:
    """Candidates ``rows`` start afresh: x and multipliers from ``fresh_x`` / ``fresh_multipliers`` (one row each),
    optimiser state zeroed, new ids, no parent; labels, m and m0 are kept."""
    if fresh_x.shape[0] != len(rows) or fresh_multipliers.shape[0] != len(rows):
        raise ValueError(f"reseed: {len(rows)} candidates, {fresh_x.shape[0]} fresh starts")
    if not rows:
        return cands
    x, mult = cands.x.clone(), cands.multipliers.clone()
    idx = torch.as_tensor(rows, dtype=torch.long, device=x.device)
    x[idx] = fresh_x.to(x)
    mult[idx] = fresh_multipliers.to(mult).reshape(len(rows), *mult.shape[1:])
    ids, parents = cands.ids.clone(), cands.parents.clone()
    new = int(ids.max()) + 1
    ids[idx.cpu()] = torch.arange(new, new + len(rows))
    parents[idx.cpu()] = -1
    return dataclasses.replace(cands, x=x, multipliers=mult, ids=ids, parents=parents,
                               state_x=_zero_rows(cands.state_x, cands.m, rows),
                               state_m=_zero_rows(cands.state_m, cands.m, rows))


def merge_groups(cands: CandidateSet, groups: list[list[int]], fresh_x: torch.Tensor,
                 fresh_multipliers: torch.Tensor) -> CandidateSet:
    """Merge every group into its leader (multipliers summed) and :func:`reseed` the freed candidates, in the
    order the groups list them (``fresh_x`` / ``fresh_multipliers`` have one row per freed candidate)."""
    freed = [j for g in groups for j in g[1:]]
    mult = cands.multipliers.clone()
    for g in groups:
        if len(g) > 1:
            mult[g[0]] = cands.multipliers[g].sum(0)
    return reseed(dataclasses.replace(cands, multipliers=mult), freed, fresh_x, fresh_multipliers)


__all__ = ["collapse_report", "cosine_matrix", "merge_groups", "multiplier_size", "reseed", "similarity_groups"]
