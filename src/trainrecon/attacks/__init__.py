"""Reconstruction methods and the loop that runs them.

A method is one class (:class:`~.method.Method`, registered by name in :data:`~.method.METHODS`): a stationarity
form, a prior, a surrogate activation, candidate labels and initialisation, optimisers.  It builds a
:class:`~.weighted_sum.WeightedSumObjective` over a :class:`~.candidates.CandidateSet`, from what the threat
model gives the attacker (:class:`~.payload.Payload`).  ``haim`` (:mod:`.haim`), ``buzaglo-multiclass`` /
``buzaglo-regression`` (:mod:`.buzaglo`), ``loo-ntk`` (:mod:`.loo`).
"""

from .buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig, BuzagloRegression, BuzagloRegressionConfig
from .candidates import CandidateSet
from .haim import Haim, HaimConfig
from .loo import LooConfig, LooNTK
from .method import METHODS, AttackConfig, Method, method_for, method_named, register
from .payload import Payload, payload_from_folder
from .runner import reconstruct
from .weighted_sum import SquaredDistance, WeightedSumObjective

__all__ = [
    "AttackConfig", "BuzagloMulticlass", "BuzagloMulticlassConfig", "BuzagloRegression", "BuzagloRegressionConfig",
    "CandidateSet", "Haim", "HaimConfig", "LooConfig", "LooNTK", "METHODS", "Method", "Payload", "SquaredDistance",
    "WeightedSumObjective", "method_for", "method_named", "payload_from_folder", "reconstruct", "register",
]
