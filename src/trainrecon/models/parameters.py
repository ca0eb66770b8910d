"""Any network's parameters as one list of tensors: f(x; theta), theta_0, and theta as one flat vector.

Network-generic (every :class:`~.architecture.Architecture`: MLPs and layer lists alike): ``forward`` and
``init_params`` call the architecture's own; ``flatten`` / ``unflatten`` map the parameter list to the vector
the stationarity forms and the trainers work with, in the architecture's parameter order.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .activations import EXACT, Surrogate
from .architecture import Architecture


def forward(spec: Architecture, params: Sequence[torch.Tensor], x: torch.Tensor, surrogate: Surrogate = EXACT
            ) -> torch.Tensor:
    """f(x; theta) of any architecture (``spec.forward``); (m, d) or (m, *input_shape) -> (m, n_outputs)."""
    return spec.forward(params, x, surrogate)


def init_params(spec: Architecture, init_scale: Sequence[float], seed: int, dtype: torch.dtype = torch.float64
                ) -> list[torch.Tensor]:
    """theta_0 of any architecture (``spec.init_params``): LeCun-scaled Gaussian weights, zero biases."""
    return spec.init_params(init_scale, seed, dtype)


def flatten(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def unflatten(spec: Architecture, vec: torch.Tensor) -> list[torch.Tensor]:
    out, i = [], 0
    for shape in spec.param_shapes().values():
        n = math.prod(shape)
        out.append(vec[i : i + n].reshape(shape))
        i += n
    return out


__all__ = ["flatten", "forward", "init_params", "unflatten"]
