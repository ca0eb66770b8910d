"""Declarative layer lists (``model.json`` with ``kind: "sequential"``): convolutional and fully connected
networks as pure functions of their parameters, named as ``torch.nn.Sequential`` names them.

A :class:`SequentialSpec` is an input shape (C, H, W) and a list of :class:`Layer` s, applied in order:

    h_0 = x (reshaped to (C, H, W)),   h_{i+1} = layer_i(h_i; theta_i),   f(theta; x) = h_L (one flat vector)

| ``type``       | computes                                                  | fields                              |
|----------------|-----------------------------------------------------------|-------------------------------------|
| ``conv2d``     | conv2d(h, W, b; stride, padding) (``nn.Conv2d``)          | channels, kernel, stride, padding, bias |
| ``linear``     | W h + b (``nn.Linear``; a flat input: first, or after flatten) | features, bias                 |
| ``relu``, ``leaky_relu``, ``gelu``, ``softplus``, ``power`` | the activation (surrogate-swappable) | slope (leaky), degree (power) |
| ``avg_pool``, ``max_pool`` | ``nn.AvgPool2d`` / ``nn.MaxPool2d`` (torch defaults) | kernel, stride (default kernel), padding |
| ``flatten``    | h.reshape(-1) (``nn.Flatten``)                            |                                     |
| ``identity``   | h (``nn.Identity``, ``nn.Dropout`` in eval mode)          |                                     |

Layer i's parameters are ``{i}.weight`` (conv: (channels, C_in, kh, kw); linear: (features, F_in)) and
``{i}.bias``, as in ``nn.Sequential(...).state_dict()``, so a user's saved state dict loads unchanged.  Loading
a layer list runs no code.  Bias-free ReLU convolutions with pooling, flatten and linear layers are positively
homogeneous (Lyu & Li 2020) of degree L = the number of parameterised layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from ..errors import TrainreconError
from .activations import EXACT, Surrogate, activate
from .architecture import Architecture, FirstLayer, Homogeneity, operator_norm

LayerType = Literal["conv2d", "linear", "relu", "leaky_relu", "gelu", "softplus", "power", "avg_pool", "max_pool", "flatten",
                    "identity"]
ACTIVATION_LAYERS = ("relu", "leaky_relu", "gelu", "softplus", "power")
PARAM_LAYERS = ("conv2d", "linear")
#: the fields each layer type takes (any other field set away from its default is refused)
FIELDS = {
    "conv2d": {"channels", "kernel", "stride", "padding", "bias"},
    "linear": {"features", "bias"},
    "leaky_relu": {"slope"},
    "power": {"degree"},
    "avg_pool": {"kernel", "stride", "padding"},
    "max_pool": {"kernel", "stride", "padding"},
}


def _pair(v: int | list[int], where: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2:
        raise TrainreconError(f"{where}: give one integer or two (height, width), got {v}")
    return int(t[0]), int(t[1])


@dataclass
class Layer:
    """One entry of a layer list; see the module docstring's table for the fields each type takes."""

    type: LayerType
    channels: int = 0
    features: int = 0
    kernel: int | list[int] = 0
    stride: int | list[int] = 0
    padding: int | list[int] = 0
    bias: bool = False
    slope: float = 0.01
    degree: int = 0

    def __post_init__(self) -> None:
        # one spelling per layer: [k, k] is k, so a hand-written list and an nn.Module's give one victim
        for name in ("kernel", "stride", "padding"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
                setattr(self, name, int(v[0]))
            elif isinstance(v, tuple):
                setattr(self, name, list(v))
        if self.stride == 0 and self.type == "conv2d":
            self.stride = 1
        elif self.stride == 0 and self.type in ("avg_pool", "max_pool"):
            self.stride = self.kernel  # torch's default

    def check(self, where: str) -> None:
        allowed = FIELDS.get(self.type, set())
        for f in fields(self):
            if f.name != "type" and f.name not in allowed and getattr(self, f.name) != f.default:
                raise TrainreconError(f"{where}.{f.name}: does not apply to a {self.type} layer")
        if self.type == "conv2d" and self.channels <= 0:
            raise TrainreconError(f"{where}.channels: a conv2d layer needs a positive number of output channels")
        if self.type == "linear" and self.features <= 0:
            raise TrainreconError(f"{where}.features: a linear layer needs a positive number of output features")
        if self.type in ("conv2d", "avg_pool", "max_pool"):
            k = _pair(self.kernel, f"{where}.kernel")
            s = _pair(self.stride, f"{where}.stride") if self.stride != 0 else (k if self.type != "conv2d" else (1, 1))
            p = _pair(self.padding, f"{where}.padding")
            if min(k) <= 0 or min(s) <= 0 or min(p) < 0:
                raise TrainreconError(f"{where}: kernel and stride must be positive and padding >= 0, got kernel "
                                      f"{self.kernel}, stride {self.stride}, padding {self.padding}")
            if self.type != "conv2d" and (p[0] > k[0] // 2 or p[1] > k[1] // 2):
                raise TrainreconError(f"{where}.padding: pooling padding must be at most half the kernel (torch's rule)")
        if self.type == "power" and self.degree < 1:
            raise TrainreconError(f"{where}.degree: a power layer needs a positive degree")
        if self.type == "leaky_relu" and not 0 <= self.slope < 1:
            raise TrainreconError(f"{where}.slope: must be in [0, 1), got {self.slope}")

    def to_json(self) -> dict:
        """The fields this layer's type takes (what ``model.json`` holds), the others left out."""
        out = {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)
                                     if f.name in FIELDS.get(self.type, set())}}
        if "stride" in out and self.stride == 0:  # the default, resolved (1 for conv2d, the kernel for pooling)
            s = self.geometry()[1]
            out["stride"] = s[0] if s[0] == s[1] else list(s)
        return out

    def geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(kernel, stride, padding) as pairs; stride 0 means 1 for conv2d and the kernel for pooling."""
        k = _pair(self.kernel, "kernel")
        s = _pair(self.stride, "stride") if self.stride != 0 else (k if self.type != "conv2d" else (1, 1))
        return k, s, _pair(self.padding, "padding")

    def describe(self) -> str:
        if self.type == "conv2d":
            k, s, p = self.geometry()
            return f"conv2d({self.channels},k{k[0]},s{s[0]},p{p[0]}{',b' if self.bias else ''})"
        if self.type == "linear":
            return f"linear({self.features}{',b' if self.bias else ''})"
        if self.type in ("avg_pool", "max_pool"):
            return f"{self.type}({self.geometry()[0][0]})"
        return self.type


@dataclass
class SequentialSpec(Architecture):
    """A declarative layer list (``model.json`` ``kind: "sequential"``); see the module docstring."""

    kind: Literal["sequential"] = "sequential"
    input_shape: list[int] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or any(v <= 0 for v in self.input_shape):
            raise TrainreconError(f"model.input_shape: need three positive sizes (C, H, W), got {self.input_shape}")
        if not self.layers:
            raise TrainreconError("model.layers: need at least one layer")
        self.layers = [Layer(**l) if isinstance(l, dict) else l for l in self.layers]
        self._shapes, self._params = self._trace()

    def _trace(self) -> tuple[list[tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """Every layer's output shape (index 0: the input) and the parameter shapes, checked."""
        shape: tuple[int, ...] = tuple(self.input_shape)
        shapes, params = [shape], {}
        for i, layer in enumerate(self.layers):
            where = f"model.layers[{i}]"
            layer.check(where)
            t = layer.type
            if t in ("conv2d", "avg_pool", "max_pool"):
                if len(shape) != 3:
                    raise TrainreconError(f"{where}: a {t} layer needs a (C, H, W) input, got a flat one of {shape[0]}")
                (kh, kw), (sh, sw), (ph, pw) = layer.geometry()
                h, w = (shape[1] + 2 * ph - kh) // sh + 1, (shape[2] + 2 * pw - kw) // sw + 1
                if h <= 0 or w <= 0:
                    raise TrainreconError(f"{where}: kernel {kh}x{kw} does not fit its {shape[1]}x{shape[2]} input")
                if t == "conv2d":
                    params[f"{i}.weight"] = (layer.channels, shape[0], kh, kw)
                    if layer.bias:
                        params[f"{i}.bias"] = (layer.channels,)
                shape = (layer.channels if t == "conv2d" else shape[0], h, w)
            elif t == "linear":
                if i == 0:  # an nn.Sequential MLP is fed flat vectors: the first layer takes the flattened input
                    shape = (math.prod(shape),)
                if len(shape) != 1:
                    raise TrainreconError(f"{where}: a linear layer needs a flat input; put a flatten layer before it "
                                          f"(its input has shape {list(shape)})")
                params[f"{i}.weight"] = (layer.features, shape[0])
                if layer.bias:
                    params[f"{i}.bias"] = (layer.features,)
                shape = (layer.features,)
            elif t == "flatten":
                shape = (math.prod(shape),)
            shapes.append(shape)
        if len(shape) != 1:
            raise TrainreconError(f"model.layers: the network must end in flat outputs (a flatten or linear layer), "
                                  f"it ends with shape {list(shape)}")
        if not params:
            raise TrainreconError("model.layers: need at least one conv2d or linear layer")
        return shapes, params

    # -- the Architecture interface ------------------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._params)

    @property
    def n_outputs(self) -> int:
        return self._shapes[-1][0]

    @property
    def n_param_layers(self) -> int:
        return sum(l.type in PARAM_LAYERS for l in self.layers)

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor, surrogate: Surrogate = EXACT) -> torch.Tensor:
        """f(theta; x) for x (m, d) or (m, C, H, W) -> (m, K); ``params`` ordered as ``param_names()``."""
        first_flat = self.layers[0].type == "linear"
        h = x.reshape(x.shape[0], -1) if first_flat else x.reshape(x.shape[0], *self.input_shape)
        it = iter(params)
        for layer in self.layers:
            t = layer.type
            if t in PARAM_LAYERS:
                w = next(it)
                b = next(it) if layer.bias else None
                if t == "conv2d":
                    _, s, p = layer.geometry()
                    h = F.conv2d(h, w, b, stride=s, padding=p)
                else:
                    h = h @ w.T if b is None else h @ w.T + b
            elif t in ACTIVATION_LAYERS:
                h = activate(h, t, surrogate, layer.degree, layer.slope)
            elif t == "avg_pool":
                k, s, p = layer.geometry()
                h = F.avg_pool2d(h, k, s, p)
            elif t == "max_pool":
                k, s, p = layer.geometry()
                h = F.max_pool2d(h, k, s, p)
            elif t == "flatten":
                h = h.reshape(h.shape[0], -1)
        return h

    def activations(self) -> set[str]:
        return {layer.type for layer in self.layers if layer.type in ACTIVATION_LAYERS}

    def homogeneity(self) -> Homogeneity:
        """The degree L of f(c theta; x) = c^L f(theta; x), c > 0, tracked layer by layer: a parameterised layer
        maps degree D to 1 + D (its bias, of degree 1, fits only while D = 0: the first such layer), z^alpha maps
        D to alpha D, ReLU-family activations, pooling and flatten keep D; GELU breaks it."""
        degree = 0
        for i, layer in enumerate(self.layers):
            if layer.type in ("gelu", "softplus"):
                return Homogeneity(None, f"layers[{i}] ({layer.type}) is not positively homogeneous")
            if layer.type in PARAM_LAYERS:
                if layer.bias and degree:
                    return Homogeneity(None, f"layers[{i}] ({layer.type}) has a bias after the first parameterised layer")
                degree += 1
            elif layer.type == "power":
                degree *= layer.degree
        return Homogeneity(degree)

    def lipschitz_factors(self, params: Sequence[torch.Tensor]) -> list[float]:
        """Per parameterised layer: its operator norm (a convolution's by power iteration on the convolution
        with its stride and padding) times the bounds of the parameter-free layers before it (average pooling:
        its operator norm; max pooling: sqrt of the most windows one pixel falls in); trailing ones go into the
        last factor."""
        out, pending, it = [], 1.0, iter(params)
        for i, layer in enumerate(self.layers):
            shape = self._shapes[i]
            if layer.type in PARAM_LAYERS:
                w = next(it).double()
                if layer.bias:
                    next(it)
                if layer.type == "conv2d":
                    _, s, p = layer.geometry()
                    norm = operator_norm(lambda v, w=w, s=s, p=p: F.conv2d(v, w, None, s, p), shape)
                else:
                    norm = float(torch.linalg.matrix_norm(w, ord=2))
                out.append(norm * pending)
                pending = 1.0
            elif layer.type == "avg_pool":
                k, s, p = layer.geometry()
                pending *= operator_norm(lambda v, k=k, s=s, p=p: F.avg_pool2d(v, k, s, p), shape)
            elif layer.type == "max_pool":
                (kh, kw), (sh, sw), _ = layer.geometry()
                pending *= math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw))
        if out:
            out[-1] *= pending
        return out

    def first_layer(self, params: Sequence[torch.Tensor]) -> FirstLayer | None:
        """The first parameterised layer when only flatten / identity layers precede it; else None."""
        for i, layer in enumerate(self.layers):
            if layer.type in PARAM_LAYERS:
                break
            if layer.type not in ("flatten", "identity"):
                return None
        w = params[0]
        b = params[1] if layer.bias else None
        if layer.type == "linear":
            bb = torch.zeros_like(w[:, 0]) if b is None else b
            return FirstLayer(lambda x: x.reshape(len(x), -1) @ w.T + bb, lambda v: v.reshape(len(v), -1) @ w.T,
                              w.norm(dim=1))
        _, s, p = layer.geometry()
        shape = tuple(self.input_shape)

        def conv(x, bias):
            return F.conv2d(x.reshape(len(x), *shape), w, bias, s, p).reshape(len(x), -1)

        ones = torch.ones((1, *shape), dtype=w.dtype, device=w.device)
        norms = F.conv2d(ones, w * w, None, s, p).reshape(-1).clamp_min(0).sqrt()  # in-bounds kernel entries only
        return FirstLayer(lambda x: conv(x, b), lambda v: conv(v, None), norms)

    def init_params(self, init_scale: Sequence[float], seed: int, dtype: torch.dtype = torch.float64
                    ) -> list[torch.Tensor]:
        """theta_0: each weight ~ N(0, (init_scale[l] / sqrt(fan_in))^2) (fan_in = C_in kh kw for a convolution),
        biases 0, in ``param_names()`` order."""
        if len(init_scale) != self.n_param_layers:
            raise TrainreconError(f"init_scale: need one value per parameterised layer ({self.n_param_layers}), "
                                  f"got {len(init_scale)}")
        g = torch.Generator().manual_seed(int(seed))
        out, scales = [], iter(init_scale)
        for name, shape in self._params.items():
            if name.endswith(".weight"):
                fan_in = math.prod(shape[1:])
                out.append((torch.randn(shape, generator=g, dtype=torch.float64) * (next(scales) / fan_in**0.5)).to(dtype))
            else:
                out.append(torch.zeros(shape, dtype=dtype))
        return out

    def activation_sizes(self) -> list[int]:
        return [math.prod(s) for s in self._shapes]

    def describe(self) -> str:
        return "-".join(l.describe() for l in self.layers)
