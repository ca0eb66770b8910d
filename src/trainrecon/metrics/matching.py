"""Distances between image sets and the matchings the reference papers use.

* NCC distance (Haim ``evaluations.py``): images normalised per image and channel to zero mean and unit
  *unbiased* std, then squared L2; for 32x32 colour the images are first bicubic-downsampled by 1/2
  (``align_corners=False``), the 'ncc2' search of ``analysis.py``.
* Haim nearest neighbour: each training image takes its nearest candidate (non-unique).
* Hungarian: one-to-one assignment minimising the summed distance (scipy ``linear_sum_assignment``).
* Loo greedy: repeatedly take the globally closest (train, candidate) pair by Euclidean L2 and remove both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def normalize_batch(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per image and channel, unbiased std."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True, unbiased=True)
    return (x - mean) / std.clamp_min(1e-12)


def downsample_half(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=False)


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows of flattened a (n, ...) and b (m, ...): (n, m)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def ncc_dist(a: torch.Tensor, b: torch.Tensor, half_resolution: bool = False, div_dim: bool = False) -> torch.Tensor:
    """Haim's NCC distance (n, m) between image sets a (n, C, H, W) and b (m, C, H, W): squared L2 of the images
    normalised per image and channel (:func:`normalize_batch`), optionally at half resolution, optionally
    divided by the number of pixels (``div_dim``)."""
    if half_resolution:
        a, b = downsample_half(a), downsample_half(b)
    d = sq_dist(normalize_batch(a), normalize_batch(b))
    return d / a[0].numel() if div_dim else d


def ncc_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The NCC of :func:`ncc_dist` as a similarity (n, m) in [-1, 1]: each image normalised per channel to zero
    mean and unit unbiased std has squared norm C (H W - 1), so 1 - ncc_dist / (2 C (H W - 1)) is the mean over
    channels of the Pearson correlations (for one channel, the cosine of the centred, flattened images)."""
    c, hw = a.shape[1], a[0, 0].numel()
    return 1 - ncc_dist(a, b) / (2 * c * max(hw - 1, 1))


def uses_half_resolution(shape) -> bool:
    """Haim's 'ncc2' search applies to 32x32 colour images (CIFAR); grey images use full resolution."""
    return shape[-3] == 3 and shape[-1] >= 32


def nearest(dist: torch.Tensor) -> np.ndarray:
    """For each row (training image) the column (candidate) at minimum distance."""
    return dist.argmin(dim=1).cpu().numpy()


def hungarian(dist: torch.Tensor) -> np.ndarray:
    """One-to-one assignment of rows to distinct columns (needs m >= n)."""
    rows, cols = linear_sum_assignment(dist.cpu().numpy())
    out = np.full(dist.shape[0], -1, dtype=np.int64)
    out[rows] = cols
    return out


def greedy_one_to_one(dist: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loo's matching: take the global minimum pair, remove its row and column, repeat.

    Returns (candidate index per row, rows in selection order, distances in selection order).
    """
    d = dist.cpu().numpy()
    n, m = d.shape
    order = np.argsort(d, axis=None, kind="stable")
    used_r = np.zeros(n, bool)
    used_c = np.zeros(m, bool)
    match = np.full(n, -1, dtype=np.int64)
    sel_rows, sel_d = [], []
    for flat in order:
        r, c = divmod(int(flat), m)
        if used_r[r] or used_c[c]:
            continue
        used_r[r] = used_c[c] = True
        match[r] = c
        sel_rows.append(r)
        sel_d.append(d[r, c])
        if len(sel_rows) == min(n, m):
            break
    return match, np.array(sel_rows), np.array(sel_d)


def extraction_score(candidates: torch.Tensor, train: torch.Tensor, metric: str) -> float:
    """Haim's sweep metric: each candidate -> nearest training image, keep the best candidate per training
    image, mean of the 10 smallest distances (metric 'ncc' or 'l2', on centred images, no div_dim)."""
    d = ncc_dist(candidates, train) if metric == "ncc" else sq_dist(candidates, train)
    best_train = d.min(dim=1)
    per_train: dict[int, float] = {}
    for c, (val, t) in enumerate(zip(best_train.values.tolist(), best_train.indices.tolist())):
        if t not in per_train or val < per_train[t]:
            per_train[t] = val
    vals = sorted(per_train.values())[:10]
    return float(np.mean(vals)) if vals else float("nan")
