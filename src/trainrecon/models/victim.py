"""The victim folder: what an attacker is given, and what evaluation adds.

A victim is a folder holding

* ``model.safetensors``: the trained parameters ``layers.{i}.weight`` / ``layers.{i}.bias`` and, when the
  model's input pipeline centres its inputs, ``input_mean`` (C, H, W).  NTK-regime victims also hold the
  initial parameters as ``init.layers.{i}.weight`` ...
* ``model.json``: the architecture (:class:`~.architecture.Architecture`: an MLP, or with ``kind:
  "sequential"`` a declarative layer list whose parameters are named ``{i}.weight`` as ``nn.Sequential``'s).
* ``train.json``: how it was trained: the task and the *indices* of the training images (never the images),
  the trainer config and its final KKT residual.  Only evaluation reads the task and indices.
* ``recipe.json`` (optional): the training recipe as its owner states it (:mod:`.recipe`: optimiser, loss, batch
  size, epochs; never data).

What an attacker may be given is a threat level (:data:`~.recipe.THREAT_LEVELS`): the weights; plus the initial
weights theta_0 (``init.*``); plus the recipe.  :meth:`Weights.level` is the highest a victim supports and
:meth:`Weights.at_level` the victim as a lower level discloses it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..config import from_dict, is_finite_number, is_whole, load_json, save_json
from ..errors import TrainreconError
from .architecture import Architecture
from .mlp import MLPSpec
from .sequential import SequentialSpec
from .recipe import RECIPE_FILE, THREAT_LEVELS, Recipe, load_recipe, save_recipe

INIT_PREFIX = "init."


@dataclass
class Weights:
    """A network as its files hold it: architecture, parameters, input mean, initial parameters and the training
    recipe (each of the last two only where known)."""

    spec: Architecture
    params: list[torch.Tensor]
    input_mean: np.ndarray | None = None
    init_params: list[torch.Tensor] | None = None
    recipe: Recipe | None = None

    @property
    def level(self) -> str:
        """The highest threat level these weights can be attacked at: ``recipe`` (theta_0 and the recipe known),
        ``init`` (theta_0 known) or ``weights``.  A recipe without theta_0 counts for nothing: nothing simulates
        a training without its starting point."""
        if self.init_params is None:
            return "weights"
        return "init" if self.recipe is None else "recipe"

    def at_level(self, level: str, where: str = "attack.given"):
        """The same weights as threat level ``level`` discloses them (``all``: everything known): theta_0 and the
        recipe dropped above it; a level these weights cannot reach is refused in one line naming ``where``."""
        if level == "all":
            return self
        if level not in THREAT_LEVELS:
            raise TrainreconError(f"{where}: {level!r} is not one of all, {', '.join(THREAT_LEVELS)}")
        if THREAT_LEVELS.index(level) > THREAT_LEVELS.index(self.level):
            need = ("the initial weights theta_0 (trainrecon import --init or --init-seed)" if self.init_params is None
                    else "the training recipe (trainrecon import --recipe RECIPE.json)")
            raise TrainreconError(f"{where}: {level!r} needs {need}; this victim has only {self.level!r}")
        return dataclasses.replace(self, init_params=self.init_params if level != "weights" else None,
                                   recipe=self.recipe if level == "recipe" else None)

    def to(self, device: torch.device, dtype: torch.dtype):
        conv = lambda ps: None if ps is None else [p.to(device=device, dtype=dtype) for p in ps]  # noqa: E731
        return dataclasses.replace(self, params=conv(self.params), init_params=conv(self.init_params))

    def mean_chw(self) -> np.ndarray:
        shape = tuple(self.spec.input_shape)
        return np.zeros(shape) if self.input_mean is None else np.asarray(self.input_mean).reshape(shape)


@dataclass
class Victim(Weights):
    """Weights plus the training record (``train.json``), which only evaluation reads."""

    train_info: dict[str, Any] = field(default_factory=dict)


def tensor_parts(spec: Architecture, tensors: dict[str, torch.Tensor], where: str
           ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, Any]:
    """(parameters, initial parameters or None, raw input mean or None) of a state dict, checked."""
    params = checked_params(spec, tensors, where)
    init = checked_params(spec, tensors, where, INIT_PREFIX) if any(k.startswith(INIT_PREFIX) for k in tensors) else None
    return params, init, tensors.get("input_mean")


def checked_params(spec: Architecture, tensors: dict[str, torch.Tensor], where: str, prefix: str = "") -> list[torch.Tensor]:
    out = []
    for name, shape in spec.param_shapes().items():
        key = prefix + name
        if key not in tensors:
            raise TrainreconError(f"{where}: missing tensor {key!r} required by model.json")
        t = tensors[key]
        if not t.is_floating_point():
            raise TrainreconError(f"{where}: tensor {key!r} has dtype {str(t.dtype).removeprefix('torch.')}; weights must be "
                                  "real floating point (complex, integer and bool tensors are refused, not converted)")
        t = t.double()
        if tuple(t.shape) != shape:
            raise TrainreconError(f"{where}: tensor {key!r} has shape {tuple(t.shape)}, model.json implies {shape}")
        if not torch.isfinite(t).all():
            raise TrainreconError(f"{where}: tensor {key!r} holds NaN or inf")
        out.append(t)
    return out


def save_victim(
    folder: str | Path,
    spec: Architecture,
    params: list[torch.Tensor],
    input_mean: np.ndarray | None = None,
    train_info: dict[str, Any] | None = None,
    init_params: list[torch.Tensor] | None = None,
    recipe: Recipe | None = None,
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = dict(zip(spec.param_names(), params))
    if init_params is not None:
        tensors.update({INIT_PREFIX + n: p for n, p in zip(spec.param_names(), init_params)})
    if input_mean is not None:
        tensors["input_mean"] = torch.as_tensor(np.asarray(input_mean, dtype=np.float64).reshape(spec.input_shape))
    save_json(folder / "model.json", spec)
    save_json(folder / "train.json", train_info or {})
    if recipe is not None:
        save_recipe(folder, recipe)
    save_tensors(folder / "model.safetensors", tensors)  # last: its presence marks a complete victim folder
    return folder


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors atomically (:func:`trainrecon.atomic.atomic_path`: temp file, fsync, rename),
    so a kill never leaves a torn file."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise TrainreconError(f"{path}: file not found")
    try:
        # clone: fresh, aligned allocations, so BLAS results do not depend on where the file buffer sat
        return {k: v.clone() for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TrainreconError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None


def architecture_from_dict(data: Any, where: str) -> Architecture:
    """The architecture a ``model.json`` object describes: ``kind: "sequential"`` a layer list, ``kind: "mlp"``
    or no ``kind`` (every victim folder written before layer lists existed) an MLP."""
    if not isinstance(data, dict):
        raise TrainreconError(f"{where}: expected a JSON object")
    kind = data.get("kind", "mlp")
    if kind == "sequential":
        return from_dict(SequentialSpec, data, where)
    if kind == "mlp":
        return from_dict(MLPSpec, {k: v for k, v in data.items() if k != "kind"}, where)
    raise TrainreconError(f"{where}.kind: {kind!r} is not one of 'mlp', 'sequential'")


def load_victim(folder: str | Path, training_record: bool = True) -> Victim:
    """A victim folder's weights, architecture and (unless ``training_record`` is False, as on the attacker's
    side) its ``train.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainreconError(f"{folder}: victim folder not found")
    spec = architecture_from_dict(load_json(folder / "model.json"), str(folder / "model.json"))
    path = folder / "model.safetensors"
    params, init, mean = tensor_parts(spec, read_safetensors(path), str(path))
    if mean is not None:
        mean = check_mean(mean, spec, str(path))
    info = load_json(folder / "train.json") if training_record and (folder / "train.json").is_file() else {}
    recipe = load_recipe(folder / RECIPE_FILE) if (folder / RECIPE_FILE).is_file() else None
    return Victim(spec, params, mean, init, recipe, train_info=check_training_record(info, folder / "train.json"))


