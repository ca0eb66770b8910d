"""Activations and the attack's surrogates for them: one definition for every architecture.

During reconstruction a ReLU-family activation is replaced by a smooth surrogate (:class:`Surrogate`):

* ``modified_relu`` (Haim et al. 2022): forward value relu(z), derivative sigmoid(alpha z) everywhere,
  written as ``relu(z).detach() + s(z) - s(z).detach()`` with s(z) = softplus(alpha z) / alpha, so it is
  differentiable twice and works under torch.func.
* ``softplus`` (Loo et al. 2023): softplus(beta z) / beta in the forward pass and its exact derivatives.

leaky_relu(z) = slope z + (1 - slope) relu(z) takes the same surrogate on its relu part; gelu and power
(t -> t^degree) are smooth already and are never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Activation = Literal["relu", "leaky_relu", "gelu", "softplus", "power"]
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "softplus", "power")


# where softplus(t) turns into t: torch's default (20) makes the derivative exactly 1 and the second derivative 0
# for t > 20, where sigmoid(t) still differs from 1 by e^-20 = 2e-9; past 40 that difference is below float64's eps
SOFTPLUS_LINEAR = 40.0


@dataclass(frozen=True)
class Surrogate:
    """How the activation is evaluated: ``exact``, ``modified_relu`` (sharpness ``alpha``) or ``softplus``."""

    kind: Literal["exact", "modified_relu", "softplus"] = "exact"
    sharpness: float = 1.0


EXACT = Surrogate()


def activate(z: torch.Tensor, activation: str, surrogate: Surrogate = EXACT, degree: int = 0,
             slope: float = 0.01) -> torch.Tensor:
    """sigma(z) for ``activation`` under ``surrogate`` (see the module docstring)."""
    if activation == "power":
        return z**degree  # smooth already: no surrogate
    if activation == "softplus":  # log(1 + e^z), smooth already: no surrogate
        return F.softplus(z, threshold=SOFTPLUS_LINEAR)
    if surrogate.kind == "exact":
        if activation == "relu":
            return torch.relu(z)
        if activation == "leaky_relu":
            return F.leaky_relu(z, slope)
        return F.gelu(z)
    a = surrogate.sharpness
    if activation == "gelu":
        return F.gelu(z)
    if surrogate.kind == "softplus":
        s = F.softplus(a * z, threshold=SOFTPLUS_LINEAR) / a
        if activation == "leaky_relu":
            return slope * z + (1 - slope) * s
        return s
    # modified ReLU: relu forward, sigmoid(alpha z) derivative (differentiable twice)
    s = F.softplus(a * z, threshold=SOFTPLUS_LINEAR) / a
    exact = torch.relu(z) if activation == "relu" else F.leaky_relu(z, slope)
    if activation == "leaky_relu":
        s = slope * z + (1 - slope) * s
    return exact.detach() + s - s.detach()
