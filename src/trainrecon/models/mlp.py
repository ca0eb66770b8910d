"""Fully connected networks as pure functions of their parameters (one :class:`~.architecture.Architecture`).

``MLPSpec.forward(params, x)`` computes f(x; theta) = W_L s(... s(W_1 x + b_1) ...) + b_L, with the same
parameter names as a ``torch.nn.Sequential`` of ``nn.Linear`` under ``layers.{i}``.  Keeping the network
functional lets training, the KKT objective and torch.func transforms (jvp, hessian) share one definition.
During reconstruction the activation is replaced by a smooth surrogate (:mod:`.activations`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import TrainreconError
from .activations import ACTIVATIONS, EXACT, Activation, Surrogate, activate
from .architecture import Architecture, FirstLayer, Homogeneity

__all__ = ["EXACT", "Activation", "MLPSpec", "Surrogate"]


@dataclass
class MLPSpec(Architecture):
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
        if self.activation not in ACTIVATIONS:
            raise TrainreconError(f"model.activation: {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
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

    @property
    def n_param_layers(self) -> int:
        return self.n_layers

    def activations(self) -> set[str]:
        return {self.activation} if self.n_layers > 1 else set()

    def homogeneity(self) -> Homogeneity:
        """L if f(c theta; x) = c^L f(theta; x) for every c > 0, with a bias on the first layer at most: the
        number of layers for ReLU-type activations; for z^alpha, layer l's pre-activation has degree
        D_l = 1 + alpha D_(l-1) (D_0 = 0), so a two-layer x^alpha network has degree alpha + 1."""
        if self.activation not in ("relu", "leaky_relu", "power"):
            return Homogeneity(None, f"activation {self.activation} is not positively homogeneous")
        if any(self.bias[1:]):
            return Homogeneity(None, "a layer after the first has a bias")
        if self.activation != "power":
            return Homogeneity(self.n_layers)
        degree = 0
        for _ in range(self.n_layers):
            degree = 1 + self.degree * degree
        return Homogeneity(degree)

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor, surrogate: Surrogate = EXACT) -> torch.Tensor:
        """f(x; theta) for a batch x of shape (m, d) or (m, *input_shape); returns (m, n_outputs).

        ``params`` are ordered as ``param_names()``.
        """
        h = x.reshape(x.shape[0], -1)
        it = iter(params)
        for i in range(self.n_layers):
            w = next(it)
            h = h @ w.T
            if self.bias[i]:
                h = h + next(it)
            if i < self.n_layers - 1:
                h = activate(h, self.activation, surrogate, self.degree)
        return h

    def lipschitz_factors(self, params: Sequence[torch.Tensor]) -> list[float]:
        """||W_l||_2 of every weight matrix (biases do not change the Lipschitz constant)."""
        return [float(torch.linalg.matrix_norm(w.double(), ord=2)) for w in params if w.ndim == 2]

    def first_layer(self, params: Sequence[torch.Tensor]) -> FirstLayer:
        W1 = params[0]
        b1 = params[1] if self.bias[0] else torch.zeros_like(W1[:, 0])
        return FirstLayer(lambda x: x.reshape(len(x), -1) @ W1.T + b1, lambda v: v.reshape(len(v), -1) @ W1.T,
                          W1.norm(dim=1))

    def init_params(self, init_scale: Sequence[float], seed: int, dtype: torch.dtype = torch.float64
                    ) -> list[torch.Tensor]:
        """theta_0: weight_i ~ N(0, (init_scale[i] / sqrt(fan_in))^2), bias_i = 0."""
        if len(init_scale) != self.n_layers:
            raise TrainreconError(f"init_scale: need one value per layer ({self.n_layers}), got {len(init_scale)}")
        g = torch.Generator().manual_seed(int(seed))
        params = []
        for i in range(self.n_layers):
            fan_in = self.widths[i]
            w = torch.randn(self.widths[i + 1], fan_in, generator=g, dtype=torch.float64) * (init_scale[i] / fan_in**0.5)
            params.append(w.to(dtype))
            if self.bias[i]:
                params.append(torch.zeros(self.widths[i + 1], dtype=dtype))
        return params

    def activation_sizes(self) -> list[int]:
        return list(self.widths)

    def describe(self) -> str:
        return "-".join(map(str, self.widths))
