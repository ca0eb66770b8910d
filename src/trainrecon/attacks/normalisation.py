"""Attacker-side normalisation of the victim's parameter scale, so that one set of defaults works at any scale.

A victim is **homogeneous of degree L** when f(c theta; x) = c^L f(theta; x) for every c > 0: ReLU or leaky-ReLU
layers with a bias on the first layer at most, convolutions, pooling and flatten included
(:meth:`~trainrecon.models.architecture.Architecture.homogeneity`).
Every stationarity form is then equivariant under a uniform rescaling: if

    target(theta) = sum_i w_i grad_theta phi(theta; x_i)

holds for theta, it holds for c theta with the same x_i and w_i c^(2 - L).  So the attack runs on

    theta_hat = theta / kappa,   kappa = sigma(theta) / sigma0,   sigma(theta) = ( sqrt(d) prod_l ||A_l||_2 )^(1/L),

with A_l the l-th parameterised layer as a linear map (a weight matrix's spectral norm; a convolution's operator
norm by power iteration on the convolution itself, with the bounds of the pooling layers before it folded in:
:meth:`~trainrecon.models.architecture.Architecture.lipschitz_factors`), a statistic with
sigma(c theta) = c sigma(theta): theta_hat, and with it every step of the attack, is the same
for a victim and for any rescaled copy of it (up to floating-point rounding).  sqrt(d) prod_l ||W_l||_2 bounds
how much the network's output can change across the pixel box [0, 1]^d (its Lipschitz bound times the box's
diameter): weights alone, nothing the attacker does not have.  The candidates stay in the victim's input space;
the multipliers live at the normalised scale (``multipliers_to_victim_scale`` = kappa^(2 - L) converts them).
For the NTK form theta_0 is divided by the same kappa.

sigma0 = 2.64 is the geometric mean of sigma over the bench's twelve KKT victims trained to unit minimum margin
(digits, MNIST, CIFAR-10; binary, multiclass and regression), where the defaults were tuned: they lie within
0.78 .. 1.19 sigma0 (std of log sigma 0.12).  The output rms over random pixel-box inputs, tried first, spread
twice as far (0.19) and cost up to 5 of 40 images on the demo victim.

**Power activations** sigma(z) = z^alpha with a bias on the first layer at most are homogeneous too
(the architecture's ``homogeneity()``): layer l's pre-activation has degree D_l = 1 + alpha D_(l-1) (D_0 = 0), so a
two-layer x^alpha network f(x) = sum_k a_k (w_k . x + b_k)^alpha has degree alpha + 1.  The same rule then holds
with L = that degree, while sigma keeps the exponent 1 / (number of weight matrices), which is what makes
sigma(c theta) = c sigma(theta).

**Non-homogeneous victims** (a bias after the first layer, GELU) are not normalised: a uniform rescaling changes
*which* function they compute, not only its scale, so no factor maps a rescaled copy back onto the original.
Their attacks run at the victim's own scale, and the run's record says so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from .payload import Payload

Normalise = Literal["auto", "none"]

SIGMA0 = 2.64


def lipschitz_scale(payload: Payload) -> float:
    """sigma = (sqrt(d) prod_l ||A_l||_2)^(1/L) over the parameterised layers' operator norms, d the input size."""
    factors = payload.spec.lipschitz_factors(payload.params)
    if not all(f > 0 for f in factors):
        return 0.0
    log = 0.5 * math.log(payload.spec.input_dim)
    for f in factors:
        log += math.log(f)
    return math.exp(log / len(factors))


def normalise(payload: Payload, mode: Normalise = "auto") -> tuple[Payload, dict[str, Any]]:
    """(the payload the attack runs on, the record of what was done).  See the module docstring."""
    homogeneity = payload.spec.homogeneity()
    degree = homogeneity.degree
    if mode == "none":
        return payload, {"applied": False, "reason": "attack.normalise = 'none'"}
    if degree is None:
        return payload, {"applied": False, "reason": f"victim not homogeneous ({homogeneity.reason}): run at its "
                                                   "own scale"}
    sigma = lipschitz_scale(payload)
    if not sigma > 0:
        return payload, {"applied": False, "reason": "a weight matrix is zero"}
    kappa = sigma / SIGMA0
    scale = lambda ps: None if ps is None else [p / kappa for p in ps]  # noqa: E731
    out = dataclasses.replace(payload, params=scale(payload.params), init_params=scale(payload.init_params),
                              scale=payload.scale * kappa)
    return out, {"applied": True, "rule": "theta / kappa, kappa = (sqrt(d) prod_l ||A_l||_2)^(1/L) / sigma0",
                 "degree": degree, "sigma": sigma, "sigma0": SIGMA0, "kappa": kappa,
                 "multipliers_to_victim_scale": kappa ** (2 - degree)}
