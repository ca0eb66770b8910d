"""Victim models: functional MLPs and the victim folder format."""

from .mlp import EXACT, MLPSpec, Surrogate, flatten, forward, init_params, unflatten
from .victim import Victim, import_victim, load_victim, save_victim

__all__ = [
    "EXACT",
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
