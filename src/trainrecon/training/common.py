"""What every victim trainer shares: the architecture fields of its config, its prologue, its checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import check_numbers, to_dict
from ..errors import TrainreconError
from ..models.architecture import Architecture
from ..models.mlp import MLPSpec
from ..models.parameters import flatten, init_params
from ..models.sequential import Layer, SequentialSpec
from ..provenance import fingerprint, refuse_other
from ..runtime import resolve_dtype


@dataclass
class NetConfig:
    """Architecture and seed of a victim: an MLP (``hidden``, ``bias``, ``activation``) or, when ``layers`` is
    given, that declarative layer list (:mod:`trainrecon.models.sequential`; ``train --arch FILE``), whose
    input shape is the task's and whose biases the list itself says.

    ``bias[i]`` says whether layer i has a bias and ``init_scale[i]`` multiplies the LeCun std 1/sqrt(fan_in)
    of (parameterised) layer i; empty lists take the trainer's defaults.
    """

    hidden: list[int] = field(default_factory=lambda: [100, 100])
    bias: list[bool] = field(default_factory=list)
    activation: str = "relu"
    init_scale: list[float] = field(default_factory=list)
    seed: int = 0
    dtype: str = "float64"
    layers: Optional[list[Layer]] = None

    def complete(self, first_bias_only: bool, init: float) -> None:
        """Fill empty ``bias`` / ``init_scale`` with the trainer's defaults and validate."""
        check_numbers(self, "train")
        if self.layers is not None:
            self.layers = [Layer(**v) if isinstance(v, dict) else v for v in self.layers]
            for i, layer in enumerate(self.layers):
                layer.check(f"train.layers[{i}]")
            if self.bias:
                raise TrainreconError("train.bias: a layer list says its biases itself (each layer's 'bias')")
            n = sum(layer.type in ("conv2d", "linear") for layer in self.layers)
            if not self.init_scale:
                self.init_scale = [init] * n
            if len(self.init_scale) != n or any(s <= 0 for s in self.init_scale):
                raise TrainreconError(f"train.init_scale: need {n} positive entries (one per conv2d / linear layer), "
                                      f"got {self.init_scale}")
            resolve_dtype(self.dtype)
            return
        n_layers = len(self.hidden) + 1
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise TrainreconError(f"train.hidden: need positive hidden widths, got {self.hidden}")
        if not self.bias:
            self.bias = [True] + [not first_bias_only] * (n_layers - 1)
        if not self.init_scale:
            self.init_scale = [init] * n_layers
        if len(self.bias) != n_layers:
            raise TrainreconError(f"train.bias: need {n_layers} entries (one per layer), got {len(self.bias)}")
        if len(self.init_scale) != n_layers:
            raise TrainreconError(f"train.init_scale: need {n_layers} entries, got {len(self.init_scale)}")
        if any(s <= 0 for s in self.init_scale):
            raise TrainreconError(f"train.init_scale: every entry must be positive, got {self.init_scale}")
        resolve_dtype(self.dtype)

    def spec(self, input_shape: list[int], n_outputs: int = 1) -> Architecture:
        if self.layers is not None:
            spec = SequentialSpec(input_shape=list(input_shape), layers=list(self.layers))
            if spec.n_outputs != n_outputs:
                raise TrainreconError(f"train.layers: the network gives {spec.n_outputs} outputs, the task needs "
                                      f"{n_outputs}")
            return spec
        return MLPSpec(
            widths=[math.prod(input_shape), *self.hidden, n_outputs],
            bias=list(self.bias),
            activation=self.activation,  # type: ignore[arg-type]
            input_shape=list(input_shape),
        )


def setup(cfg: NetConfig, x: torch.Tensor, n_outputs: int, device) -> tuple[torch.dtype, Architecture, torch.Tensor, torch.Tensor]:
    """Every trainer's prologue: (dtype, architecture, inputs flattened on device, initial flat parameters)."""
    dtype = resolve_dtype(cfg.dtype)
    spec = cfg.spec(list(x.shape[1:]), n_outputs)
    flat0 = flatten(init_params(spec, cfg.init_scale, cfg.seed, dtype)).to(device)
    return dtype, spec, x.to(device=device, dtype=dtype).reshape(len(x), -1), flat0


def state_paths(folder: Path) -> tuple[Path, Path]:
    """(checkpoint, legacy metadata) of a trainer checkpoint in ``folder``: one file since the checkpoint module;
    the JSON beside it is read only for checkpoints of earlier versions."""
    return folder / "train_checkpoint.safetensors", folder / "train_checkpoint.json"


def load_state(folder: Path | None, cfg, device, dtype, x: torch.Tensor, y: torch.Tensor
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The trainer checkpoint in ``folder`` (tensors on device/dtype, state), or None if there is none.

    Refuses a checkpoint written with another config or on other training data (x, y): resuming it would mix
    two runs."""
    if folder is None:
        return None
    st, js = state_paths(folder)
    loaded = load_checkpoint(st, js)
    if loaded is None:
        return None
    tensors, meta = loaded
    refuse_other(meta.get("config"), to_dict(cfg),
                 f"{st}: checkpoint was made with a different training config ({{diff}}); use a new folder")
    if "data" in meta and meta["data"] != fingerprint([x, y]):
        raise TrainreconError(f"{st}: checkpoint was made on different training data; use a new folder")
    return {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}, meta


def save_state(folder: Path | None, tensors: dict[str, torch.Tensor], meta: dict[str, Any], x: torch.Tensor,
               y: torch.Tensor) -> None:
    """Write a trainer checkpoint (one file, atomically) into ``folder``; nothing if ``folder`` is None."""
    if folder is None:
        return
    save_checkpoint(state_paths(folder)[0], tensors, {**meta, "data": fingerprint([x, y])})
