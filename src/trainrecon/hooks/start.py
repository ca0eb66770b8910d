"""The truth-start control's start (:mod:`trainrecon.pipeline.truth_start`): given images put into candidate slots
of their labels before the attack's first step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .interface import AttackHook


def start_slots(cand_labels: torch.Tensor | None, truth_labels: np.ndarray | None, m: int, n: int) -> list[int]:
    """The candidate slot of each of the first min(n, m) training images: the first free slot with the same label
    where both have labels, else the first free slot."""
    free = list(range(m))
    slots = []
    for i in range(min(n, m)):
        j = free[0]
        if cand_labels is not None and truth_labels is not None:
            same = [k for k in free if float(cand_labels[k]) == float(truth_labels[i])]
            j = same[0] if same else j
        free.remove(j)
        slots.append(j)
    return slots


class StartAt(AttackHook):
    """Before the first step, put the given centred images (n, d) into their slots of the candidate set."""

    key = "truth_start"

    def __init__(self, x: torch.Tensor, labels: np.ndarray | None) -> None:
        self.x, self.labels = x, labels
        self.slots: list[int] = []

    def before_loop(self, step) -> None:
        c = step.cands
        self.slots = start_slots(c.labels, self.labels, c.m, self.x.shape[0])
        x = c.x.detach().clone()
        x[self.slots] = self.x[: len(self.slots)].to(x)
        c.x = x

    def finish(self, last, seconds: float) -> dict[str, Any]:
        return {"started": len(self.slots)}


__all__ = ["StartAt", "start_slots"]
