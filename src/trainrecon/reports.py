"""Pictures of what was recovered: pair grids sorted by SSIM, candidate sheets, Loo's L2 curve."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _to_hwc(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0, 1)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def pair_grid(train: np.ndarray, matched: np.ndarray, ssim: np.ndarray, path: str | Path, title: str, max_pairs: int = 100) -> None:
    """Training images beside their matched reconstructions, best SSIM first (SSIM printed under each pair)."""
    order = np.argsort(-np.nan_to_num(ssim, nan=-1))[:max_pairs]
    cols = min(10, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.0 * rows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    gray = train.shape[1] == 1
    for k, i in enumerate(order):
        a, b = _to_hwc(train[i]), _to_hwc(matched[i])
        sep = np.ones((a.shape[0], 1) + a.shape[2:])
        ax = axes.ravel()[k]
        ax.imshow(np.concatenate([a, sep, b], axis=1), cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{ssim[i]:.2f}", fontsize=7, pad=1, color="green" if ssim[i] > 0.4 else "black")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def candidate_grid(x_centred: np.ndarray, mean: np.ndarray, path: str | Path, max_images: int = 100) -> None:
    """Candidates (mean added back, min-max scaled per image), no ground truth needed."""
    x = x_centred[:max_images] + mean
    flat = x.reshape(len(x), -1)
    lo, hi = flat.min(1), flat.max(1)
    x = (x - lo[:, None, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None, None]
    cols = min(20, len(x))
    rows = math.ceil(len(x) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols, 0.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k in range(len(x)):
        axes.ravel()[k].imshow(_to_hwc(x[k]), cmap="gray" if x.shape[1] == 1 else None, vmin=0, vmax=1)
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def l2_curve_plot(curve: list[float], control: list[float] | None, path: str | Path) -> None:
    """Loo's reconstruction curve: greedy one-to-one L2 distances, training set vs held-out control."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(np.arange(1, len(curve) + 1), curve, label="training set")
    if control is not None:
        ax.plot(np.arange(1, len(control) + 1), control, label="held-out control", linestyle="--")
    ax.set_xlabel("matched pair (greedy order)")
    ax.set_ylabel("L2 distance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