def check_mean(mean: Any, spec: Architecture, where: str) -> np.ndarray:
    """The input mean as float64 (C, H, W): real numbers, finite, one per input."""
    if isinstance(mean, torch.Tensor):
        if not mean.is_floating_point():
            raise TrainreconError(f"{where}: input mean has dtype {str(mean.dtype).removeprefix('torch.')}, expected real floats")
        mean = mean.double().numpy()
    mean = np.asarray(mean)
    if mean.dtype.kind not in "fiu" or mean.dtype == bool:
        raise TrainreconError(f"{where}: input mean has dtype {mean.dtype}, expected real numbers")
    mean = mean.astype(np.float64)
    if mean.size != spec.input_dim:
        raise TrainreconError(f"{where}: input mean has {mean.size} values, expected {spec.input_dim}")
    if not np.isfinite(mean).all():
        raise TrainreconError(f"{where}: input mean holds NaN or inf")
    return mean.reshape(spec.input_shape)


def training_set_size(info: Any, where: str) -> int | None:
    """n as a train.json records it: the length of its ``train_indices`` (a victim trained here), else its
    ``n_train`` (an imported one whose owner stated n: ``trainrecon import --n``), else None; a malformed entry is
    refused in one line."""
    if not isinstance(info, dict):
        return None
    idx = info.get("train_indices")
    if idx is not None:
        if not isinstance(idx, list):
            raise TrainreconError(f"{where}: train_indices is not a list")
        return len(idx) or None
    n = info.get("n_train")
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TrainreconError(f"{where}: n_train must be a positive integer, got {n!r}")
    return n


