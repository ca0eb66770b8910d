"""The library's entry points that compose packages: an attack run with the refinements its config asks for.

:func:`reconstruct` is :func:`trainrecon.attacks.runner.run_attack` with the hooks every run gets
(:func:`trainrecon.refinement.standard_hooks`: the second-order report, the collapse count, merging of
near-duplicates when ``cfg.merge.enabled`` and sample splitting when ``cfg.split.enabled``) plus any ``hooks`` of the caller's (a sweep's pruning).  The attack's loop itself knows
only the hook interface (:mod:`trainrecon.objective.hooks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .attacks.payload import Payload
from .attacks.method import method_for
from .attacks.runner import run_attack
from .objective.hooks import AttackHook
from .refinement.hooks import standard_hooks


def reconstruct(payload, cfg, out_dir: str | Path, device: torch.device | str = "cpu", resume: bool = False,
                log=print, stop_after: int | None = None, hooks: Sequence[AttackHook] = ()) -> dict[str, Any]:
    """Run the method of ``cfg`` on ``payload`` (a :class:`~trainrecon.attacks.payload.Payload` or a loaded
    victim) into ``out_dir``, with sample splitting when ``cfg.split.enabled`` and the second-order report;
    see :func:`trainrecon.attacks.runner.run_attack` for the arguments and the result."""
    if not isinstance(payload, Payload):
        payload = Payload.of(payload)
    run_cfg, _ = method_for(cfg).adapt(cfg, payload.spec)  # the refinements this victim's run gets
    attached = standard_hooks(run_cfg.split, tuple(payload.spec.input_shape), run_cfg.merge) + list(hooks)
    return run_attack(payload, cfg, out_dir, device, resume, log, stop_after, attached)


__all__ = ["reconstruct"]
