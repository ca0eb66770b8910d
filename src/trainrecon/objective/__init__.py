"""The layer below the methods and the refinements: what every attack optimises and what may act on it.

:mod:`.weighted_sum` (J = F(sum_j w_j g(x_j)) + R with its parts s, u = dF/ds and the per-candidate term h_j),
:mod:`.candidates` (the candidate set and its operations).  What acts on a running attack (refinements, the time
budget, a sweep's pruning) does so through the hook interface of :mod:`trainrecon.hooks`.
"""

from .candidates import CandidateSet
from .weighted_sum import DeadZoneDistance, OuterLoss, SquaredDistance, WeightedSumObjective

__all__ = ["CandidateSet", "DeadZoneDistance", "OuterLoss", "SquaredDistance", "WeightedSumObjective"]
