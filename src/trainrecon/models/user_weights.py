"""Networks a user trained elsewhere: an MLP state dict with its architecture inferred from the shapes, and a
user's own ``torch.nn`` module turned into a declarative layer list (:mod:`.sequential`).

* :func:`infer_architecture`: a state dict of an ``nn.Sequential`` of ``nn.Linear`` layers (``0.weight``,
  ``2.weight``, ... with one activation module between them) or of an MLP under ``layers.{i}`` says its
  widths and biases; the activation, which no state dict holds, is taken to be ReLU (recorded).  A 4-D kernel
  is refused in one line: stride and padding are not in a state dict, so convolutions need their layer list.
* :func:`sequential_from_module`: an ``nn.Module`` (an ``nn.Sequential``, or any module whose forward
  ``torch.fx`` traces to a chain of supported modules) as a :class:`~.sequential.SequentialSpec` and its
  parameters.  A layer with no declarative form is refused naming that layer; so is an activation applied as a
  function inside ``forward`` (``F.relu``): the attack could not swap its surrogate in.
* :func:`check_against_module`: the layer list against the module itself, evaluated with
  ``torch.func.functional_call`` in float64, with the exact activation and with every ReLU-family module
  swapped for the softplus surrogate; a mismatch (an activation the conversion could not see) is refused.
* :func:`victim_from_module`, :func:`import_module_victim`: the from-Python and ``--module FILE.py:FACTORY``
  routes.  Only the latter runs user code (the user's factory, at their request); the victim folder it writes is
  a layer list, so no later command runs any.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import from_dict, load_json, to_dict
from ..data.formats import read_npz
from ..errors import TrainreconError
from ..provenance import LOCK_FILES
from .activations import Surrogate, activate
from .architecture import Architecture
from .mlp import MLPSpec
from .recipe import Recipe
from .sequential import Layer, SequentialSpec
from .victim import (INIT_PREFIX, Weights, architecture_from_dict, check_mean, checked_params, read_safetensors,
                     save_victim, tensor_parts)

_KEY = re.compile(r"^(.*?)(\d+)\.(weight|bias)$")


def guess_input_shape(d: int) -> list[int]:
    """(1, h, h) or (3, h, h) when d is one or three squares, else (1, 1, d): how pictures are drawn."""
    for c in (1, 3):
        h = math.isqrt(d // c) if d % c == 0 else 0
        if h > 1 and c * h * h == d:
            return [c, h, h]
    return [1, 1, d]


def infer_architecture(tensors: dict[str, torch.Tensor], where: str, input_shape: list[int] | None = None
                       ) -> tuple[Architecture, dict[str, torch.Tensor], dict[str, Any]]:
    """(architecture, the tensors under its names, what was inferred) of an MLP state dict; see the module
    docstring.  ``input_shape`` (C, H, W) lays out the inputs (default :func:`guess_input_shape`)."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    prefixes = set()
    for key, t in tensors.items():
        if key == "input_mean" or key.startswith("init."):
            continue
        m = _KEY.match(key)
        if m is None:
            raise TrainreconError(f"{where}: cannot infer an architecture from tensor {key!r} (expected names like "
                                  "'0.weight' of an nn.Sequential); give the layer list as an architecture file")
        if t.ndim == 4 and m.group(3) == "weight":
            raise TrainreconError(f"{where}: tensor {key!r} is a convolution kernel {tuple(t.shape)}; stride and padding "
                                  "are not in a state dict: give the layer list (model.json with kind 'sequential') or "
                                  "--module FILE.py:FACTORY")
        prefixes.add(m.group(1))
        layers.setdefault(int(m.group(2)), {})[m.group(3)] = t
    if not layers:
        raise TrainreconError(f"{where}: holds no weight tensors")
    if len(prefixes) > 1:
        raise TrainreconError(f"{where}: tensors under several prefixes ({', '.join(sorted(map(repr, prefixes)))}); "
                              "give the layer list as an architecture file")
    prefix = prefixes.pop()
    idx = sorted(layers)
    widths: list[int] = []
    for k, i in enumerate(idx):
        name = f"{prefix}{i}"
        if "weight" not in layers[i]:
            raise TrainreconError(f"{where}: {name}.bias has no {name}.weight")
        w = layers[i]["weight"]
        if w.ndim != 2:
            raise TrainreconError(f"{where}: tensor '{name}.weight' has shape {tuple(w.shape)}; only linear layers "
                                  "(2-D weights) can be inferred: give the layer list as an architecture file")
        if k == 0:
            widths.append(int(w.shape[1]))
        elif w.shape[1] != widths[-1]:
            raise TrainreconError(f"{where}: tensor '{name}.weight' takes {w.shape[1]} inputs but the layer before it "
                                  f"gives {widths[-1]}")
        widths.append(int(w.shape[0]))
        b = layers[i].get("bias")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise TrainreconError(f"{where}: tensor '{name}.bias' has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
    gaps = {b - a for a, b in zip(idx, idx[1:])}
    shape = list(input_shape) if input_shape else guess_input_shape(widths[0])
    info: dict[str, Any] = {"architecture_inferred": f"from the state dict's shapes: widths {widths}, ReLU assumed "
                            "between linear layers (a state dict holds no activation)",
                            "input_shape": "given" if input_shape else "guessed from the input size"}
    bias = ["bias" in layers[i] for i in idx]
    if (len(idx) == 1 and prefix == "layers.") or (idx[0] == 0 and gaps == {1}):
        spec: Architecture = MLPSpec(widths=widths, bias=bias, activation="relu", input_shape=shape)
        names = iter(spec.param_names())
    elif idx[0] in (0, 1) and gaps <= {2}:
        # nn.Sequential([Flatten,] Linear, ReLU, Linear, ...): names as the user's
        ls: list[Layer] = [Layer("flatten")] if idx[0] == 1 else []
        for k, i in enumerate(idx):
            ls.append(Layer("linear", features=widths[k + 1], bias=bias[k]))
            if k < len(idx) - 1:
                ls.append(Layer("relu"))
        spec = SequentialSpec(input_shape=shape, layers=ls)
        names = iter(spec.param_names())
    else:
        raise TrainreconError(f"{where}: layer indices {idx} do not say what lies between the linear layers (one "
                              "activation between each, as in nn.Sequential(Linear, ReLU, Linear), is what can be "
                              "inferred); give the layer list as an architecture file")
    renamed = {}
    for i in idx:
        renamed[next(names)] = layers[i]["weight"]
        if "bias" in layers[i]:
            renamed[next(names)] = layers[i]["bias"]
    renamed.update({k: v for k, v in tensors.items() if k == "input_mean"})
    return spec, renamed, info


# -- a user's nn.Module -----------------------------------------------------------------------------------------
ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.GELU)


