"""The threat model in code: what an attacker is given, and nothing else.

A :class:`Payload` holds the victim's architecture and trained weights, the input mean of its preprocessing, the
number of training samples only when it is disclosed, and, by threat level (``THREAT_LEVELS``, the attack
config's ``given``: :meth:`Payload.at_level`), its initial weights theta_0 and its training recipe.  Labels of the training set are never given (the methods fix
their candidates' labels themselves).  :func:`payload_from_folder` reads ``model.json`` and
``model.safetensors`` and, for a disclosed n, the *length* of ``train.json``'s index list; the task, the
indices and every data loader stay on the evaluation side.  ``record()`` is written into every run's
``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import load_json, to_dict
from ..errors import TrainreconError
from ..models.victim import Weights, load_victim, training_set_size
from ..provenance import fingerprint, record_array


@dataclass
class Payload(Weights):
    """Weights (architecture, parameters, input mean, initial parameters, recipe) and n if disclosed.  ``scale``
    is the factor the attacker divided the weights by (1, or kappa after :func:`.normalisation.normalise`);
    ``victim_id`` the fingerprint of the whole victim when this payload discloses less of it (:meth:`at_level`):
    the victim a run was made on does not change with what its attacker was given."""

    n_train: int | None = None
    scale: float = 1.0
    victim_id: str | None = None

    def at_level(self, level: str, where: str = "attack.given") -> "Payload":
        """What threat level ``level`` discloses of this payload (``all``: everything it has), keeping the
        victim's fingerprint; a level the victim cannot reach is refused in one line naming ``where``."""
        out = super().at_level(level, where)
        return out if out is self else dataclasses.replace(out, victim_id=self.fingerprint())

    @staticmethod
    def of(victim: Weights, disclose_n: bool = True) -> "Payload":
        """The attacker's view of a loaded victim: its training record is dropped, except n if disclosed.  Plain
        :class:`~trainrecon.models.victim.Weights` (a user's module, ``victim_from_module``) have no training
        record, so n is not disclosed (give ``attack.m``, or build ``Payload(..., n_train=n)``)."""
        if not isinstance(victim, Weights):
            raise TrainreconError(f"expected a victim (load_victim, victim_from_module) or a Payload, got "
                                  f"{type(victim).__name__}")
        info = getattr(victim, "train_info", None) or {}
        n = training_set_size(info, "train.json") if disclose_n else None
        return Payload(victim.spec, victim.params, victim.input_mean, victim.init_params, victim.recipe, n_train=n)

    def mean_flat(self) -> torch.Tensor:
        """The input mean as a flat tensor on the parameters' device and dtype."""
        like = self.params[0]
        return torch.as_tensor(self.mean_chw(), dtype=like.dtype, device=like.device).reshape(-1)

    def fingerprint(self) -> str:
        """Content hash of the victim: weights, initial weights, input mean, architecture and recipe where known
        (a payload restricted by :meth:`at_level` keeps its victim's)."""
        if self.victim_id is not None:
            return self.victim_id
        names = self.spec.param_names()
        tensors: dict[str, Any] = dict(zip(names, self.params))
        if self.init_params is not None:
            tensors.update({f"init.{k}": v for k, v in zip(names, self.init_params)})
        if self.input_mean is not None:
            tensors["input_mean"] = np.asarray(self.input_mean, dtype=np.float64)
        tensors["spec"] = record_array(to_dict(self.spec))
        if self.recipe is not None:
            tensors["recipe"] = record_array(to_dict(self.recipe))
        return fingerprint(tensors)

    def record(self) -> dict[str, Any]:
        """What the attacker was given (config.json's ``payload``), its threat level first."""
        return {"threat_level": self.level, "weights": self.fingerprint(), "architecture": to_dict(self.spec),
                "initial_weights": self.init_params is not None, "input_mean": self.input_mean is not None,
                "recipe": to_dict(self.recipe) if self.recipe is not None else "not given",
                "n_train": self.n_train if self.n_train is not None else "not disclosed",
                "training_labels": "not given"}


def payload_from_folder(folder: str | Path, disclose_n: bool = True) -> Payload:
    """The attacker's view of a victim folder (a :class:`Payload`): the architecture, the weights, the input mean,
    the initial weights and the recipe where saved (what a run uses of them is its config's ``given``), and n (the
    number of training indices train.json records) when ``disclose_n``; never the training images, their indices
    or their labels.  n is the length of train.json's indices, or the ``n_train`` an importing owner stated."""
    folder = Path(folder)
    victim = load_victim(folder, training_record=False)
    n = None
    if disclose_n and (folder / "train.json").is_file():
        n = training_set_size(load_json(folder / "train.json"), str(folder / "train.json"))
    return dataclasses.replace(Payload.of(victim, disclose_n=False), n_train=n)
