"""The architecture interface: everything the attacks, trainers and refinement need to know about a network.

An :class:`Architecture` describes a network f(theta; x) whose parameters theta are a list of tensors named and
shaped by :meth:`~Architecture.param_shapes` (the names of the tensors in ``model.safetensors``).  It gives

* ``forward(params, x, surrogate)``: f(theta; x) as a pure function of the parameters, (m, d) or
  (m, C, H, W) -> (m, K), with every ReLU-family activation replaced by the attack's surrogate
  (:mod:`.activations`), so torch.func transforms (jvp, grad, hessian) apply;
* ``input_shape`` (C, H, W), ``input_dim`` = C H W, ``n_outputs`` = K;
* ``homogeneity()``: the degree L with f(c theta; x) = c^L f(theta; x) for every c > 0, or None with the
  reason (a bias after the first parameterised layer, a non-ReLU activation);
* ``lipschitz_factors(params)``: for each parameterised (linear) layer its operator norm ||A_l||_2 (a
  matrix's spectral norm; a convolution's by power iteration on the convolution itself, :func:`operator_norm`),
  times the Lipschitz bound of the parameter-free layers before it (average pooling's operator norm, max
  pooling's sqrt of how many windows share a pixel), so that prod_l factors_l bounds the network's Lipschitz
  constant in l2 (ReLU-family activations are 1-Lipschitz);
* ``first_layer(params)``: the first layer as an affine map x -> A x + b with the norms of the rows of A (its
  units' hyperplanes; sample splitting's kink diagnostics), or None when the network does not start affine;
* ``init_params(init_scale, seed)``: theta_0 (LeCun-scaled Gaussian weights, zero biases) for the trainers;
* ``default_init_bounds()``: per parameter tensor, the bound b = 1/sqrt(fan_in) of PyTorch's default
  initialisation U(-b, b) of ``nn.Linear`` / ``nn.Conv2d`` (weights and biases alike), what a network trained
  from that init still carries of theta_0 (the attacks' ``init_tolerance``);
* ``activation_sizes()``: per-sample sizes of every layer's output (memory estimates);
* ``first_layer_tensors()``: how many leading parameter tensors the first parameterised layer holds;
* ``first_layer_dense()``: whether that layer is a dense map of the whole input (an MLP's: each row of its weight
  an image), not a convolution's kernel.

Two implementations: :class:`~.mlp.MLPSpec` (``model.json`` without ``kind``: widths, bias, activation) and
:class:`~.sequential.SequentialSpec` (``kind: "sequential"``: a declarative layer list with
``torch.nn.Sequential``'s parameter names).  :func:`trainrecon.models.victim.architecture_from_dict` reads either from JSON; nothing
outside ``models/`` needs to know which one a victim has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import TrainreconError
from .activations import EXACT, Surrogate


@dataclass(frozen=True)
class Homogeneity:
    """``degree`` L when f(c theta; x) = c^L f(theta; x) for all c > 0, else None and ``reason`` says why."""

    degree: int | None
    reason: str = ""


@dataclass(frozen=True)
class FirstLayer:
    """The first layer as an affine map: ``pre(x)`` = A x + b and ``linear(v)`` = A v for a batch of flat inputs
    (m, d) -> (m, U), and ``row_norms`` (U,) = ||A_k|| for each unit k."""

    pre: Callable[[torch.Tensor], torch.Tensor]
    linear: Callable[[torch.Tensor], torch.Tensor]
    row_norms: torch.Tensor


class Architecture:
    """Base class of every architecture (see the module docstring).  Subclasses are dataclasses serialised as
    ``model.json``."""

    input_shape: list[int]

    # -- what an implementation defines ------------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor, surrogate: Surrogate = EXACT) -> torch.Tensor:
        raise NotImplementedError

    def homogeneity(self) -> Homogeneity:
        raise NotImplementedError

    def lipschitz_factors(self, params: Sequence[torch.Tensor]) -> list[float]:
        raise NotImplementedError

    def first_layer(self, params: Sequence[torch.Tensor]) -> FirstLayer | None:
        return None

    def init_params(self, init_scale: Sequence[float], seed: int, dtype: torch.dtype = torch.float64
                    ) -> list[torch.Tensor]:
        raise NotImplementedError

    def activation_sizes(self) -> list[int]:
        raise NotImplementedError

    def activations(self) -> set[str]:
        """The activation kinds the network uses (relu, leaky_relu, gelu, softplus, power)."""
        raise NotImplementedError

    @property
    def n_param_layers(self) -> int:
        """How many layers hold weights (one ``init_scale`` entry each)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable summary, e.g. 784-100-1 or conv2d(8,5)-relu-...-linear(1)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------------
    def param_names(self) -> list[str]:
        return list(self.param_shapes())

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def default_init_bounds(self) -> list[float]:
        """Per parameter tensor, b = 1/sqrt(fan_in) of PyTorch's default init U(-b, b) (``nn.Linear`` and
        ``nn.Conv2d``'s ``reset_parameters``: kaiming_uniform with a = sqrt(5) for the weight, the same bound for
        the bias), fan_in = prod(weight.shape[1:]) of the tensor's layer (``<layer>.weight`` / ``<layer>.bias``)."""
        shapes = self.param_shapes()
        bounds = []
        for name, shape in shapes.items():
            layer, _, kind = name.rpartition(".")
            weight = shape if kind == "weight" else shapes.get(f"{layer}.weight")
            if weight is None or len(weight) < 2:
                raise TrainreconError(f"parameter {name}: no weight matrix of its layer to take a fan-in from")
            bounds.append(1.0 / math.sqrt(math.prod(weight[1:])))
        return bounds

    def first_layer_tensors(self) -> int:
        """How many of the leading parameter tensors belong to the first parameterised layer (its weight, and its
        bias where it has one): the names before the first whose layer prefix (``<layer>.weight``) differs."""
        names = self.param_names()
        layer = names[0].rpartition(".")[0]
        return next((i for i, name in enumerate(names) if name.rpartition(".")[0] != layer), len(names))

    def first_layer_dense(self) -> bool:
        """Whether the first parameterised layer is dense over the whole input: its weight is (U, C H W), each of
        its rows an image of the input's shape (an MLP's first layer), and only flattening comes before it."""
        shapes = list(self.param_shapes().values())
        if len(shapes[0]) != 2 or shapes[0][1] != self.input_dim:
            return False
        return self.first_layer([torch.zeros(s, device="meta") for s in shapes]) is not None  # shapes only

    def homogeneity_degree(self) -> int | None:
        return self.homogeneity().degree


