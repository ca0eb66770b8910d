"""The refinements as hooks on a running attack (:mod:`.interface`).

:class:`SplittingHook` runs a splitting round (:func:`trainrecon.refinement.splitting.split_round`) after the
optimiser steps that ``SplitConfig.round_iterations`` names, and logs every split; :class:`SecondOrderHook`
reports, for every run, split or not, ||grad J|| and the smallest splitting eigenvalue at the final candidates
(:func:`trainrecon.refinement.splitting.second_order_report`); :class:`CollapseHook` reports, for every run, how
many distinct candidates it ends with (:func:`trainrecon.refinement.merging.collapse_report`); :class:`MergingHook`
merges near-duplicate candidates and re-seeds the freed ones at the iterations ``MergeConfig.round_iterations``
names (:mod:`trainrecon.refinement.merging`).  :func:`standard_hooks` is the set a run of a given attack config
gets.
"""

from __future__ import annotations

from typing import Any

import dataclasses
import time

import numpy as np
import torch

from ..models.activations import Surrogate
from ..objective.candidates import CandidateSet
from ..refinement.consensus import THRESHOLD as CONSENSUS_THRESHOLD, merge_restarts
from ..refinement.merging import collapse_report, merge_groups, reseed, similarity_groups
from ..refinement.settings import MergeConfig, SplitConfig
from ..refinement.splitting import second_order_report, split_round
from .interface import AttackHook, Reports, Step


def lookahead(attack, cands: CandidateSet, start: int, iterations: int) -> float:
    """J after ``iterations`` steps of the attack's own optimisers from ``cands`` (iterations start, start + 1, ...),
    on copies: ``cands`` and its optimiser state are left as they are."""
    c = dataclasses.replace(cands, x=cands.x.clone(), multipliers=cands.multipliers.clone(),
                            state_x={k: v.clone() for k, v in cands.state_x.items()},
                            state_m={k: v.clone() for k, v in cands.state_m.items()})
    opt_x, opt_m = attack.optimisers()
    for it in range(start, start + iterations):
        _, gx, gm = attack.objective(it, c).value_and_grad(c.x, c.multipliers)
        c.x = opt_x.step(c.x, gx, c.state_x)
        c.multipliers = opt_m.step(c.multipliers, gm, c.state_m)
    return float(attack.objective(start + iterations, c).value_and_grad(c.x, c.multipliers)[0]["total"])


