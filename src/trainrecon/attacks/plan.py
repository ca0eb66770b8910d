"""What a reconstruction method hands the runner: an objective, a starting point and two optimisers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import numpy as np
import torch

from ..config import check_numbers
from ..errors import TrainreconError
from .weighted_sum import WeightedSumObjective


@dataclass
class AttackConfig:
    """Fields every method's config has.  ``m = 0`` means 2 n (twice the training-set size recorded with
    the victim); ``chunk_size`` bounds memory by accumulating the weighted sum over candidate chunks."""

    m: int = 0
    iterations: int = 8000
    lr: float = 0.03
    init_scale: float = 0.1
    dtype: Literal["float64", "float32"] = "float64"
    seed: int = 0
    chunk_size: int = 0
    checkpoint_every: int = 500
    log_every: int = 100

    def __post_init__(self) -> None:
        check_numbers(self, "attack")
        if self.m < 0:
            raise TrainreconError(f"attack.m: need a number of candidates (or 0 for 2n), got {self.m}")
        if self.iterations < 1:
            raise TrainreconError(f"attack.iterations: must be >= 1 (0 would save the random starts as candidates), got {self.iterations}")
        for name in ("checkpoint_every", "log_every", "lr", "init_scale"):
            if getattr(self, name) <= 0:
                raise TrainreconError(f"attack.{name}: must be positive, got {getattr(self, name)}")
        if self.chunk_size < 0:
            raise TrainreconError(f"attack.chunk_size: must be >= 0 (0: one chunk), got {self.chunk_size}")


class Optimizer(Protocol):
    def step(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor: ...


@dataclass
class AttackPlan:
    """``objective(i)`` is the objective at iteration i (constant except for Loo's sharpness schedule);
    X (m, d) and M (multipliers) the initial iterate; ``labels`` the fixed candidate labels to save (None
    when the method has none)."""

    objective: Callable[[int], WeightedSumObjective]
    X: torch.Tensor
    M: torch.Tensor
    opt_x: Optimizer
    opt_m: Optimizer
    labels: np.ndarray | None


def box_penalty(X: torch.Tensor, lo, hi) -> torch.Tensor:
    """sum over candidates and pixels of (x - hi)_+^2 + (lo - x)_+^2."""
    return ((X - hi).clamp_min(0) ** 2).sum() + ((lo - X).clamp_min(0) ** 2).sum()
