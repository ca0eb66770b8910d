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

from ..config import from_dict, load_json, to_dict
from ..errors import TrainreconError
from ..models.victim import Victim, save_victim
from ..provenance import OutputFolder, refuse_other
from ..runtime import require_memory
from .exact_kkt import build_exact_kkt, check_size
from ..training.polynomial import PolyTrainConfig, poly_spec, train_polynomial
from .polynomial import PolyDataConfig, make_poly_data


def save_poly_victim(folder: str | Path, a: np.ndarray, W: np.ndarray, alpha: int, info: dict[str, Any]) -> Path:
    W = np.asarray(W, dtype=np.float64)
    spec = poly_spec(W.shape[1], W.shape[0], alpha)
    params = [torch.as_tensor(W), torch.as_tensor(np.asarray(a, dtype=np.float64))[None]]
    return save_victim(folder, spec, params, None, info)


#: everything a polynomial victim's folder holds (exact-kkt and train-poly refuse a folder holding anything else)
VICTIM_FILES = ("model.json", "train.json", "model.safetensors", "*.tmp")
#: train-poly's size limit, checked before any work: steps x n x width x d multiply-adds (minutes on a CPU)
MAX_TRAIN_WORK = 1e11


def _existing(folder: Path, record: dict[str, Any], command: str) -> dict[str, Any] | None:
    """The train.json of the same victim already in ``folder`` (then there is nothing to do), or None for an
    empty folder; another victim, or anything else, is refused in one line."""
    OutputFolder(folder, command, VICTIM_FILES).claim()
    if not ((folder / "model.safetensors").is_file() or (folder / "train.json").is_file()):
        return None
    old = load_json(folder / "train.json") if (folder / "train.json").is_file() else {}
    old = old if isinstance(old, dict) else {}
    refuse_other({k: old.get(k) for k in record}, to_dict(record),
                 f"{folder}: holds another victim ({{diff}}); choose a new folder")
    return old if (folder / "model.safetensors").is_file() else None


def make_trained_victim(folder, data: PolyDataConfig, train: PolyTrainConfig, data_dir=None, log=print) -> dict:
    """A two-layer polynomial network trained by normalised GD on ``data``; a folder already holding this very
    victim is kept (``reused`` in the result)."""
    work = float(train.steps + 10) * data.n * train.width * data.d
    if work > MAX_TRAIN_WORK:
        raise TrainreconError(f"train-poly: steps x n x width x d = {work:.2g} multiply-adds (limit {MAX_TRAIN_WORK:.0e}); "
                              "use fewer steps, samples, neurons or dimensions")
    require_memory(8 * 4 * data.n * train.width * (data.d + 1), f"training on n = {data.n} samples")
    folder = Path(folder)
    record = {"trainer_kind": "polynomial", "trainer": to_dict(train), "data": to_dict(data)}
    old = _existing(folder, record, "train-poly")
    if old is not None:
        return {**(old.get("final") or {}), "reused": True}
    with OutputFolder(folder, "train-poly", VICTIM_FILES):
        old = _existing(folder, record, "train-poly")  # again under the lock
        if old is not None:
            return {**(old.get("final") or {}), "reused": True}
        X, y = make_poly_data(data, data_dir)
        a, W, summary = train_polynomial(train, torch.as_tensor(X), torch.as_tensor(y), log=log)
        info = {**record, "rescaled_to_unit_margin": summary["min_margin"] > 0, "final": summary}
        save_poly_victim(folder, a.numpy(), W.numpy(), train.alpha, info)
    return summary


def make_exact_victim(folder, data: PolyDataConfig, alpha: int, seed: int = 0, data_dir=None) -> dict:
    """An exact KKT point whose samples lie on the directions of ``data`` (see :mod:`.exact_kkt`); its size is
    checked before any work, and a folder already holding this very victim is kept (``reused``)."""
    check_size(data.n, data.d, alpha)
    folder = Path(folder)
    record = {"trainer_kind": "exact_kkt", "alpha": alpha, "construction_seed": seed, "data": to_dict(data)}
    old = _existing(folder, record, "exact-kkt")
    if old is not None:
        return {"n_neurons": int((old.get("final") or {}).get("n_neurons", 0)), "reused": True}
    with OutputFolder(folder, "exact-kkt", VICTIM_FILES):
        old = _existing(folder, record, "exact-kkt")  # again under the lock
        if old is not None:
            return {"n_neurons": int((old.get("final") or {}).get("n_neurons", 0)), "reused": True}
        V, y = make_poly_data(data, data_dir)
        p = build_exact_kkt(V, y, alpha, seed=seed)
        info = {**record, "rescaled_to_unit_margin": True, "final": {"n_neurons": int(len(p.a))}}
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
        alpha = info.get("alpha", getattr(victim.spec, "degree", None))  # the degree it was built for (model.json's)
        p = build_exact_kkt(X, y, int(alpha), seed=int(info.get("construction_seed", 0)))
        return p.X, p.y
    return X, y
