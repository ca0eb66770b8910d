"""Reconstruction methods and the loop that runs them (:func:`~.runner.run_attack`; with the refinements a
config asks for attached: :func:`trainrecon.reconstruct`).

A method is one class (:class:`~.method.Method`, registered by name in :data:`~.method.METHODS`): a stationarity
form, a prior, a surrogate activation, candidate labels and initialisation, optimisers.  It builds a
:class:`~trainrecon.objective.WeightedSumObjective` over a :class:`~trainrecon.objective.CandidateSet`, from what the threat
model gives the attacker (:class:`~.payload.Payload`).  ``haim`` (:mod:`.haim`), ``buzaglo-multiclass`` /
``buzaglo-regression`` (:mod:`.buzaglo`), ``loo-ntk`` (:mod:`.loo`), ``simulation`` (:mod:`.simulation`: trains
its candidates from theta_0 by a simulation of the recipe, SimuDy's attack).
"""

from ..objective.candidates import CandidateSet
from ..objective.weighted_sum import SquaredDistance, WeightedSumObjective
from .buzaglo import BuzagloMulticlass, BuzagloMulticlassConfig, BuzagloRegression, BuzagloRegressionConfig
from .haim import Haim, HaimConfig
from .loo import LooConfig, LooNTK
from .method import METHODS, AttackConfig, Method, method_for, method_named, register
from .payload import Payload, payload_from_folder
from .runner import run_attack
from .simulation import Simulation, SimulationConfig

__all__ = [
    "AttackConfig", "BuzagloMulticlass", "BuzagloMulticlassConfig", "BuzagloRegression", "BuzagloRegressionConfig",
    "CandidateSet", "Haim", "HaimConfig", "LooConfig", "LooNTK", "METHODS", "Method", "Payload", "Simulation",
    "SimulationConfig", "SquaredDistance", "WeightedSumObjective", "method_for", "method_named", "payload_from_folder",
    "register", "run_attack",
]
