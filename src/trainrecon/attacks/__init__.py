"""Reconstruction objectives (attacks) and the loop that runs them.

Every method is a :class:`~.weighted_sum.WeightedSumObjective` (a loss of a weighted sum of per-sample
feature vectors) plus a starting point and optimisers (:class:`~.plan.AttackPlan`):
``haim`` (:mod:`.haim`), ``buzaglo-multiclass`` / ``buzaglo-regression`` (:mod:`.buzaglo`), ``loo-ntk`` (:mod:`.loo`).
"""

from .buzaglo import BuzagloMulticlassConfig, BuzagloRegressionConfig
from .haim import HaimConfig, haim_objective
from .loo import LooConfig
from .runner import METHODS, reconstruct
from .weighted_sum import WeightedSumObjective

__all__ = [
    "HaimConfig", "BuzagloMulticlassConfig", "BuzagloRegressionConfig", "LooConfig",
    "METHODS", "WeightedSumObjective", "haim_objective", "reconstruct",
]