def operator_norm(apply: Callable[[torch.Tensor], torch.Tensor], shape: Sequence[int], iters: int = 1000,
                  tol: float = 1e-12, block: int = 8, seed: int = 0) -> float:
    """||A||_2 of the linear map ``apply`` on inputs of ``shape`` (batched as (k, *shape)): block power (subspace)
    iteration on A^T A with a Rayleigh-Ritz step, the adjoint by a vector-Jacobian product of ``apply`` itself (for
    a convolution: the convolution with its stride and padding, not the kernel reshaped into a matrix).

    Returns sqrt(lambda_max(V^T A^T A V)) for the orthonormal block V of the last iterate: it rises to ||A||_2 from
    below, at rate (sigma_{k+1} / sigma_1)^2 per iteration; iteration stops when it changes by less than ``tol``
    relatively.  Deterministic (fixed start from ``seed``) and equivariant: ||c A|| = c ||A|| up to rounding."""
    n = math.prod(shape)
    k = max(1, min(block, n))
    g = torch.Generator().manual_seed(seed)
    V = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q.T
    est = 0.0
    for _ in range(iters):
        out, pullback = torch.func.vjp(apply, V.reshape(k, *shape))
        AV = out.reshape(k, -1)
        new = math.sqrt(max(float(torch.linalg.eigvalsh(AV @ AV.T)[-1]), 0.0))
        if new == 0.0:
            return 0.0
        (W,) = pullback(out)
        V = torch.linalg.qr(W.reshape(k, -1).T).Q.T
        done = abs(new - est) <= tol * new
        est = new
        if done:
            break
    return est
