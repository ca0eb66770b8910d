"""The layer below the methods and the refinements: what every attack optimises and what may act on it.

:mod:`.weighted_sum` (J = F(sum_j w_j g(x_j)) + R with its parts s, u = dF/ds and the per-candidate term h_j),
:mod:`.candidates` (the candidate set and its operations), :mod:`.hooks` (the interface through which
refinements such as sample splitting and a sweep's pruning act on a running attack without the attack's loop
knowing them).
"""

from .candidates import CandidateSet
from .hooks import AttackHook, Step
from .weighted_sum import DeadZoneDistance, OuterLoss, SquaredDistance, WeightedSumObjective

__all__ = ["AttackHook", "CandidateSet", "DeadZoneDistance", "OuterLoss", "SquaredDistance", "Step", "WeightedSumObjective"]
