"""Scoring reconstructions against the training set, with a false-positive control.

Only here does the training set enter.  Candidates live in the victim's centred input space; the mean is
added back before SSIM, and each candidate is min-max scaled to [0, 1] per image (Haim ``analysis.py:scale``).

Protocols (each reports SSIM > 0.4 / > 0.5 counts and the mean SSIM of the best 10, with both SSIMs):

* ``haim_nn``: each training image's nearest candidate by NCC (half resolution for 32x32 colour), non-unique.
* ``hungarian``: one-to-one assignment on the same NCC distances.
* ``loo_greedy``: Loo's greedy one-to-one matching by Euclidean L2 of the mean-added, unscaled images; its
  distances in selection order are the reconstruction curve.

Every count is repeated with held-out images of the same task that the victim never saw in place of the
training set: the number of "matches" chance alone produces.  A recovery claim is the count above it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .matching import extraction_score, greedy_one_to_one, hungarian, ncc_dist, nearest, sq_dist, uses_half_resolution
from .ssim import ssim_classic, ssim_paper

THRESHOLDS = (0.4, 0.5)
PROTOCOLS = ("haim_nn", "hungarian", "loo_greedy")


def minmax_per_image(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def match(protocol: str, reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidate index for each reference image (raw [0,1] images; cand centred).  Loo also returns its curve."""
    if protocol == "loo_greedy":
        idx, _, curve = greedy_one_to_one(sq_dist(reference, cand + mean).sqrt())
        return idx, curve
    d = ncc_dist(reference - mean, cand, half_resolution=uses_half_resolution(reference.shape))
    return (nearest(d) if protocol == "haim_nn" else hungarian(d)), None


def summarise(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).all():
        return {"defined": False, "reason": "images smaller than the 11x11 window"}
    top = np.sort(v)[::-1][:10]
    return {
        **{f"count_gt_{t}": int((v > t).sum()) for t in THRESHOLDS},
        "mean_top10": float(top.mean()),
        "mean": float(v.mean()),
    }


def score_pairs(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Paper and classic SSIM of each reference image with its matched candidate (mean added, min-max
    scaled); unmatched rows (idx < 0) score NaN.  Also returns the scaled matched images ('matched')."""
    ok = idx >= 0
    matched = minmax_per_image(cand[torch.as_tensor(np.maximum(idx, 0))] + mean)
    rows = torch.as_tensor(np.flatnonzero(ok))
    out = {"paper": np.full(len(idx), np.nan), "classic": np.full(len(idx), np.nan), "matched": matched.numpy()}
    out["paper"][ok] = ssim_paper(reference[rows], matched[rows]).numpy()
    out["classic"][ok] = ssim_classic(reference[rows], matched[rows]).numpy()
    return out


def evaluate(
    candidates: np.ndarray,
    train: np.ndarray,
    heldout: np.ndarray | None,
    mean: np.ndarray,
    train_labels: np.ndarray | None = None,
    runs_unioned: int = 1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score centred ``candidates`` (m, C, H, W) against raw ``train`` / ``heldout`` images in [0, 1].

    Returns (metrics for metrics.json, per-protocol pairs for pictures).
    """
    cand = torch.as_tensor(np.asarray(candidates, dtype=np.float64))
    tr = torch.as_tensor(np.asarray(train, dtype=np.float64))
    ho = None if heldout is None else torch.as_tensor(np.asarray(heldout, dtype=np.float64))
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(1, *tr.shape[1:])
    if cand.shape[1:] != tr.shape[1:]:
        raise ValueError(f"candidates have image shape {tuple(cand.shape[1:])}, training images {tuple(tr.shape[1:])}")
    gray = tr.shape[1] == 1
    metrics: dict[str, Any] = {
        "n": int(tr.shape[0]),
        "m": int(cand.shape[0]),
        "runs_unioned": int(runs_unioned),
        "n_heldout_control": 0 if ho is None else int(ho.shape[0]),
        "extraction_score": {
            "metric": "l2" if gray else "ncc",
            "value": extraction_score(cand, tr - mu, "l2" if gray else "ncc"),
        },
        "protocols": {},
    }
    pairs: dict[str, Any] = {}
    for proto in PROTOCOLS:
        idx, curve = match(proto, tr, cand, mu)
        s = score_pairs(tr, cand, mu, idx)
        entry: dict[str, Any] = {
            "ssim_paper": summarise(s["paper"]),
            "ssim_classic": summarise(s["classic"]),
            "unique_candidates_used": int(len(np.unique(idx[idx >= 0]))),
            "control": None,
            "above_control": None,
        }
        curve_c = None
        if ho is not None:
            idx_c, curve_c = match(proto, ho, cand, mu)
            s_c = score_pairs(ho, cand, mu, idx_c)
            entry["control"] = {"ssim_paper": summarise(s_c["paper"]), "ssim_classic": summarise(s_c["classic"])}
            entry["above_control"] = {
                f"ssim_paper_gt_{t}": entry["ssim_paper"][f"count_gt_{t}"] - entry["control"]["ssim_paper"][f"count_gt_{t}"]
                for t in THRESHOLDS
            }
        if train_labels is not None:
            labels = np.asarray(train_labels)
            entry["per_class_ssim_paper_gt_0.4"] = {
                str(int(c)): int((s["paper"][labels == c] > 0.4).sum()) for c in np.unique(labels)
            }
        if curve is not None:
            entry["l2_curve"] = [float(v) for v in curve]
            entry["l2_curve_control"] = None if curve_c is None else [float(v) for v in curve_c]
        metrics["protocols"][proto] = entry
        pairs[proto] = {
            "train": tr.numpy(),
            "matched": s["matched"],
            "ssim": s["paper"],
            "index": idx,
        }
    return metrics, pairs


def headline(metrics: dict[str, Any]) -> str:
    """One line for the terminal: the Haim-protocol counts (paper SSIM, window 3; classic SSIM, 11x11)
    against the held-out control."""
    p = metrics["protocols"]["haim_nn"]
    paper, classic = p["ssim_paper"], p["ssim_classic"]
    line = f"n={metrics['n']} m={metrics['m']}: {paper['count_gt_0.4']} training images with SSIM > 0.4"
    if p["control"] is None:
        return line + (f" (no held-out control given: not a recovery claim); best-10 mean SSIM {paper['mean_top10']:.3f}")
    line += (f" (held-out control {p['control']['ssim_paper']['count_gt_0.4']}, above control "
             f"{p['above_control']['ssim_paper_gt_0.4']}); best-10 mean SSIM {paper['mean_top10']:.3f}")
    if classic.get("defined", True):
        line += (f"; classic 11x11 SSIM > 0.4: {classic['count_gt_0.4']} "
                 f"(control {p['control']['ssim_classic']['count_gt_0.4']})")
    return line