class SplittingHook(AttackHook):
    """Rounds of sample splitting at the iterations of ``cfg.round_iterations(iterations)``, or where the loss
    stalls (``cfg.trigger = "stall"``: see :class:`~.config.SplitConfig`).

    Checkpointed state: ``splits`` (one record per tried split, with the iteration), ``split_seconds`` and
    ``unsplittable``; files: ``splits.json`` and, when a split was accepted in this session,
    ``split_images.npz`` (parent, child +, child - per accepted split)."""

    key = "splitting"
    implements = "split"

    def __init__(self, cfg: SplitConfig, input_shape: tuple[int, ...]):
        self.cfg, self.input_shape = cfg, tuple(input_shape)
        self.splits: list[dict[str, Any]] = []
        self.seconds, self.unsplittable = 0.0, 0
        self.images: list[torch.Tensor] = []
        self._rounds: dict[int, int] | None = None
        self.window: list[float] = []  # J over the last stall_window + 1 iterations (trigger "stall")
        self.round_at: list[int] = []  # iterations of the stall-triggered rounds
        self.lookaheads: list[dict[str, Any]] = []  # acceptance "continue": one record per judged round

    def restore(self, meta: dict[str, Any]) -> None:
        self.splits = list(meta.get("splits", []))
        self.seconds, self.unsplittable = float(meta.get("split_seconds", 0.0)), int(meta.get("unsplittable", 0))
        self.window = [float(v) for v in meta.get("split_loss_window", [])]
        self.round_at = [int(v) for v in meta.get("split_round_at", [])]
        self.lookaheads = list(meta.get("split_lookaheads", []))

    def state(self) -> dict[str, Any]:
        return {"splits": self.splits, "split_seconds": self.seconds, "unsplittable": self.unsplittable,
                "split_loss_window": self.window, "split_round_at": self.round_at,
                "split_lookaheads": self.lookaheads}

    def _due(self, step: Step) -> int | None:
        """The index of the round due after this step, or None."""
        if self._rounds is None:  # once per run, not per iteration
            self._rounds = {it: k for k, it in enumerate(self.cfg.round_iterations(step.iterations))}
        if self.cfg.trigger == "schedule":
            return self._rounds.get(step.done)
        schedule = list(self._rounds)
        w = self.cfg.stall_window
        self.window = (self.window + [float(step.values["total"])])[-(w + 1):]
        if len(self.round_at) >= len(schedule) or step.done < (schedule[0] if schedule else step.iterations):
            return None
        if self.round_at and step.done - self.round_at[-1] < w or len(self.window) <= w:
            return None
        old, new = self.window[0], self.window[-1]
        if old - new < self.cfg.stall_decrease * abs(old):
            self.round_at.append(step.done)
            return len(self.round_at) - 1
        return None

    def after_step(self, step: Step) -> bool:
        k = self._due(step)
        if k is None:
            return False
        obj = step.attack.objective(step.done, step.cands)
        smooth = None if self.cfg.curvature == "descent" else step.attack.objective(
            step.done, step.cands, Surrogate("softplus", step.attack.surrogate(step.done).sharpness))
        before = step.cands
        r = split_round(obj, step.cands, self.cfg, k, smooth)
        if self.cfg.acceptance == "continue" and any(e["accepted"] for e in r.log):
            t0 = time.time()
            with_round = lookahead(step.attack, r.cands, step.done, self.cfg.continue_iterations)
            without = lookahead(step.attack, before, step.done, self.cfg.continue_iterations)
            kept = with_round < without
            self.lookaheads.append({"iteration": step.done, "loss_with_round": with_round,
                                    "loss_without_round": without, "kept": bool(kept)})
            r.seconds += time.time() - t0
            if not kept:  # roll back: the round's splits are logged as not kept
                r = dataclasses.replace(r, cands=before, images=None,
                                        log=[{**e, "accepted": False, "rolled_back": True} for e in r.log])
        step.cands = r.cands
        self.seconds, self.unsplittable = self.seconds + r.seconds, self.unsplittable + r.unsplittable
        self.splits.extend({"iteration": step.done, **e} for e in r.log)
        if r.images is not None:
            self.images.append(r.images)
        return True

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        return {"rounds": len({e["iteration"] for e in self.splits}), "tried": len(self.splits),
                "accepted": sum(e["accepted"] for e in self.splits), "unsplittable_passed_over": self.unsplittable,
                "rounds_rolled_back": sum(not e["kept"] for e in self.lookaheads),
                "seconds": self.seconds, "share_of_wall_clock": self.seconds / max(seconds, 1e-12)}

    def artifacts(self) -> dict[str, Any]:
        files: dict[str, Any] = {"splits.json": {"splits": self.splits, "lookaheads": self.lookaheads}}
        if self.images:
            files["split_images.npz"] = {
                "x": torch.cat(self.images).detach().cpu().double().numpy().reshape(-1, 3, *self.input_shape)}
        return files


class SecondOrderHook(AttackHook):
    """The run's second-order status at its final candidates: ||grad J||, the smallest eigenvalue of every
    splitting matrix S_j and how many lie below -``cfg.threshold`` (``loss.json["second_order"]``); for a run
    stopped before its restarts' consensus, its first restart's."""

    key = "second_order"

    def __init__(self, cfg: SplitConfig):
        self.cfg = cfg

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        c = step.cands.blocks()[0]  # a run stopped before its restarts' consensus: its first restart's
        return second_order_report(step.attack.objective(step.end, c), c, self.cfg.threshold, self.cfg.lanczos_steps,
                                   self.cfg.seed)


class CollapseHook(AttackHook):
    """How many distinct candidates the run ends with (``loss.json["collapse"]``): greedy cosine-similarity groups
    of the final candidates at 0.99 and 0.95, with the largest group
    (:func:`trainrecon.refinement.merging.collapse_report`)."""

    key = "collapse"

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        return collapse_report(step.cands.x, step.cands.multipliers)


