"""Polynomial victims in the victim-folder format, and (for evaluation only) their training data.

``model.safetensors`` holds ``layers.0.weight`` = W (K, d) and ``layers.1.weight`` = a (1, K); ``model.json``
says activation ``power`` with its degree.  ``train.json`` records how the victim was made (trainer config or
the exact-KKT construction, the data config and seed), never the data: evaluation regenerates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import from_dict, to_dict
from ..errors import TrainreconError
from ..models.victim import Victim, save_victim
from .exact_kkt import build_exact_kkt
from .polynomial import PolyDataConfig, PolyTrainConfig, make_poly_data, poly_spec, train_polynomial


def save_poly_victim(folder: str | Path, a: np.ndarray, W: np.ndarray, alpha: int, info: dict[str, Any]) -> Path:
    W = np.asarray(W, dtype=np.float64)
    spec = poly_spec(W.shape[1], W.shape[0], alpha)
    params = [torch.as_tensor(W), torch.as_tensor(np.asarray(a, dtype=np.float64))[None]]
    return save_victim(folder, spec, params, None, info)


def make_trained_victim(folder, data: PolyDataConfig, train: PolyTrainConfig, data_dir=None, log=print) -> dict:
    X, y = make_poly_data(data, data_dir)
    a, W, summary = train_polynomial(train, torch.as_tensor(X), torch.as_tensor(y), log=log)
    info = {"trainer_kind": "polynomial", "trainer": to_dict(train), "data": to_dict(data),
            "rescaled_to_unit_margin": summary["min_margin"] > 0, "final": summary}
    save_poly_victim(folder, a.numpy(), W.numpy(), train.alpha, info)
    return summary


def make_exact_victim(folder, data: PolyDataConfig, alpha: int, seed: int = 0, data_dir=None) -> dict:
    """An exact KKT point whose samples lie on the directions of ``data`` (see :mod:`.exact_kkt`)."""
    V, y = make_poly_data(data, data_dir)
    p = build_exact_kkt(V, y, alpha, seed=seed)
    info = {"trainer_kind": "exact_kkt", "alpha": alpha, "construction_seed": seed, "data": to_dict(data),
            "rescaled_to_unit_margin": True, "final": {"n_neurons": int(len(p.a))}}
    save_poly_victim(folder, p.a, p.W, alpha, info)
    return {"n_neurons": int(len(p.a))}


def poly_truth(victim: Victim, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The training samples (X, y) of a polynomial victim, rebuilt from its train.json (evaluation only)."""
    info = victim.train_info
    if "data" not in info:
        raise TrainreconError("train.json: no 'data' record to rebuild the training samples from; pass --truth")
    data = from_dict(PolyDataConfig, info["data"], "train.json.data")
    X, y = make_poly_data(data, data_dir)
    if info.get("trainer_kind") == "exact_kkt":
        p = build_exact_kkt(X, y, int(info["alpha"]), seed=int(info.get("construction_seed", 0)))
        return p.X, p.y
    return X, y
