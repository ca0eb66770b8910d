"""The library's entry points that compose packages: an attack run with the refinements its config asks for.

:func:`reconstruct` plans a run once (:func:`trainrecon.attacks.plan.plan_run`: the method, the config adapted to
the victim, m, the checks), attaches the hooks every run gets
(:func:`trainrecon.refinement.standard_hooks`: the second-order report, the collapse count, merging of
near-duplicates when ``cfg.merge.enabled`` and sample splitting when ``cfg.split.enabled``; the wall-clock
budget when ``cfg.max_seconds`` is set, :func:`trainrecon.runtime.time_budget`) plus any ``hooks`` of the
caller's (a sweep's pruning), and runs it (:func:`~trainrecon.attacks.runner.run_attack`) in memory or into a run folder (:class:`trainrecon.runfolder.RunFolder`).  The
attack's loop itself knows only the hook interface (:mod:`trainrecon.objective.hooks`) and the store interface
(:class:`trainrecon.attacks.runner.RunStore`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .attacks.plan import plan_run
from .attacks.runner import run_attack
from .objective.hooks import AttackHook
from .reconstruction import Reconstruction
from .refinement.hooks import standard_hooks
from .runfolder import RunFolder
from .runtime import time_budget


def reconstruct(payload, cfg, out_dir: str | Path | RunFolder | None = None, device: torch.device | str = "cpu",
                resume: bool = False, log=print, stop_after: int | None = None,
                hooks: Sequence[AttackHook] = ()) -> Reconstruction:
    """Reconstruct training data from the weights: run the attack of ``cfg``'s method (``HaimConfig``,
    ``BuzagloMulticlassConfig``, ``BuzagloRegressionConfig``, ``LooConfig``) on ``payload`` (a
    :class:`~trainrecon.attacks.payload.Payload`, or a loaded victim with n disclosed) and return the
    :class:`~trainrecon.reconstruction.Reconstruction`: candidates x (m, C, H, W) in the victim's centred input
    space, multipliers, labels, history and the run's summary (the second-order report, splitting, merging,
    collapse, refit residual, seconds).  Sample splitting runs when ``cfg.split.enabled`` (or where the method
    turns it on for its victim: power victims, :meth:`~trainrecon.attacks.method.Method.adapt`), merging when
    ``cfg.merge.enabled``, and ``cfg.max_seconds`` bounds the wall-clock.

    Without ``out_dir`` the run is in memory only.  With it (a path, or a
    :class:`~trainrecon.runfolder.RunFolder`) the run keeps its folder: config.json, checkpoints (``resume``
    continues one made by this very run; Ctrl-C saves one first), loss.json, candidates.npz, candidates.png and
    the refinements' files.  ``stop_after``: end after that many iterations (tests); ``hooks``: further hooks
    (:mod:`trainrecon.objective.hooks`).  The candidates are the same, bit for bit, with or without a folder."""
    plan = plan_run(payload, cfg, device)  # what this victim's run gets, decided once
    c = plan.cfg
    plan = plan.with_hooks(standard_hooks(c.split, tuple(plan.payload.spec.input_shape), c.merge)
                           + time_budget(c.max_seconds) + list(hooks))
    store = None if out_dir is None else out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
    return run_attack(plan, store, device, resume, log, stop_after)


__all__ = ["reconstruct"]
