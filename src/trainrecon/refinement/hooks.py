"""Sample splitting and the second-order report as hooks on a running attack (:mod:`trainrecon.objective.hooks`).

:class:`SplittingHook` runs a splitting round (:func:`.splitting.split_round`) after the optimiser steps that
``SplitConfig.round_iterations`` names, and logs every split; :class:`SecondOrderHook` reports, for every run,
split or not, ||grad J|| and the smallest splitting eigenvalue at the final candidates
(:func:`.splitting.second_order_report`).  :func:`standard_hooks` is the set a run of a given attack config
gets.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.mlp import Surrogate
from ..objective.hooks import AttackHook, Step
from .config import SplitConfig
from .splitting import second_order_report, split_round


class SplittingHook(AttackHook):
    """Rounds of sample splitting at the iterations of ``cfg.round_iterations(iterations)``.

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

    def restore(self, meta: dict[str, Any]) -> None:
        self.splits = list(meta.get("splits", []))
        self.seconds, self.unsplittable = float(meta.get("split_seconds", 0.0)), int(meta.get("unsplittable", 0))

    def state(self) -> dict[str, Any]:
        return {"splits": self.splits, "split_seconds": self.seconds, "unsplittable": self.unsplittable}

    def after_step(self, step: Step) -> bool:
        if self._rounds is None:
            self._rounds = {it: k for k, it in enumerate(self.cfg.round_iterations(step.iterations))}
        if step.done not in self._rounds:
            return False
        obj = step.attack.objective(step.done, step.cands)
        smooth = None if self.cfg.curvature == "descent" else step.attack.objective(
            step.done, step.cands, Surrogate("softplus", step.attack.surrogate(step.done).sharpness))
        r = split_round(obj, step.cands, self.cfg, self._rounds[step.done], smooth)
        step.cands = r.cands
        self.seconds, self.unsplittable = self.seconds + r.seconds, self.unsplittable + r.unsplittable
        self.splits.extend({"iteration": step.done, **e} for e in r.log)
        if r.images is not None:
            self.images.append(r.images)
        return True

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        return {"rounds": len({e["iteration"] for e in self.splits}), "tried": len(self.splits),
                "accepted": sum(e["accepted"] for e in self.splits), "unsplittable_passed_over": self.unsplittable,
                "seconds": self.seconds, "share_of_wall_clock": self.seconds / max(seconds, 1e-12)}

    def artifacts(self) -> dict[str, Any]:
        files: dict[str, Any] = {"splits.json": {"splits": self.splits}}
        if self.images:
            files["split_images.npz"] = {
                "x": torch.cat(self.images).detach().cpu().double().numpy().reshape(-1, 3, *self.input_shape)}
        return files


class SecondOrderHook(AttackHook):
    """The run's second-order status at its final candidates: ||grad J||, the smallest eigenvalue of every
    splitting matrix S_j and how many lie below -``cfg.threshold`` (``loss.json["second_order"]``)."""

    key = "second_order"

    def __init__(self, cfg: SplitConfig):
        self.cfg = cfg

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        return second_order_report(step.attack.objective(step.end, step.cands), step.cands, self.cfg.threshold,
                                   self.cfg.lanczos_steps, self.cfg.seed)


def standard_hooks(split: SplitConfig, input_shape: tuple[int, ...]) -> list[AttackHook]:
    """The hooks every run gets: the second-order report, and sample splitting when ``split.enabled``."""
    hooks: list[AttackHook] = [SecondOrderHook(split)]
    if split.enabled:
        hooks.append(SplittingHook(split, input_shape))
    return hooks


__all__ = ["SecondOrderHook", "SplittingHook", "standard_hooks"]