def _layer_of(name: str, mod: nn.Module) -> Layer:
    """The declarative form of one module, or a one-line refusal naming it."""
    what = f"layer {name!r} ({type(mod).__name__})"
    if isinstance(mod, nn.Conv2d):
        if mod.groups != 1 or tuple(mod.dilation) != (1, 1) or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            raise TrainreconError(f"{what}: only groups=1, dilation=1, zero padding given as numbers have a declarative "
                                  "form")
        return Layer("conv2d", channels=mod.out_channels, kernel=list(mod.kernel_size), stride=list(mod.stride),
                     padding=list(mod.padding), bias=mod.bias is not None)
    if isinstance(mod, nn.Linear):
        return Layer("linear", features=mod.out_features, bias=mod.bias is not None)
    if type(mod) is nn.ReLU:
        return Layer("relu")
    if type(mod) is nn.LeakyReLU:
        return Layer("leaky_relu", slope=float(mod.negative_slope))
    if type(mod) is nn.Softplus:
        if mod.beta != 1:
            raise TrainreconError(f"{what}: only Softplus(beta=1) has a declarative form")
        return Layer("softplus")
    if type(mod) is nn.GELU:
        if mod.approximate != "none":
            raise TrainreconError(f"{what}: only the exact GELU (approximate='none') has a declarative form")
        return Layer("gelu")
    if type(mod) in (nn.AvgPool2d, nn.MaxPool2d):
        pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [v, v]  # noqa: E731
        if mod.ceil_mode or (isinstance(mod, nn.AvgPool2d) and (not mod.count_include_pad or mod.divisor_override)):
            raise TrainreconError(f"{what}: only ceil_mode=False (and for average pooling count_include_pad=True, no "
                                  "divisor_override) has a declarative form")
        if isinstance(mod, nn.MaxPool2d) and (pair(mod.dilation) != [1, 1] or mod.return_indices):
            raise TrainreconError(f"{what}: only dilation=1 without return_indices has a declarative form")
        return Layer("avg_pool" if isinstance(mod, nn.AvgPool2d) else "max_pool", kernel=pair(mod.kernel_size),
                     stride=pair(mod.stride if mod.stride is not None else mod.kernel_size), padding=pair(mod.padding))
    if type(mod) is nn.Flatten:
        if mod.start_dim != 1 or mod.end_dim != -1:
            raise TrainreconError(f"{what}: only Flatten(start_dim=1, end_dim=-1) has a declarative form")
        return Layer("flatten")
    if type(mod) in (nn.Identity, nn.Dropout):
        return Layer("identity")
    raise TrainreconError(f"{what} has no declarative form (supported: Conv2d, Linear, ReLU, LeakyReLU, GELU, "
                          "AvgPool2d, MaxPool2d, Flatten, Identity, Dropout)")


