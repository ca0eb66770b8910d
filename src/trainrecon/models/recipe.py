"""The training recipe: how a network was trained, as its owner can state it (``recipe.json`` in a victim folder).

A :class:`Recipe` names the optimiser and its settings, the loss, the batch size, the length of training and,
optionally, the seed of the batch order.  It never holds data: no images, no labels, no indices.  It is what the
third threat level discloses (:data:`THREAT_LEVELS`): an attacker given the weights, the initial weights theta_0
and the recipe can simulate the training from theta_0 (:mod:`trainrecon.attacks.simulation`).

The update rules are PyTorch's (``torch.optim.SGD`` with ``momentum``, ``dampening = 0``, ``nesterov`` and L2
``weight_decay`` added to the gradient; ``torch.optim.Adam`` with L2 ``weight_decay``; ``torch.optim.AdamW`` with
decoupled decay), the loss the mean over the batch of

* ``cross_entropy``: -log softmax(f(x))_y (K >= 2 outputs, labels 0..K-1);
* ``logistic``: log(1 + exp(-y f(x))) with y = +-1 (one output; ``BCEWithLogits`` on 0/1 labels is the same);
* ``mse``: mean_k (f_k(x) - t_k)^2 with targets +-1 (one output) or one-hot minus ``label_offset`` (K outputs;
  Loo's victims: 0.1).

``batch_size = 0`` is the full batch; training lasts ``epochs`` passes over the n training images (ceil(n / B)
steps each) or ``steps`` optimiser steps, exactly one of the two.  ``data_order_seed``: each epoch's order is
``torch.randperm(n, generator=g)`` with ``g = torch.Generator().manual_seed(data_order_seed)`` (recorded for the
record; the simulation does not need it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import from_dict, load_json, save_json
from ..errors import TrainreconError

#: what an attacker may be given, each level including the ones before it: the trained weights (with the input
#: mean and, when disclosed, n); plus the initial weights theta_0; plus the training recipe
THREAT_LEVELS = ("weights", "init", "recipe")
ThreatLevel = Literal["weights", "init", "recipe"]
RECIPE_FILE = "recipe.json"


@dataclass
class Recipe:
    """How the network was trained (module docstring); validated on construction, one line per bad field."""

    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float
    loss: Literal["cross_entropy", "logistic", "mse"]
    batch_size: int = 0
    epochs: int = 0
    steps: int = 0
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    label_offset: float = 0.0
    data_order_seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("lr", "momentum", "weight_decay", "eps", "betas", "label_offset"):
            values = getattr(self, name)
            for v in values if isinstance(values, list) else [values]:
                if not math.isfinite(v):
                    raise TrainreconError(f"recipe.{name}: must be a finite number, got {v}")
        if not self.lr > 0:
            raise TrainreconError(f"recipe.lr: must be positive, got {self.lr}")
        if self.batch_size < 0:
            raise TrainreconError(f"recipe.batch_size: must be >= 0 (0: the full batch), got {self.batch_size}")
        if self.epochs < 0 or self.steps < 0 or (self.epochs > 0) == (self.steps > 0):
            raise TrainreconError(f"recipe.epochs / recipe.steps: give exactly one of them, positive (got epochs "
                                  f"{self.epochs}, steps {self.steps})")
        if not 0 <= self.momentum < 1:
            raise TrainreconError(f"recipe.momentum: must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise TrainreconError(f"recipe.weight_decay: must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise TrainreconError(f"recipe.betas: need two numbers in [0, 1), got {self.betas}")
        if not self.eps > 0:
            raise TrainreconError(f"recipe.eps: must be positive, got {self.eps}")
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise TrainreconError(f"recipe.momentum / recipe.nesterov: apply to sgd, not {self.optimizer} (its "
                                  "betas hold its moments)")
        if self.label_offset and self.loss != "mse":
            raise TrainreconError("recipe.label_offset: shifts mse targets only")
        if self.nesterov and not self.momentum:
            raise TrainreconError("recipe.nesterov: needs a momentum > 0 (torch's rule)")
        if self.data_order_seed is not None and not 0 <= self.data_order_seed < 2**63:
            raise TrainreconError(f"recipe.data_order_seed: must be an integer in [0, 2^63), got {self.data_order_seed}")

    def total_steps(self, n: int) -> int:
        """Optimiser steps of the whole training on n images: ``steps``, or epochs x ceil(n / batch)."""
        if self.steps:
            return self.steps
        return self.epochs * (math.ceil(n / self.batch_size) if self.batch_size else 1)


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file (JSON object of :class:`Recipe` fields), refused in one line naming the file and field."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise TrainreconError(f"{path}: expected a JSON object (the recipe's fields)")
    return from_dict(Recipe, data, str(path))


def save_recipe(folder: str | Path, recipe: Recipe) -> None:
    save_json(Path(folder) / RECIPE_FILE, recipe)


__all__ = ["RECIPE_FILE", "Recipe", "THREAT_LEVELS", "ThreatLevel", "load_recipe", "save_recipe"]
