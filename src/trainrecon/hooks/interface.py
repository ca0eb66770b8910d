"""Hooks: what runs beside an attack's loop and may act on its candidates.

The loop (:func:`trainrecon.attacks.runner.run_attack`) knows only this interface.  After every optimiser
step it hands each hook a :class:`Step`; a hook may replace ``step.cands`` (sample splitting does, in
:mod:`.refinement`) and returns True when it did, so the loop checkpoints at once; it may also
end the run after this step as a finished run (:meth:`Step.finish_here`: the wall-clock budget,
:class:`.budget.TimeBudget`, also asked once before a session's first step,
:meth:`AttackHook.before_loop`).  At every logged iteration :meth:`AttackHook.after_log` may end the run early,
unfinished (a sweep pruning a hopeless trial, :class:`.pruning.PruneHook`).  A hook's state travels in the
run's checkpoint (:meth:`AttackHook.state`, :meth:`AttackHook.restore`), its summary into the result's
``stats[key]`` (loss.json; :meth:`AttackHook.finish`) and its files into the result's ``artifacts`` and the run
folder (:meth:`AttackHook.artifacts`).

``implements`` names the attack-config field a hook carries out (``"split"``, ``"merge"``, ``"max_seconds"``): a
run whose config enables that field (``.enabled``, or a nonzero value) without a hook that implements it is
refused rather than run without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ..objective.candidates import CandidateSet


@dataclass
class Step:
    """The attack as a hook sees it after an optimiser step.

    ``done`` iterations of ``iterations`` are done (``end`` is where this session stops); ``cands`` is the
    current candidate set (a hook may replace it); ``attack`` is the method instance, whose
    ``objective(it, cands, surrogate=None)`` builds the objective at iteration ``it`` and ``surrogate(it)``
    gives its activation; ``values`` are the loss parts of this step; ``elapsed()`` the run's wall-clock seconds
    so far, summed over every session of a resumed run; ``finish_now`` whether a hook ended the run here
    (:meth:`finish_here`)."""

    done: int
    iterations: int
    end: int
    cands: CandidateSet
    attack: Any
    values: dict[str, float]
    elapsed: Callable[[], float] = lambda: 0.0
    finish_now: bool = False

    def finish_here(self) -> None:
        """End the run after this step as a finished run: the loop appends this iteration to the history,
        writes a checkpoint and the results (a logged iteration's ending by :meth:`AttackHook.after_log` comes
        first)."""
        self.finish_now = True


class AttackHook:
    """Base class of hooks (every method has a do-nothing default)."""

    key: ClassVar[str] = "hook"
    implements: ClassVar[str | None] = None

    def restore(self, meta: dict[str, Any]) -> None:
        """Take back this hook's state from a checkpoint's metadata (a resumed run)."""

    def state(self) -> dict[str, Any]:
        """JSON-able state saved in every checkpoint's metadata (keys shared by every hook of a run)."""
        return {}

    def before_loop(self, step: Step) -> None:
        """Called once before a session's first step (``step.done`` is where it starts, ``step.values`` empty,
        ``step.elapsed()`` the seconds of the run's earlier sessions); :meth:`Step.finish_here` ends the run there,
        before any step."""

    def after_step(self, step: Step) -> bool:
        """Called after each optimiser step; True when ``step.cands`` was replaced (checkpoint now).
        :meth:`Step.finish_here` ends the run after this step."""
        return False

    def after_log(self, step: Step, refit) -> bool:
        """Called at each logged iteration before ``step.end``; ``refit()`` computes the candidates' refit
        residual.  True ends the run here (its candidates are written)."""
        return False

    def spent(self, step: Step) -> float:
        """The share of a budget that ends the run spent by ``step`` (0: this hook ends no run by a budget): a
        run's progress is the largest of these and iterations done / iterations (``attack.lr_final``'s schedule
        follows it)."""
        return 0.0

    def finish(self, step: Step, seconds: float) -> Any:
        """This hook's summary of the run, stored as ``loss.json[key]`` (None: nothing to report)."""
        return None

    def artifacts(self) -> dict[str, dict[str, Any] | dict[str, np.ndarray]]:
        """Files for the run folder: ``name.json`` -> a JSON-able dict, ``name.npz`` -> arrays."""
        return {}




class Reports(AttackHook):
    """A hook that only reports ``value`` under ``key`` at the end of a run: what a refinement that is off says
    in the run's summary (``loss.json["splitting"]: null``), so that the summary's keys come from the hooks a run
    was planned with and never from the loop."""

    def __init__(self, key: str, value: Any = None) -> None:
        self.key, self.value = key, value  # type: ignore[misc]

    def finish(self, step: Step, seconds: float) -> Any:
        return self.value


__all__ = ["AttackHook", "Reports", "Step"]