def _chain(module: nn.Module) -> list[tuple[str, nn.Module | Layer]]:
    """The module as a chain of (qualified name, submodule or flatten Layer)."""
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential):
                out += [(f"{name}.{n}", c) for n, c in _chain(child)]
            else:
                out.append((name, child))
        return out
    import torch.fx  # here: fx is loaded only for a module whose layers are not a plain chain

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:  # noqa: BLE001 - any tracing failure is the same refusal
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainreconError(f"{type(module).__name__}: torch.fx cannot trace its forward ({msg}); write it as an "
                              "nn.Sequential or give a layer list") from None
    out: list[tuple[str, nn.Module | Layer]] = []
    cur = None
    sizes = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if cur is not None:
                raise TrainreconError(f"{type(module).__name__}: forward takes more than one input")
            cur = node
            continue
        if node.op == "output":
            if node.args[0] is not cur:
                raise TrainreconError(f"{type(module).__name__}: forward does not return the last layer's output")
            break
        args = node.args
        if node.op == "call_method" and node.target == "size" and args[1:] == (0,):
            sizes.add(node)  # the batch size, of x.view(x.size(0), -1)
            continue
        if not args or args[0] is not cur:
            raise TrainreconError(f"{type(module).__name__}: forward is not a chain of layers (node {node.name!r} "
                                  f"does not take the previous layer's output)")
        if node.op == "call_module":
            out.append((str(node.target), gm.get_submodule(node.target)))
        elif (node.op == "call_function" and node.target is torch.flatten and args[1:] in ((1,), (1, -1))) or \
                (node.op == "call_method" and node.target == "flatten" and args[1:] in ((1,), (1, -1))) or \
                (node.op == "call_method" and node.target in ("view", "reshape") and len(args) == 3
                 and args[1] in sizes and args[2] == -1):
            out.append((node.name, Layer("flatten")))
        else:
            target = getattr(node.target, "__name__", str(node.target))
            hint = (": the attack cannot swap its surrogate into an activation applied as a function; use an nn.ReLU "
                    "module" if target in ("relu", "leaky_relu", "gelu", "relu_") else "")
            raise TrainreconError(f"{type(module).__name__}: forward calls {target} (node {node.name!r}), which has no "
                                  f"declarative form{hint}")
        cur = node
    return out


def sequential_from_module(module: nn.Module, input_shape: list[int]
                           ) -> tuple[SequentialSpec, list[torch.Tensor], list[str]]:
    """(layer list, its parameters in float64, the module's own names of those parameters); see the module
    docstring."""
    chain = _chain(module)
    layers, source = [], []
    own = dict(module.named_parameters())
    for name, mod in chain:
        layer = mod if isinstance(mod, Layer) else _layer_of(name, mod)
        layers.append(layer)
        if layer.type in ("conv2d", "linear"):
            source.append(f"{name}.weight")
            if layer.bias:
                source.append(f"{name}.bias")
        elif not isinstance(mod, Layer) and any(True for _ in mod.parameters()):
            raise TrainreconError(f"layer {name!r} ({type(mod).__name__}) holds parameters a {layer.type} layer has none of")
    spec = SequentialSpec(input_shape=[int(v) for v in input_shape], layers=layers)
    missing = [s for s in source if s not in own]
    if missing:
        raise TrainreconError(f"{type(module).__name__}: no parameter {missing[0]!r}")
    extra = sorted(set(own) - set(source))
    if extra:
        raise TrainreconError(f"{type(module).__name__}: parameter {extra[0]!r} is used by no layer of the chain")
    return spec, [own[s].detach().double().clone() for s in source], source


class _Swapped(nn.Module):
    """A ReLU-family module's activation under a surrogate (for :func:`check_against_module`)."""

    def __init__(self, layer: Layer, surrogate: Surrogate):
        super().__init__()
        self.layer, self.surrogate = layer, surrogate

    def forward(self, z):
        return activate(z, self.layer.type, self.surrogate, self.layer.degree, self.layer.slope)


