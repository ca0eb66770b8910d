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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path
from ..provenance import LOCK_FILES
from ..config import is_finite_number, is_whole, load_json, save_json, to_dict
from ..errors import TrainreconError
from .architecture import Architecture, architecture_from_dict
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


def _parts(spec: Architecture, tensors: dict[str, torch.Tensor], where: str
           ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, Any]:
    """(parameters, initial parameters or None, raw input mean or None) of a state dict, checked."""
    params = _check_params(spec, tensors, where)
    init = _check_params(spec, tensors, where, INIT_PREFIX) if any(k.startswith(INIT_PREFIX) for k in tensors) else None
    return params, init, tensors.get("input_mean")


def _check_params(spec: Architecture, tensors: dict[str, torch.Tensor], where: str, prefix: str = "") -> list[torch.Tensor]:
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


def load_victim(folder: str | Path, training_record: bool = True) -> Victim:
    """A victim folder's weights, architecture and (unless ``training_record`` is False, as on the attacker's
    side) its ``train.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainreconError(f"{folder}: victim folder not found")
    spec = architecture_from_dict(load_json(folder / "model.json"), str(folder / "model.json"))
    path = folder / "model.safetensors"
    params, init, mean = _parts(spec, read_safetensors(path), str(path))
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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a user's state dict: safetensors, or a PyTorch file loaded with ``weights_only=True``."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path)
    if not path.is_file():
        raise TrainreconError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # torch warns, over several lines, about pickles it then refuses
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for hostile pickles, RuntimeError/EOFError for truncated files
        lines = [ln.split("WeightsUnpickler error:")[-1].strip() for ln in str(e).splitlines()]
        boiler = ("Weights only load failed", "Check the documentation", "Please file an issue")
        told = [ln for ln in lines if ln and not ln.startswith(boiler)]
        told = [ln for ln in told if "GLOBAL" in ln or "Unsupported" in ln] or told  # the reason, not the advice
        msg = (told or [ln for ln in lines if ln] or [type(e).__name__])[0].split(". ")[0].rstrip(".")
        raise TrainreconError(f"{path}: refused to load (weights_only=True): {msg}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # Haim's {'batch','epoch','state_dict'} wrapper
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainreconError(f"{path}: expected a dict of tensors (a state dict)")
    for k, v in obj.items():
        if v.layout != torch.strided or v.is_quantized or v.is_meta:
            kind = "quantized" if v.is_quantized else "on the meta device" if v.is_meta else f"{v.layout}".removeprefix("torch.")
            raise TrainreconError(f"{path}: tensor {k!r} is {kind}; save the state dict with dense real tensors "
                                  "(tensor.to_dense(), dequantize())")
    return {k.replace("convnet.", "layers."): v for k, v in obj.items()}


def import_victim(weights: str | Path, architecture: str | Path | None, out: str | Path,
                  mean: str | Path | None = None, input_shape: list[int] | None = None,
                  init: str | Path | None = None, recipe: Recipe | None = None, n: int | None = None) -> Path:
    """Turn a user's state dict plus an architecture JSON into a victim folder.

    ``architecture`` holds a ``model.json`` object: an MLP's fields (widths, bias, activation, input_shape;
    tensors ``layers.{i}.weight`` / ``layers.{i}.bias``) or a layer list (``kind: "sequential"``, tensors
    ``{i}.weight`` as ``nn.Sequential`` names them).  ``architecture = None`` infers an MLP from the state dict's
    shapes (:func:`~.user_weights.infer_architecture`; ``input_shape`` (C, H, W) then says how inputs are laid out).
    An optional ``input_mean`` tensor (or ``mean``, an .npz with ``x`` holding the mean image) records the input
    centring.  ``init``: the network's initial state dict (theta_0, named as the weights are), and ``recipe``: its
    training recipe (:class:`~.recipe.Recipe`, :func:`~.recipe.load_recipe`), the two further threat levels;
    ``n``: the number of training images, recorded as ``n_train`` (disclosed to attackers as n).
    """
    out = Path(out)
    check_new_folder(out)
    tensors = read_state_dict(weights)
    if architecture is None:
        from .user_weights import infer_architecture

        spec, tensors, how = infer_architecture(tensors, str(weights), input_shape)
    else:
        spec, how = architecture_from_dict(load_json(architecture), str(architecture)), {}
    params, init_params, input_mean = _parts(spec, tensors, str(weights))
    check_accounted(spec, tensors, str(weights), str(architecture or "the inferred architecture"))
    if init is not None:
        if init_params is not None:
            raise TrainreconError(f"--init: {weights} already holds init.* tensors; give theta_0 once")
        init_params = read_init(init, spec, architecture is None, input_shape)
    info = {"imported_from": Path(weights).name, **how, **imported_n(n)}
    if init is not None:
        info["init_imported_from"] = Path(init).name
    return write_imported(out, spec, params, init_params, input_mean, str(weights), mean, info, recipe)


def imported_n(n: int | None) -> dict[str, int]:
    """train.json's ``n_train`` of an import (``--n``), checked; nothing when not given."""
    if n is None:
        return {}
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TrainreconError(f"--n: the number of training images must be a positive integer, got {n!r}")
    return {"n_train": n}


def read_init(path: str | Path, spec: Architecture, inferred: bool, input_shape: list[int] | None = None
              ) -> list[torch.Tensor]:
    """theta_0 from an initial state dict named as the trained one (``--init``): the tensors of ``spec``'s
    parameters, checked (names, shapes, finite real floats, nothing left over)."""
    tensors = read_state_dict(path)
    if inferred:
        from .user_weights import infer_architecture

        init_spec, tensors, _ = infer_architecture(tensors, str(path), input_shape or list(spec.input_shape))
        if init_spec != spec:
            raise TrainreconError(f"--init: {path} describes another network than the trained weights")
    init_params = _check_params(spec, tensors, str(path))
    check_accounted(spec, {k: v for k, v in tensors.items() if k != "input_mean"}, str(path), "the architecture")
    return init_params


def check_accounted(spec: Architecture, tensors: dict[str, torch.Tensor], where: str, architecture: str) -> None:
    """Refuse, naming them, tensors the architecture does not account for (an extra bias, an extra layer whose
    shapes happen to fit: another network than the one described); nothing is dropped silently."""
    known = set(spec.param_names()) | {INIT_PREFIX + k for k in spec.param_names()} | {"input_mean"}
    extra = sorted(set(tensors) - known)
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise TrainreconError(f"{where}: tensors {architecture} does not account for: "
                              f"{', '.join(map(repr, extra[:3]))}{more} (a different network? nothing is dropped "
                              "silently: fix the architecture or remove them)")


def check_new_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(p.name not in LOCK_FILES for p in out.iterdir())):
        raise TrainreconError(f"{out}: exists and is not an empty folder; import into a new folder")


def write_imported(out: Path, spec: Architecture, params, init, input_mean, where: str, mean: str | Path | None,
                   info: dict[str, Any], recipe: Recipe | None = None) -> Path:
    """The victim folder of an import: the input mean from ``mean`` (an .npz) if given, checked; the record of
    where it came from and its architecture in train.json; theta_0 and the recipe where given."""
    if mean is not None:
        from ..data.formats import read_npz

        input_mean, where = read_npz(mean)[0], str(mean)
    if input_mean is not None:
        input_mean = check_mean(input_mean, spec, where)
    return save_victim(out, spec, params, input_mean, {**info, "architecture": to_dict(spec)}, init, recipe)
