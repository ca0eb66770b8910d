"""The truth-start control's start (:mod:`trainrecon.pipeline.truth_start`): given images put into candidate slots
of their labels before the attack's first step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .interface import AttackHook


class StartAt(AttackHook):
    """Before the first step, put the given centred images (n, d) into their slots of the candidate set (where the
    attack says: :meth:`~trainrecon.attacks.method.Method.start_at`)."""

    key = "truth_start"

    def __init__(self, x: torch.Tensor, labels: np.ndarray | None) -> None:
        self.x, self.labels = x, labels
        self.slots: list[int] = []

    def before_loop(self, step) -> None:
        self.slots = step.attack.start_at(step.cands, self.x, self.labels)

    def finish(self, last, seconds: float) -> dict[str, Any]:
        return {"started": len(self.slots)}


__all__ = ["StartAt"]
