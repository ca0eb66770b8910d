"""The multipliers solved rather than descended (``attack.solve_multipliers_every``), as a hook on the loop.

Every ``every`` iterations (never at the last; not at the start, where candidates at the initial scale would
need multipliers that make the next step diverge), the multipliers are replaced by the best ones for the current candidates,

    M* = argmin_{M (>= 0 for the KKT form)} F( sum_jk w_jk(M) grad_theta phi_k(theta; x_j) ),

F the objective's stationarity term (quadratic: the plain or projected squared distance), from its normal
equations (:meth:`~trainrecon.objective.weighted_sum.WeightedSumObjective.normal_equations`) by NNLS, or by
minimum-norm least squares where the multipliers are free (:func:`~trainrecon.models.stationarity.gram_fit`);
the weights w(M) are linear in M, so M* follows from w*.  The multipliers' optimiser state (momentum) starts
afresh.  The prior's multiplier terms (Haim's lambda_min penalty) are not part of the solve; the descent that
follows applies them.  Where F is not quadratic (``init_tolerance``'s dead zone, Loo's kernel at both points) or
the per-candidate gradients would take more than a quarter of the free memory, nothing is solved and the run's
summary says why.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..models.stationarity import active_count, gram_fit
from ..runtime import available_bytes
from .interface import AttackHook, Reports, Step


class MultiplierSolve(AttackHook):
    """Solve the multipliers after every ``every``-th optimiser step (before the last); ``loss.json``'s
    ``multiplier_solves`` lists each solve (iteration, the relative stationarity before and after, active
    multipliers, seconds) or says why none was made."""

    key = "multiplier_solves"
    implements = "solve_multipliers_every"

    def __init__(self, every: int) -> None:
        self.every = int(every)
        self.solves: list[dict[str, Any]] = []
        self.skipped: str | None = None

    def restore(self, meta: dict[str, Any]) -> None:
        self.solves = list(meta.get("multiplier_solves", []))

    def state(self) -> dict[str, Any]:
        return {"multiplier_solves": self.solves}

    def after_step(self, step: Step) -> bool:
        if step.done % self.every or step.done >= step.iterations or self.skipped:
            return False
        t0 = time.time()
        c, attack = step.cands, step.attack
        obj = attack.objective(step.done, c)
        one = torch.ones_like(c.multipliers)
        unit = obj.weights(one)  # checked before the per-candidate gradients are computed
        if not torch.allclose(obj.weights(2 * one), 2 * unit) or unit.numel() != one.numel():
            eq = "the method's weights are not one linear function of each multiplier"
        else:
            free = available_bytes(c.x.device)
            eq = obj.normal_equations(c.x, None if free is None else free / 4)
        if isinstance(eq, str):
            self.skipped = eq
            return False
        K, b, c0, k = eq
        w, res2 = gram_fit(K, b, c0, attack.form.nonneg)
        W = torch.as_tensor(w, dtype=c.multipliers.dtype, device=c.multipliers.device).reshape(unit.shape)
        c.multipliers = (W / unit).reshape(c.multipliers.shape)
        c.state_m = {}
        before = step.values.get("relative_stationarity")
        self.solves.append({"iteration": step.done, "relative_stationarity_before": before,
                            "relative_stationarity_after": res2 / c0 if c0 > 0 else 0.0, "active": active_count(w),
                            "seconds": time.time() - t0})
        return True

    def finish(self, step: Step, seconds: float) -> dict[str, Any]:
        return {"every": self.every, "solves": self.solves, "not_solved": self.skipped,
                "seconds": sum(s["seconds"] for s in self.solves)}


def multiplier_solve(every: int) -> list[AttackHook]:
    """The hooks a run with this ``attack.solve_multipliers_every`` gets (0: one that reports null)."""
    return [MultiplierSolve(every) if every else Reports(MultiplierSolve.key)]


__all__ = ["MultiplierSolve", "multiplier_solve"]
