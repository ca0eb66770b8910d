"""What acts on a running attack beside its loop, all in one place: the hook interface (:mod:`.interface`:
:class:`AttackHook`, the :class:`Step` a hook sees, :class:`Reports`) and every hook there is:

* :mod:`.refinement`: sample splitting, merging of near-duplicates, the second-order report, the collapse count and
  the restarts' consensus (``attack.restarts``);
* :mod:`.multipliers`: the multipliers solved for the current candidates (``attack.solve_multipliers_every``);
* :mod:`.budget`: the wall-clock budget (``attack.max_seconds``);
* :mod:`.pruning`: a sweep trial's pruning (attached by :mod:`trainrecon.sweeps.study`);
* :mod:`.start`: the truth-start control's start (attached by :mod:`trainrecon.pipeline.truth_start`).

:func:`run_hooks` is what a run of a given attack config gets (:func:`trainrecon.reconstruct` attaches it); the
loop (:func:`trainrecon.attacks.runner.run_attack`) knows only the interface.
"""

from __future__ import annotations

from .budget import TimeBudget, time_budget
from .interface import AttackHook, Reports, Step
from .multipliers import MultiplierSolve, multiplier_solve
from .pruning import PruneHook
from .refinement import (CollapseHook, ConsensusHook, MergingHook, SecondOrderHook, SplittingHook, consensus,
                         standard_hooks)
from .start import StartAt


def run_hooks(cfg, input_shape: tuple[int, ...]) -> list[AttackHook]:
    """The hooks a run of the attack config ``cfg`` gets, in the order they act after a step: the refinements'
    (:func:`.refinement.standard_hooks` of ``cfg.split`` and ``cfg.merge``), the multipliers' solve of
    ``cfg.solve_multipliers_every`` (:func:`.multipliers.multiplier_solve`), the wall-clock budget of
    ``cfg.max_seconds`` (:func:`.budget.time_budget`), then the consensus of ``cfg.restarts``
    (:func:`.refinement.consensus`: last, so that it sees a run the budget ends)."""
    return (standard_hooks(cfg.split, tuple(input_shape), cfg.merge)
            + multiplier_solve(cfg.solve_multipliers_every) + time_budget(cfg.max_seconds) + consensus(cfg.restarts))


__all__ = ["AttackHook", "CollapseHook", "ConsensusHook", "MergingHook", "MultiplierSolve", "PruneHook", "Reports",
           "SecondOrderHook", "SplittingHook", "StartAt", "Step", "TimeBudget", "consensus", "multiplier_solve",
           "run_hooks", "standard_hooks", "time_budget"]
