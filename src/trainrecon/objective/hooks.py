"""Hooks: what runs beside an attack's loop and may act on its candidates.

The loop (:func:`trainrecon.attacks.runner.run_attack`) knows only this interface.  After every optimiser
step it hands each hook a :class:`Step`; a hook may replace ``step.cands`` (sample splitting does, in
:mod:`trainrecon.refinement.hooks`) and returns True when it did, so the loop checkpoints at once.  At every
logged iteration :meth:`AttackHook.after_log` may end the run early (a sweep pruning a hopeless trial,
:mod:`trainrecon.sweeps.study`).  A hook's state travels in the run's checkpoint (:meth:`AttackHook.state`,
:meth:`AttackHook.restore`), its summary into ``loss.json[key]`` (:meth:`AttackHook.finish`) and its files into
the run folder (:meth:`AttackHook.artifacts`).

``implements`` names the attack-config field a hook carries out (``"split"``): a run whose config enables
that field without a hook that implements it is refused rather than run without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .candidates import CandidateSet


@dataclass
class Step:
    """The attack as a hook sees it after an optimiser step.

    ``done`` iterations of ``iterations`` are done (``end`` is where this session stops); ``cands`` is the
    current candidate set (a hook may replace it); ``attack`` is the method instance, whose
    ``objective(it, cands, surrogate=None)`` builds the objective at iteration ``it`` and ``surrogate(it)``
    gives its activation; ``values`` are the loss parts of this step."""

    done: int
    iterations: int
    end: int
    cands: CandidateSet
    attack: Any
    values: dict[str, float]


class AttackHook:
    """Base class of hooks (every method has a do-nothing default)."""

    key: ClassVar[str] = "hook"
    implements: ClassVar[str | None] = None

    def restore(self, meta: dict[str, Any]) -> None:
        """Take back this hook's state from a checkpoint's metadata (a resumed run)."""

    def state(self) -> dict[str, Any]:
        """JSON-able state saved in every checkpoint's metadata (keys shared by every hook of a run)."""
        return {}

    def after_step(self, step: Step) -> bool:
        """Called after each optimiser step; True when ``step.cands`` was replaced (checkpoint now)."""
        return False

    def after_log(self, step: Step, refit) -> bool:
        """Called at each logged iteration before ``step.end``; ``refit()`` computes the candidates' refit
        residual.  True ends the run here (its candidates are written)."""
        return False

    def finish(self, step: Step, seconds: float) -> Any:
        """This hook's summary of the run, stored as ``loss.json[key]`` (None: nothing to report)."""
        return None

    def artifacts(self) -> dict[str, dict[str, Any] | dict[str, np.ndarray]]:
        """Files for the run folder: ``name.json`` -> a JSON-able dict, ``name.npz`` -> arrays."""
        return {}


__all__ = ["AttackHook", "Step"]
