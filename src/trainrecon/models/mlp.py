"""Fully connected networks as pure functions of their parameters.

``forward(spec, params, x)`` computes f(x; theta) = W_L s(... s(W_1 x + b_1) ...) + b_L, with the same
parameter names as a ``torch.nn.Sequential`` of ``nn.Linear`` under ``layers.{i}``.  Keeping the network
functional lets training, the KKT objective and torch.func transforms (jvp, hessian) share one definition.

During reconstruction the activation can be replaced by a smooth surrogate (``Surrogate``):

* ``modified_relu`` (Haim et al. 2022): forward value relu(z), derivative sigmoid(alpha z) everywhere,
  written as ``relu(z).detach() + s(z) - s(z).detach()`` with s(z) = softplus(alpha z) / alpha, so it is
  differentiable twice and works under torch.func.
* ``softplus`` (Loo et al. 2023): softplus(beta z) / beta in the forward pass and its exact derivatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from ..errors import TrainreconError

Activation = Literal["relu", "leaky_relu", "gelu", "power"]


@dataclass
class MLPSpec:
    """Architecture of an MLP victim (serialised as ``model.json``).

    ``widths`` = [input dim, hidden..., outputs]; ``bias[i]`` says whether ``layers.{i}`` has a bias;
    ``input_shape`` is (C, H, W) of one input, flattened in C-H-W order.  ``activation = "power"`` is
    t -> t^degree (the two-layer polynomial networks of the identifiability module).
    """

    widths: list[int]
    bias: list[bool]
    activation: Activation = "relu"
    input_shape: list[int] = field(default_factory=list)
    degree: int = 0

    def __post_init__(self) -> None:
        if self.activation not in ("relu", "leaky_relu", "gelu", "power"):
            raise TrainreconError(f"model.activation: {self.activation!r} is not one of relu, leaky_relu, gelu, power")
        if (self.activation == "power") != (self.degree > 0):
            raise TrainreconError("model.degree: give a positive degree exactly when activation is 'power'")
        if len(self.widths) < 2 or any(w <= 0 for w in self.widths):
            raise TrainreconError(f"model.widths: need at least two positive widths, got {self.widths}")
        if len(self.bias) != len(self.widths) - 1:
            raise TrainreconError(
                f"model.bias: need one entry per layer ({len(self.widths) - 1}), got {len(self.bias)}"
            )
        if not self.input_shape:
            self.input_shape = [1, 1, self.widths[0]]
        if len(self.input_shape) != 3 or any(v <= 0 for v in self.input_shape):
            raise TrainreconError(f"model.input_shape: need three positive sizes (C, H, W), got {self.input_shape}")
        if math.prod(self.input_shape) != self.widths[0]:
            raise TrainreconError(
                f"model.input_shape: {self.input_shape} has {math.prod(self.input_shape)} values, "
                f"but widths[0] = {self.widths[0]}"
            )

    @property
    def n_layers(self) -> int:
        return len(self.widths) - 1

    @property
    def n_outputs(self) -> int:
        return self.widths[-1]

    def param_names(self) -> list[str]:
        names = []
        for i in range(self.n_layers):
            names.append(f"layers.{i}.weight")
            if self.bias[i]:
                names.append(f"layers.{i}.bias")
        return names

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(self.n_layers):
            shapes[f"layers.{i}.weight"] = (self.widths[i + 1], self.widths[i])
            if self.bias[i]:
                shapes[f"layers.{i}.bias"] = (self.widths[i + 1],)
        return shapes

    def homogeneity_degree(self) -> int | None:
        """L if f(c theta; x) = c^L f(theta; x) (ReLU-type activation, bias on the first layer only)."""
        if self.activation not in ("relu", "leaky_relu"):
            return None
        if any(self.bias[1:]):
            return None
        return self.n_layers


@dataclass(frozen=True)
class Surrogate:
    """How the activation is evaluated: ``exact``, ``modified_relu`` (sharpness ``alpha``) or ``softplus``."""

    kind: Literal["exact", "modified_relu", "softplus"] = "exact"
    sharpness: float = 1.0


EXACT = Surrogate()


def _activate(z: torch.Tensor, activation: str, surrogate: Surrogate, degree: int = 0) -> torch.Tensor:
    if activation == "power":
        return z**degree  # smooth already: no surrogate
    if surrogate.kind == "exact":
        if activation == "relu":
            return torch.relu(z)
        if activation == "leaky_relu":
            return F.leaky_relu(z, 0.01)
        return F.gelu(z)
    a = surrogate.sharpness
    if activation == "gelu":
        return F.gelu(z)
    if surrogate.kind == "softplus":
        s = F.softplus(a * z) / a
        if activation == "leaky_relu":
            return 0.01 * z + 0.99 * s
        return s
    # modified ReLU: relu forward, sigmoid(alpha z) derivative (differentiable twice)
    s = F.softplus(a * z) / a
    exact = torch.relu(z) if activation == "relu" else F.leaky_relu(z, 0.01)
    if activation == "leaky_relu":
        s = 0.01 * z + 0.99 * s
    return exact.detach() + s - s.detach()


def forward(
    spec: MLPSpec, params: Sequence[torch.Tensor], x: torch.Tensor, surrogate: Surrogate = EXACT
) -> torch.Tensor:
    """f(x; theta) for a batch x of shape (m, d) or (m, *input_shape); returns (m, n_outputs).

    ``params`` are ordered as ``spec.param_names()``.
    """
    h = x.reshape(x.shape[0], -1)
    it = iter(params)
    for i in range(spec.n_layers):
        w = next(it)
        h = h @ w.T
        if spec.bias[i]:
            h = h + next(it)
        if i < spec.n_layers - 1:
            h = _activate(h, spec.activation, surrogate, spec.degree)
    return h


def init_params(
    spec: MLPSpec, init_scale: Sequence[float], seed: int, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor]:
    """theta_0: weight_i ~ N(0, (init_scale[i] / sqrt(fan_in))^2), bias_i = 0."""
    if len(init_scale) != spec.n_layers:
        raise TrainreconError(f"init_scale: need one value per layer ({spec.n_layers}), got {len(init_scale)}")
    g = torch.Generator().manual_seed(int(seed))
    params = []
    for i in range(spec.n_layers):
        fan_in = spec.widths[i]
        w = torch.randn(spec.widths[i + 1], fan_in, generator=g, dtype=torch.float64) * (init_scale[i] / fan_in**0.5)
        params.append(w.to(dtype))
        if spec.bias[i]:
            params.append(torch.zeros(spec.widths[i + 1], dtype=dtype))
    return params


def flatten(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def unflatten(spec: MLPSpec, vec: torch.Tensor) -> list[torch.Tensor]:
    out, i = [], 0
    for shape in spec.param_shapes().values():
        n = math.prod(shape)
        out.append(vec[i : i + n].reshape(shape))
        i += n
    return out
