"""The truth-start control's start (:mod:`trainrecon.pipeline.truth_start`): given images put into candidate slots
of their labels before the attack's first step, and how smooth the attack's objective is there."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .interface import AttackHook


class StartAt(AttackHook):
    """Before the first step, put the given centred images (n, d) into their slots of the candidate set (where the
    attack says: :meth:`~trainrecon.attacks.method.Method.start_at`), and for each ``noise`` level s evaluate the
    attack's objective (the total it descends, at its first iteration) there and at

        X + s E,   E_jp ~ N(0, 1) for the pixels p of the slots j the images took, 0 elsewhere,

    s in the images' own units (pixels in [0, 1]); E drawn from ``seed``.  A smooth objective moves by about
    s |grad J| sqrt(n d), nothing at s = 1e-6; a chaotic one (a training whose final weights an invisible change
    of its images changes: bench/RESULTS.md) by as much as unseen images do.  :attr:`values` maps each level
    (``repr``, ``"0"`` the start itself) to the objective (None where it is not finite)."""

    key = "truth_start"

    def __init__(self, x: torch.Tensor, labels: np.ndarray | None, noise: Sequence[float] = (), seed: int = 0) -> None:
        self.x, self.labels, self.noise, self.seed = x, labels, tuple(noise), seed
        self.slots: list[int] = []
        self.started = 0  # images started (each in every restart's block)
        self.values: dict[str, float] = {}

    def before_loop(self, step) -> None:
        self.slots = step.attack.start_at(step.cands, self.x, self.labels)
        self.started = len(self.slots) // step.cands.restarts
        c = step.cands
        objective = step.attack.objective(step.done, c)
        E = torch.zeros(c.x.shape, dtype=torch.float64)
        E[self.slots] = torch.randn(len(self.slots), c.x.shape[1], dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(self.seed))
        E = E.to(c.x)
        values = {("0" if s == 0 else repr(s)): objective.value_and_grad(c.x + s * E, c.multipliers)[0]["total"]
                  for s in (0.0, *self.noise)}
        self.values = {k: (v if math.isfinite(v) else None) for k, v in values.items()}  # strict JSON

    def finish(self, last, seconds: float) -> dict[str, Any]:
        return {"started": self.started, "objective": self.values}


__all__ = ["StartAt"]
