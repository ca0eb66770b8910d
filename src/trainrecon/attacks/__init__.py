"""Reconstruction objectives (attacks) and the loop that runs them."""

from .haim import HaimConfig, haim_objective
from .runner import METHODS, reconstruct
from .weighted_sum import WeightedSumObjective

__all__ = ["HaimConfig", "METHODS", "WeightedSumObjective", "haim_objective", "reconstruct"]
