"""Settings of sample splitting (:mod:`.splitting`), kept apart so that every attack config can carry them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check_numbers
from ..errors import TrainreconError


@dataclass
class SplitConfig:
    """Settings of the refinement loop (recorded in every run's config.json).

    Rounds start at ``start`` x iterations and repeat every ``every`` x iterations (fractions of the budget);
    each round splits up to ``per_round`` candidates (0: max(2, m0 / 10)).  ``score``: ``eigenvalue`` (most
    negative lambda_min(S_j) first: the paper) or ``multiplier`` (largest |multiplier| first: a blend of k
    images carries about k times one image's weight).  ``direction``: ``eigen`` (the paper) or ``random`` (the
    control).  ``eps_grid``: the line search's eps / ||x_j|| values (the smoothed-ReLU kink makes small eps
    matter).  ``mode``: ``grow`` (m grows to ``max_factor`` x m0) or ``fixed`` (each accepted split removes the
    candidate of smallest exact removal cost).  ``threshold``: lambda_min below -threshold counts as negative
    curvature in the second-order report.  ``min_gain``: a split is kept only if it lowers J by at least this
    fraction of J.  ``skip_kinks > 0`` passes over candidates whose split direction is aligned with a nearby
    first-layer unit (max |cos| above it): splits that only straddle a smoothed ReLU kink.  ``curvature``:
    ``descent`` takes the splitting matrices from the objective being descended (the paper); ``softplus`` from
    the same objective with the activation replaced by softplus(a z) / a at the surrogate's sharpness a, a
    smooth model whose second derivative exists, while the line search still decides on the true objective
    (Haim's modified ReLU has a ReLU forward pass and a sigmoid derivative, so its "Hessian" is not that of
    any loss).  ``trigger``: ``schedule`` runs the rounds at the iterations above; ``stall`` runs a round, from
    ``start`` on, whenever J's relative decrease over the last ``stall_window`` iterations is below
    ``stall_decrease`` and ``stall_window`` iterations have passed since the last round, at most as many rounds
    as the schedule has.  ``acceptance``: ``immediate`` keeps each split whose line search lowers J (above);
    ``continue`` applies every tried split of a round at its best eps, then runs ``continue_iterations`` steps of
    the attack's optimiser from the round's result and from the snapshot before it, and keeps the round only if
    the first ends lower (the theory's gain is second order and the descent goes on from the new point);
    otherwise the round is rolled back.  The look-ahead steps are overhead, not counted as iterations.
    """

    enabled: bool = False
    start: float = 0.6
    every: float = 0.05
    per_round: int = 0
    score: Literal["eigenvalue", "multiplier"] = "eigenvalue"
    direction: Literal["eigen", "random"] = "eigen"
    lanczos_steps: int = 20
    eps_grid: list[float] = field(default_factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    mode: Literal["grow", "fixed"] = "grow"
    max_factor: float = 2.0
    threshold: float = 1e-6
    min_gain: float = 0.0
    skip_kinks: float = 0.0
    curvature: Literal["descent", "softplus"] = "descent"
    acceptance: Literal["immediate", "continue"] = "immediate"
    continue_iterations: int = 100
    trigger: Literal["schedule", "stall"] = "schedule"
    stall_window: int = 200
    stall_decrease: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "attack.split")
        if not (0 <= self.start <= 1 and 0 < self.every <= 1):
            raise TrainreconError("attack.split.start must be in [0, 1] and attack.split.every in (0, 1]")
        if self.per_round < 0 or self.lanczos_steps < 1 or self.max_factor < 1 or self.threshold < 0 or self.min_gain < 0 \
                or not 0 <= self.skip_kinks <= 1:
            raise TrainreconError("attack.split: per_round >= 0, lanczos_steps >= 1, max_factor >= 1, threshold and "
                                  "min_gain >= 0, skip_kinks in [0, 1]")
        if self.stall_window < 1 or self.stall_decrease < 0 or self.continue_iterations < 1:
            raise TrainreconError("attack.split: stall_window >= 1, stall_decrease >= 0, continue_iterations >= 1")
        if not self.eps_grid or any(e <= 0 for e in self.eps_grid):
            raise TrainreconError(f"attack.split.eps_grid: need positive values, got {self.eps_grid}")

    def round_iterations(self, iterations: int) -> list[int]:
        """The iterations after which a round runs."""
        first = max(1, int(round(self.start * iterations)))
        step = max(1, int(round(self.every * iterations)))
        return list(range(first, iterations, step))


@dataclass
class MergeConfig:
    """Settings of the merging of near-duplicate candidates (:mod:`.merging`; recorded in every run's config.json).

    Rounds run after ``start`` x iterations and every ``every`` x iterations, the last one no later than ``stop`` x
    iterations (a re-seeded candidate needs the rest of the budget to converge).  A group is a leader (the largest
    |multiplier| not yet grouped) and every candidate of its label whose cosine similarity to it, in the centred
    input space, is at least ``threshold``; each group becomes its leader with the group's multipliers summed,
    and the freed candidates start again from the method's own initialisation, drawn from ``seed``, the attack's
    seed and the round.  ``select = "random"`` is the control: as many candidates as the duplicate rule would free,
    chosen at random, start afresh (their multipliers dropped, nothing merged).
    """

    enabled: bool = False
    threshold: float = 0.95
    select: Literal["duplicates", "random"] = "duplicates"
    start: float = 0.2
    every: float = 0.1
    stop: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "attack.merge")
        if not (0 < self.threshold <= 1 and 0 <= self.start <= self.stop <= 1 and 0 < self.every <= 1):
            raise TrainreconError("attack.merge: threshold in (0, 1], 0 <= start <= stop <= 1, every in (0, 1]")

    def round_iterations(self, iterations: int) -> list[int]:
        """The iterations after which a merging round runs."""
        first = max(1, int(round(self.start * iterations)))
        step = max(1, int(round(self.every * iterations)))
        last = min(iterations - 1, int(round(self.stop * iterations)))
        return list(range(first, last + 1, step))
