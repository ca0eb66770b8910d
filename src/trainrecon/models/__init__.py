"""Victim models: the architecture interface (MLPs, declarative layer lists), imports of a user's state dicts and
nn.Modules, and the victim folder format."""

from .architecture import Architecture
from .mlp import EXACT, MLPSpec, Surrogate
from .parameters import flatten, forward, init_params, unflatten
from .sequential import Layer, SequentialSpec
from .user_weights import import_victim
from .victim import Victim, architecture_from_dict, load_victim, save_victim

__all__ = [
    "Architecture",
    "EXACT",
    "Layer",
    "SequentialSpec",
    "architecture_from_dict",
    "MLPSpec",
    "Surrogate",
    "Victim",
    "flatten",
    "forward",
    "import_victim",
    "init_params",
    "load_victim",
    "save_victim",
    "unflatten",
]