#: train.json's schema: each field trainrecon reads and what it must be when present (a user's other fields pass)
TRAINING_RECORD: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "task": ("an object (the task's fields)", lambda v: isinstance(v, dict)),
    "trainer_kind": ("a string", lambda v: isinstance(v, str)),
    "trainer": ("an object (the trainer's fields)", lambda v: isinstance(v, dict)),
    "data": ("an object (the samples' fields)", lambda v: isinstance(v, dict)),
    "final": ("an object", lambda v: isinstance(v, dict)),
    "train_indices": ("a list of image indices (whole numbers >= 0)",
                      lambda v: isinstance(v, list) and all(map(is_whole, v))),
    "heldout_indices": ("a list of image indices (whole numbers >= 0)",
                        lambda v: isinstance(v, list) and all(map(is_whole, v))),
    "n_train": ("a positive whole number", lambda v: is_whole(v, 1)),
    "alpha": ("a whole number >= 1 (the degree of t -> t^alpha)", lambda v: is_whole(v, 1)),
    "construction_seed": ("a whole number in [0, 2^63)", is_whole),
    "init_seed": ("a whole number in [0, 2^63)", is_whole),
    "rescaled_to_unit_margin": ("true or false", lambda v: isinstance(v, bool)),
    "seconds": ("a finite number", is_finite_number),
    "rescale_factor": ("a finite number", is_finite_number),
}


def check_training_record(info: Any, where: str | Path) -> dict[str, Any]:
    """A ``train.json`` checked against :data:`TRAINING_RECORD` where it is read, so that a malformed field is
    refused in one line naming it, never met later as an internal error."""
    if not isinstance(info, dict):
        raise TrainreconError(f"{where}: expected a JSON object")
    for key, (what, ok) in TRAINING_RECORD.items():
        if key in info and not ok(info[key]):
            shown = json.dumps(info[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise TrainreconError(f"{where}: {key} must be {what}, got {shown}")
    return info
