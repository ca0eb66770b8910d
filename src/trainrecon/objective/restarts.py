"""Independent restarts batched in one run (``attack.restarts``): the objective of a candidate set of R blocks,

    J(X, M) = sum_r J_r(X_r, M_r),

J_r the method's objective of block r alone (its own weighted sum, prior and m0).  Block r's gradient is J_r's,
so with per-candidate optimisers each block descends exactly as a run of its own would; what the run then keeps is
their consensus (:mod:`trainrecon.refinement.consensus`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


class Restarts:
    """The summed objective of the module docstring over ``parts`` (one objective per block, in the blocks'
    order; every block has the same number of candidates)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)

    def value_and_grad(self, X: torch.Tensor, M: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """({'total', 'stationarity', 'prior'}: sums over the blocks; 'relative_stationarity': their mean},
        dJ/dX, dJ/dM): each block's gradient is its own objective's."""
        per = X.shape[0] // len(self.parts)
        values, gx, gm = [], [], []
        for r, part in enumerate(self.parts):
            v, g, h = part.value_and_grad(X[r * per:(r + 1) * per], M[r * per:(r + 1) * per])
            values.append(v)
            gx.append(g)
            gm.append(h)
        out = {k: sum(v[k] for v in values) for k in values[0] if k != "relative_stationarity"}
        if "relative_stationarity" in values[0]:
            out["relative_stationarity"] = sum(v["relative_stationarity"] for v in values) / len(values)
        return out, torch.cat(gx), torch.cat(gm)


__all__ = ["Restarts"]