def _swap(module: nn.Module, surrogate: Surrogate) -> nn.Module:
    for name, child in list(module.named_children()):
        if isinstance(child, ACTIVATION_MODULES):
            setattr(module, name, _Swapped(_layer_of(name, child), surrogate))
        else:
            _swap(child, surrogate)
    return module


def check_against_module(module: nn.Module, spec: SequentialSpec, params: list[torch.Tensor], source: list[str],
                         seed: int = 0) -> None:
    """Refuse (one line) unless the layer list computes what ``module`` computes, with the exact activation and
    with every ReLU-family module swapped for the softplus surrogate, on seeded random inputs in float64
    (``torch.func.functional_call`` with the layer list's parameters under the module's names)."""
    ref = copy.deepcopy(module).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((4, *spec.input_shape), generator=g, dtype=torch.float64)
    # a module that starts with a linear layer takes flat inputs (as the layer list feeds it)
    fed = x.reshape(len(x), -1) if spec.layers[0].type == "linear" else x
    state = {**{k: v.double() for k, v in ref.named_buffers()}, **dict(zip(source, params))}
    for surrogate in (Surrogate(), Surrogate("softplus", 3.0)):
        net = ref if surrogate.kind == "exact" else _swap(copy.deepcopy(ref), surrogate)
        with torch.no_grad():
            want = torch.func.functional_call(net, state, (fed,)).reshape(len(x), -1)
            got = spec.forward(params, x, surrogate)
        if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-8, atol=1e-10 * float(want.abs().max()) + 1e-300):
            what = ("computes something else than its layer list (an operation the conversion cannot see)"
                    if surrogate.kind == "exact" else
                    "applies an activation that is not a module (e.g. torch.relu inside forward): the attack's "
                    "surrogate cannot be swapped in; use nn.ReLU modules")
            raise TrainreconError(f"{type(module).__name__}: its forward {what}")


def victim_from_module(module: nn.Module, input_shape: list[int], input_mean: Any = None):
    """The :class:`~.victim.Weights` of a user's module object (see the module docstring): a layer list, its
    parameters (float64) and the input mean (C, H, W) or None."""
    if not isinstance(module, nn.Module):
        raise TrainreconError(f"expected a torch.nn.Module, got {type(module).__name__}")
    if len(input_shape) != 3:
        raise TrainreconError(f"input_shape: need (C, H, W), got {list(input_shape)}")
    spec, params, source = sequential_from_module(module, list(input_shape))
    check_against_module(module, spec, params, source)
    mean = None if input_mean is None else check_mean(
        input_mean.detach().cpu() if isinstance(input_mean, torch.Tensor) else np.asarray(input_mean), spec, "input_mean")
    return Weights(spec, params, mean)


