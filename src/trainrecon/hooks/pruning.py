"""A sweep trial's pruning as a hook on its attack's loop (:mod:`trainrecon.sweeps.study` attaches it)."""

from __future__ import annotations

import math

from .interface import AttackHook, Step


class PruneHook(AttackHook):
    """A sweep trial's pruning: at the milestone iterations, report the refit residual to optuna and end the
    run when optuna's pruner says so; end a diverging run at once."""

    key = "pruning"

    def __init__(self, trial, milestones: list[int], n_milestones: int, prune: bool):
        self.trial, self.milestones, self.n, self.prune = trial, milestones, n_milestones, prune

    def after_log(self, step: Step, refit) -> bool:
        values = step.values
        if not math.isfinite(values["total"]):
            return True
        if not self.milestones or step.done < self.milestones[0]:
            return False
        index = self.n - len(self.milestones)
        self.milestones.pop(0)
        score = refit()
        self.trial.report(values["relative_stationarity"] if score is None else score, index)
        return self.prune and self.trial.should_prune()


__all__ = ["PruneHook"]
