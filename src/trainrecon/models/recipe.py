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
steps each) or ``steps`` optimiser steps, exactly one of the two.  ``data_order_seed``: the seed of the batch
order, one generator ``g = torch.Generator().manual_seed(data_order_seed)`` for the whole training, each epoch cut
into consecutive batches of B (the last one shorter); ``data_order`` says how each epoch's order is drawn from g:
``randperm`` (the default), ``torch.randperm(n, generator=g)``; ``dataloader``, a
``torch.utils.data.DataLoader(dataset, batch_size=B, shuffle=True, generator=g)`` iterated once per epoch (which
draws a worker seed from g before each epoch's permutation).  :meth:`Recipe.batch_order` gives the order, so that
a simulation can replay the training's own batches (``attack.replay_epochs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..config import from_dict, load_json, save_json
from ..errors import TrainreconError

#: what an attacker may be given, each level including the ones before it: the trained weights (with the input
#: mean and, when disclosed, n); plus the initial weights theta_0; plus the training recipe
THREAT_LEVELS = ("weights", "init", "recipe")
ThreatLevel = Literal["weights", "init", "recipe"]
RECIPE_FILE = "recipe.json"
#: the losses that are a likelihood of the label (softmax cross-entropy, logistic): the only ones a simulation can
#: train soft, learned labels on (``attack.labels = "learned"``; under mse a label is a regression target)
LIKELIHOOD_LOSSES = ("cross_entropy", "logistic")


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
    data_order: Literal["randperm", "dataloader"] = "randperm"

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

    @property
    def adaptive(self) -> bool:
        """Whether the optimiser scales each coordinate's step by its own gradient history (Adam, AdamW), so that
        the weights move by about lr sign(g) and not lr g."""
        return self.optimizer in ("adam", "adamw")

    def steps_per_epoch(self, n: int) -> int:
        return math.ceil(n / self.batch_size) if self.batch_size else 1

    def full_batch(self, n: int) -> bool:
        """Whether every step trains on all n images (``batch_size`` 0, or at least n)."""
        return not self.batch_size or self.batch_size >= n

    def records_order(self, n: int) -> bool:
        """Whether the training's batches are known: the full batch, or mini-batches with their order's seed."""
        return self.full_batch(n) or self.data_order_seed is not None

    def batch_order(self, n: int, steps: int) -> list[torch.Tensor]:
        """The training-set indices (0 .. n-1, the owner's order) of each of the first ``steps`` optimiser steps,
        epoch after epoch as ``data_order`` draws them from one generator seeded with ``data_order_seed`` (module
        docstring); the full batch needs no seed.  Refused in one line when mini-batches have no recorded seed."""
        if not self.records_order(n):
            raise TrainreconError("recipe.data_order_seed: replaying the training's mini-batches needs the seed of "
                                  "their order (none recorded)")
        if self.full_batch(n):
            return [torch.arange(n)] * steps
        g = torch.Generator().manual_seed(self.data_order_seed)
        order: list[torch.Tensor] = []
        if self.data_order == "dataloader":
            loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=self.batch_size, shuffle=True, generator=g)
            while len(order) < steps:
                order += list(loader)
            return order[:steps]
        while len(order) < steps:
            perm = torch.randperm(n, generator=g)
            order += [perm[k:k + self.batch_size] for k in range(0, n, self.batch_size)]
        return order[:steps]

    def total_steps(self, n: int) -> int:
        """Optimiser steps of the whole training on n images: ``steps``, or epochs x ceil(n / batch)."""
        if self.steps:
            return self.steps
        return self.epochs * self.steps_per_epoch(n)

    def first_epochs_steps(self, n: int, epochs: int) -> int:
        """Optimiser steps of the first ``epochs`` epochs on n images, at most the whole training's."""
        return min(epochs * self.steps_per_epoch(n), self.total_steps(n))


def load_recipe(path: str | Path) -> Recipe:
    """A recipe file (JSON object of :class:`Recipe` fields), refused in one line naming the file and field."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise TrainreconError(f"{path}: expected a JSON object (the recipe's fields)")
    return from_dict(Recipe, data, str(path))


def save_recipe(folder: str | Path, recipe: Recipe) -> None:
    save_json(Path(folder) / RECIPE_FILE, recipe)


__all__ = ["RECIPE_FILE", "Recipe", "THREAT_LEVELS", "ThreatLevel", "load_recipe", "save_recipe"]