def load_factory(ref: str) -> nn.Module:
    """Call the user's ``FILE.py:FACTORY`` (their own code, at their request) and return its module."""
    path, sep, name = ref.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise TrainreconError(f"--module: expected FILE.py:FACTORY, got {ref!r}")
    file = Path(path)
    if not file.is_file():
        raise TrainreconError(f"--module: {file}: file not found")
    spec = importlib.util.spec_from_file_location(f"trainrecon_user_{file.stem}", file)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's file failing to import is a user error
        raise TrainreconError(f"--module: {file}: failed to import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    factory = getattr(mod, name, None)
    if not callable(factory):
        raise TrainreconError(f"--module: {file} defines no function {name!r}")
    try:
        module = factory()
    except Exception as e:  # noqa: BLE001
        raise TrainreconError(f"--module: {ref}() failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(module, nn.Module):
        raise TrainreconError(f"--module: {ref}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(tensors, strict=True)`` with a one-line error for missing, unexpected or
    mis-shaped tensors (``input_mean`` and ``init.*`` are not the module's)."""
    own = module.state_dict()
    state = {k: v for k, v in tensors.items() if k != "input_mean" and not k.startswith("init.")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = ([f"missing {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")] if missing else []) + \
                ([f"unexpected {unexpected[0]!r}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")] if unexpected else [])
        raise TrainreconError(f"{where}: does not match the module's state dict ({', '.join(parts)})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise TrainreconError(f"{where}: tensor {k!r} has shape {tuple(v.shape)}, the module's is {tuple(own[k].shape)}")
        if own[k].is_floating_point() and (not v.is_floating_point() or not torch.isfinite(v).all()):
            raise TrainreconError(f"{where}: tensor {k!r} must hold finite real floats")
        if not own[k].is_floating_point() and v.dtype != own[k].dtype:
            raise TrainreconError(f"{where}: tensor {k!r} has dtype {v.dtype}, the module's is {own[k].dtype}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def import_module_victim(weights: str | Path, module_ref: str, input_shape: list[int], out: str | Path,
                         mean: str | Path | None = None, init: str | Path | None = None,
                         init_seed: int | None = None, recipe=None, n: int | None = None) -> Path:
    """``trainrecon import WEIGHTS --module FILE.py:FACTORY --input-shape C,H,W OUT``: load the state dict into the
    user's module and write the victim as its layer list.  theta_0 comes from ``init`` (the initial state dict,
    loaded into a second module the same way) or from ``init_seed`` (the factory called after
    ``torch.manual_seed(init_seed)``, as a training script that seeds torch before building its model makes it);
    ``recipe`` is the training recipe (a :class:`~.recipe.Recipe`); ``n`` the number of training images."""
    out = Path(out)
    check_new_folder(out)
    if init is not None and init_seed is not None:
        raise TrainreconError("--init-seed: give the initial weights as a file (--init) or as the seed that made them, "
                              "not both")
    if init_seed is not None and not 0 <= init_seed < 2**63:
        raise TrainreconError(f"--init-seed: must be an integer in [0, 2^63), got {init_seed}")
    tensors = read_state_dict(weights)
    module = load_factory(module_ref).to(torch.float64)  # float64 holds a float32 or float64 state dict exactly
    sequential_from_module(module, input_shape)  # a layer with no declarative form is refused before loading
    load_into(module, tensors, str(weights))
    w = victim_from_module(module, input_shape)
    info: dict[str, Any] = {"imported_from": Path(weights).name, "module": module_ref, **imported_n(n)}
    init_params = None
    if init is not None:
        start = load_factory(module_ref).to(torch.float64)
        load_into(start, read_state_dict(init), str(init))
        init_params = sequential_from_module(start, input_shape)[1]
        info["init_imported_from"] = Path(init).name
    elif init_seed is not None:
        with torch.random.fork_rng(devices=[]):  # the caller's global generator is left as it was
            torch.manual_seed(init_seed)
            start = load_factory(module_ref)
        init_params = sequential_from_module(start, input_shape)[1]
        info["init_seed"] = init_seed
    return write_imported(out, w.spec, w.params, init_params, tensors.get("input_mean"), str(weights), mean, info,
                          recipe)


def layers_from_file(path: str | Path) -> list[Layer]:
    """The layer list of an architecture file (``model.json`` fields with ``kind: "sequential"``; its
    ``input_shape``, if any, is left to the task) for ``train --arch``."""
    data = load_json(path)
    if not isinstance(data, dict) or data.get("kind") != "sequential":
        raise TrainreconError(f"{path}: expected a JSON object with kind 'sequential' and its layers")
    unknown = sorted(set(data) - {"kind", "layers", "input_shape"})
    if unknown:
        raise TrainreconError(f"{path}: unknown field {unknown[0]!r} (known: kind, input_shape, layers)")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise TrainreconError(f"{path}.layers: expected a non-empty list of layers")
    out = [from_dict(Layer, v, f"{path}.layers[{i}]") if isinstance(v, dict) else None for i, v in enumerate(layers)]
    for i, layer in enumerate(out):
        if layer is None:
            raise TrainreconError(f"{path}.layers[{i}]: expected an object")
        layer.check(f"{path}.layers[{i}]")
    return out


# -- importing a user's weights as a victim folder ------------------------------------------------------------

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
        spec, tensors, how = infer_architecture(tensors, str(weights), input_shape)
    else:
        spec, how = architecture_from_dict(load_json(architecture), str(architecture)), {}
    params, init_params, input_mean = tensor_parts(spec, tensors, str(weights))
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
        init_spec, tensors, _ = infer_architecture(tensors, str(path), input_shape or list(spec.input_shape))
        if init_spec != spec:
            raise TrainreconError(f"--init: {path} describes another network than the trained weights")
    init_params = checked_params(spec, tensors, str(path))
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
        input_mean, where = read_npz(mean)[0], str(mean)
    if input_mean is not None:
        input_mean = check_mean(input_mean, spec, where)
    return save_victim(out, spec, params, input_mean, {**info, "architecture": to_dict(spec)}, init, recipe)