class MergingHook(AttackHook):
    """Rounds of merging at the iterations of ``cfg.round_iterations(iterations)``: near-duplicates (same label,
    cosine >= ``cfg.threshold``) become their leader with the multipliers summed, the freed candidates start
    afresh from the method's initialisation (:meth:`~trainrecon.attacks.method.Method.draw`) with a generator
    seeded by (attack seed, ``cfg.seed``, round).

    Checkpointed state: ``merges`` (one record per round: iteration, groups merged, candidates re-seeded, the
    largest group); file: ``merges.json``."""

    key = "merging"
    implements = "merge"

    def __init__(self, cfg: MergeConfig):
        self.cfg = cfg
        self.merges: list[dict[str, Any]] = []
        self._rounds: dict[int, int] | None = None

    def restore(self, meta: dict[str, Any]) -> None:
        self.merges = list(meta.get("merges", []))

    def state(self) -> dict[str, Any]:
        return {"merges": self.merges}

    def after_step(self, step: Step) -> bool:
        if self._rounds is None:
            self._rounds = {it: k for k, it in enumerate(self.cfg.round_iterations(step.iterations))}
        if step.done not in self._rounds:
            return False
        c = step.cands
        groups = similarity_groups(c.x, self.cfg.threshold, c.multipliers, c.labels)
        freed = sum(len(g) - 1 for g in groups)
        self.merges.append({"iteration": step.done, "groups_merged": sum(len(g) > 1 for g in groups),
                            "reseeded": freed, "largest": max(len(g) for g in groups)})
        if not freed:
            return False
        seed = int(np.random.SeedSequence([int(step.attack.cfg.seed), self.cfg.seed,
                                           self._rounds[step.done]]).generate_state(1)[0])
        g = torch.Generator().manual_seed(seed)
        # the control (select "random"): as many random candidates start afresh, nothing merged
        picked = torch.randperm(c.m, generator=g)[:freed].tolist() if self.cfg.select == "random" else None
        fx, fm = step.attack.draw(freed, g)
        step.cands = merge_groups(c, groups, fx, fm) if picked is None else reseed(c, picked, fx, fm)
        return True

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        return {"rounds": len(self.merges), "reseeded": sum(e["reseeded"] for e in self.merges),
                "groups_merged": sum(e["groups_merged"] for e in self.merges), "threshold": self.cfg.threshold}

    def artifacts(self) -> dict[str, Any]:
        return {"merges.json": {"merges": self.merges}}


class ConsensusHook(AttackHook):
    """``attack.restarts``: when the run finishes (its last iteration, or a hook ends it there, as the wall-clock
    budget does; this hook acts after the budget's), its R blocks become their consensus, m candidates
    (:func:`trainrecon.refinement.consensus.merge_restarts`: the pixel median of each image that several restarts
    find), and the checkpoint written after that step holds them.  A run stopped before its end (a test's
    ``stop_after``, a pruned sweep trial, Ctrl-C) keeps its blocks, and resumed, continues them.
    ``loss.json["restarts"]``: R, the threshold and each group's size."""

    key = "restarts"
    implements = "restarts"

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    def restore(self, meta: dict[str, Any]) -> None:
        record = meta.get("restarts_merged")
        if record is not None and not (isinstance(record, dict) and isinstance(record.get("restarts"), int)
                                       and isinstance(record.get("group_sizes"), list)):
            raise ValueError("restarts_merged")  # the loop refuses the checkpoint in one line
        self.record = record

    def state(self) -> dict[str, Any]:
        return {"restarts_merged": self.record}

    def after_step(self, step: Step) -> bool:
        c = step.cands
        if c.restarts == 1 or not (step.done == step.iterations or step.finish_now):
            return False
        step.cands, sizes = merge_restarts(c)
        self.record = {"restarts": c.restarts, "threshold": CONSENSUS_THRESHOLD, "group_sizes": sizes}
        return True

    def finish(self, step: Step, seconds: float) -> dict[str, Any] | None:
        return self.record


def consensus(restarts: int) -> list[AttackHook]:
    """The restarts' consensus where a run has several (:class:`ConsensusHook`); none for one (its loss.json is
    what it was before restarts existed)."""
    return [ConsensusHook()] if restarts > 1 else []


def standard_hooks(split: SplitConfig, input_shape: tuple[int, ...],
                   merge: MergeConfig | None = None) -> list[AttackHook]:
    """The hooks every run gets: the second-order report, the collapse count, merging of near-duplicates when
    ``merge.enabled`` and sample splitting when ``split.enabled`` (in that order: at a shared iteration the
    duplicates are merged before the blends are split); a refinement that is off reports null."""
    hooks: list[AttackHook] = [SecondOrderHook(split), CollapseHook()]
    hooks.append(MergingHook(merge) if merge is not None and merge.enabled else Reports(MergingHook.key))
    hooks.append(SplittingHook(split, input_shape) if split.enabled else Reports(SplittingHook.key))
    return hooks


__all__ = ["CollapseHook", "ConsensusHook", "MergingHook", "SecondOrderHook", "SplittingHook", "consensus",
           "standard_hooks"]
