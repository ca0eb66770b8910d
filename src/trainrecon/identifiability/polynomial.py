"""Inputs for two-layer polynomial victims (:mod:`trainrecon.training.polynomial` trains them): points on the
sphere, Gaussian points, or real images reduced by PCA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config import check_numbers
from ..data.tasks import default_data_dir, load_split
from ..errors import TrainreconError
from ..runtime import require_memory


@dataclass
class PolyDataConfig:
    """Inputs for polynomial victims: points on the unit sphere or Gaussian in R^d, or real images
    (sklearn digits / MNIST) reduced to d dimensions by PCA and scaled to unit mean norm.  Labels are
    balanced +-1 (alternating) for synthetic data and even/odd for digits."""

    kind: Literal["sphere", "gaussian", "digits", "mnist"] = "sphere"
    n: int = 3
    d: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "data")
        if self.n <= 0 or self.d <= 0:
            raise TrainreconError(f"data.n and data.d must be positive, got n={self.n}, d={self.d}")
        require_memory(8 * 4 * self.n * self.d, f"data with n = {self.n} samples in d = {self.d} dimensions")


def make_poly_data(cfg: PolyDataConfig, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, d), y (n,)) as float64 / +-1."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.kind in ("sphere", "gaussian"):
        X = rng.normal(size=(cfg.n, cfg.d))
        if cfg.kind == "sphere":
            X /= np.linalg.norm(X, axis=1, keepdims=True)
        y = np.where(np.arange(cfg.n) % 2 == 0, 1.0, -1.0)
        return X, y
    imgs, labels = load_split(cfg.kind, "train", default_data_dir() if data_dir is None else data_dir)
    pool = imgs[:2000].reshape(min(2000, len(imgs)), -1)
    pool = pool - pool.mean(0)
    _, _, Vt = np.linalg.svd(pool, full_matrices=False)
    if cfg.d > Vt.shape[0]:
        raise TrainreconError(f"data.d: {cfg.kind} has only {Vt.shape[0]} principal directions in the pool")
    Z = pool @ Vt[: cfg.d].T
    Z /= np.linalg.norm(Z, axis=1).mean()
    idx = rng.choice(len(Z), size=cfg.n, replace=False)
    return Z[idx], np.where(labels[:2000][idx] % 2 == 0, -1.0, 1.0)
