"""The library's entry points that compose packages: an attack run with the refinements its config asks for.

:func:`reconstruct` plans a run once (:func:`trainrecon.attacks.plan.plan_run`: the method, the config adapted to
the victim, m, the checks), attaches the hooks every run gets (:func:`trainrecon.hooks.run_hooks`: the
second-order report, the collapse count, merging of near-duplicates when ``cfg.merge.enabled`` and sample
splitting when ``cfg.split.enabled``; the wall-clock budget when ``cfg.max_seconds`` is set) plus any ``hooks`` of
the caller's (a sweep's pruning), and runs it (:func:`~trainrecon.attacks.runner.run_attack`) in memory or into a
run folder (:class:`trainrecon.runfolder.RunFolder`).  The attack's loop itself knows only the hook interface
(:mod:`trainrecon.hooks.interface`) and the store interface (:class:`trainrecon.attacks.runner.RunStore`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch

from .attacks.plan import RunPlan, plan_run
from .attacks.runner import run_attack
from .errors import Diverged
from .hooks import AttackHook, run_hooks
from .reconstruction import Reconstruction
from .refinement.settings import MergeConfig, SplitConfig
from .runfolder import RunFolder


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
    (:mod:`trainrecon.hooks`).  The candidates are the same, bit for bit, with or without a folder."""
    plan = steady(plan_run(payload, cfg, device), device)  # what this victim's run gets, decided once
    plan = plan.with_hooks(run_hooks(plan.cfg, plan.payload.spec.input_shape) + list(hooks))
    store = None if out_dir is None else out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
    return run_attack(plan, store, device, resume, log, stop_after)


def steady(plan: RunPlan, device: torch.device | str = "cpu", backoff: float = 3.0, tries: int = 3) -> RunPlan:
    """The plan with a step size that does not diverge at the start: where the method asks for a probe
    (``probe_iterations``), the config's lr is its default and the victim is attacked at its own scale (not
    normalised), run the attack for that many iterations in memory (same seed, one restart, no refinements) and
    divide lr by ``backoff`` while the probe diverges (at most ``tries`` times); the plan's ``adapted`` record says
    so.  The probe is deterministic, so a resumed run plans the same lr.  Otherwise the plan as it is."""
    cfg, k = plan.cfg, plan.method.probe_iterations
    if not k or not cfg.adapt or cfg.lr != type(cfg)().lr or plan.normalisation["applied"]:
        return plan
    lr = cfg.lr
    for _ in range(tries + 1):
        probe = dataclasses.replace(cfg, lr=lr, iterations=k, log_every=k, checkpoint_every=k, max_seconds=0.0,
                                    split=SplitConfig(), merge=MergeConfig(), compile="none",  # too short to compile
                                    restarts=1)  # the first restart's start stands for the others'
        try:
            run_attack(dataclasses.replace(plan, cfg=probe, hooks=()), device=device, log=lambda *a: None)
            break
        except Diverged:
            lr /= backoff
    else:
        return plan  # every rate tried diverged: the run itself says so, naming its rate
    if lr == cfg.lr:
        return plan
    record = dict(plan.adapted or {})
    why = (f"lr {cfg.lr:g} diverged within {k} iterations of a probe on this victim, attacked at its own scale "
           f"(not homogeneous): lr {lr:.3g}")
    record["fields"] = {**record.get("fields", {}), "lr": lr}
    record["reason"] = "; ".join(r for r in (record.get("reason"), why) if r)
    return dataclasses.replace(plan, cfg=dataclasses.replace(cfg, lr=lr), adapted=record)


__all__ = ["reconstruct", "steady"]
