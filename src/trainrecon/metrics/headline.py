"""The honest headline: training images recovered one to one, each nearer its candidate than any unseen image.

For candidates C (centred, m of them), training images T (n), a held-out set H of images the victim never saw
(|H| several times n; its first n form the held-out control), and the null candidate sets N_1..N_k:

1. **Preprocessing** (one, stated): a candidate is shown as ``minmax(c + mean)``, per image (Haim's ``scale``).
2. **Matching**: one to one, Hungarian on Haim's NCC distance between T - mean and C (``hungarian`` protocol).
3. **Similarity** s(a, b): classic 11x11 SSIM where the window fits (MNIST, CIFAR), else the paper's window-3
   SSIM (8x8 digits).
4. Training image t_i with matched candidate c_i is **recovered** iff

       s(t_i, c_i) > tau,   s(t_i, c_i) > max_{h in H} s(h, c_i),   s(t_i, c_i) > max_k max_{c in N_k} s(t_i, c):

   the candidate clears the threshold, looks more like t_i than like any image the victim never saw (a
   candidate that is merely "a typical digit" mostly fails: among several times n unseen digits one is as
   close; the best of m typical candidates beats N unseen images for up to about m / (m + N) of the training
   images by luck, which ``null_typical`` reports and the held-out control sees too), and
   beats the best that every null candidate set reaches for t_i.

Each control is scored by the same rule (its third clause dropped, since the nulls are what it compares to):

* **held-out control**: the rule with the two sets' roles swapped.  The attack's candidates are matched to the
  first n held-out images C (the control), and each is compared with every image outside C: the training
  images and the rest of H.  So the headline's training images face C and the rest of H, the control faces T
  and the rest of H: pools of one size (where |H| >= n).  For candidates that know nothing of which of T and C
  trained the victim, and a given centring mean, the two counts (without the null clause) have one
  distribution: swapping T and C swaps them exactly.  A faithful copy of a training image does not pass for
  its unseen near-twin, since the copy is nearer the training image it copies.
* **negative controls** (built from what the attacker has): ``null_mean`` (m copies of the input mean: zeros in
  centred space), ``null_noise`` (m Gaussian candidates at the attack's scale, seeded), ``null_heldout_mean``
  (m copies of another subset's mean: H's), ``null_typical`` (typical images: up to m images of H outside the
  control, each compared with H minus them, :func:`typical_images`; a set of digit-like guesses that needs no
  attack, where the three before are blurred or noise), and any named sets passed in (a shadow victim's
  candidates).
* **positive control**: the true training images as candidates, what a perfect attack scores.

``informative`` is true when the positive control beats every negative control by at least n/2; an
uninformative rule reports its counts but makes no claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import check_numbers
from ..errors import TrainreconError
from .matching import hungarian, ncc_dist, uses_half_resolution
from .ssim import ssim_cross, ssim_kind

RULE_TEXT = ("one-to-one (Hungarian on NCC) match; a training image counts when its candidate's SSIM with it "
             "exceeds the threshold, the candidate's SSIM with every held-out image, and the best SSIM any null "
             "candidate set reaches for that image")
PREPROCESSING = "candidate + input mean, min-max scaled per image to [0, 1]"


@dataclass(frozen=True)
class HeadlineRule:
    """The headline's threshold on the similarity (see the module docstring) and the noise null's seed."""

    threshold: float = 0.5
    null_seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "headline")  # finite threshold, seed in [0, 2^63)
        if not -1.0 <= self.threshold < 1.0:
            raise TrainreconError(f"headline.threshold: must be a finite number in [-1, 1), got {self.threshold}")


def minmax_per_image(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def shown(cand: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """What a centred candidate looks like to every protocol: minmax(c + mean) per image."""
    return minmax_per_image(cand + mean)


def one_to_one(reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor) -> np.ndarray:
    """Candidate index for each reference image (raw, in [0, 1]) by Hungarian matching on the NCC distance
    between reference - mean and the centred candidates; -1 where m < n leaves a row unmatched."""
    return hungarian(ncc_dist(reference - mean, cand, half_resolution=uses_half_resolution(reference.shape)))


def typical_images(heldout: torch.Tensor, n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, its pool): the typical-images null's raw images D, min(m, (|H| - n) // 2) images of the held-out pool
    H outside the held-out control (its first n), drawn by ``seed``, and the images each is compared with, H
    minus D (D's own images would otherwise stop every one of them).  That pool is smaller than the attack's
    (all of H), so D passes for a few more training images by luck than the attack's candidates could."""
    rest = heldout[n:]
    k = min(m, len(rest) // 2)
    pick = torch.zeros(len(rest), dtype=torch.bool)
    pick[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[:k]] = True
    return rest[pick], torch.cat([heldout[:n], rest[~pick]])


def null_sets(cand: torch.Tensor, heldout: torch.Tensor | None, mean: torch.Tensor, seed: int,
              n: int | None = None) -> dict[str, torch.Tensor]:
    """Negative-control candidate sets of (at most) the attack's size m, in centred space: the input mean (zeros),
    noise at the candidates' scale, and with held-out images another subset's mean and, given the number of
    training images n, typical images (:func:`typical_images`, where H holds more than n + 1)."""
    m = cand.shape[0]
    g = torch.Generator().manual_seed(seed)
    scale = float(cand.std()) if cand.numel() > 1 else 1.0
    out = {
        "null_mean": torch.zeros_like(cand),
        "null_noise": torch.randn(cand.shape, generator=g, dtype=torch.float64) * (scale if np.isfinite(scale) and scale > 0 else 1.0),
    }
    if heldout is not None and len(heldout):
        out["null_heldout_mean"] = (heldout.mean(dim=0, keepdim=True) - mean).expand(m, *cand.shape[1:]).clone()
        if n is not None:
            typical = typical_images(heldout, n, m, seed)[0]
            if len(typical):
                out["null_typical"] = typical - mean
    return out


def best_similarity(reference: torch.Tensor, cand_shown: torch.Tensor, kind: str) -> torch.Tensor:
    """For each reference image the highest similarity any (distinct) candidate reaches."""
    uniq = torch.unique(cand_shown.reshape(cand_shown.shape[0], -1), dim=0).reshape(-1, *cand_shown.shape[1:])
    return ssim_cross(reference, uniq, kind).max(dim=1).values


def recovered_mask(
    reference: torch.Tensor, cand: torch.Tensor, mean: torch.Tensor, pool: torch.Tensor, kind: str,
    threshold: float, null_best: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The rule of the module docstring for one candidate set against ``reference``, each matched candidate
    compared with every image of ``pool`` (the images outside the reference set: for the training images, H;
    for the held-out control, :func:`heldout_control`'s pool).  Returns the matched index, the similarity to the
    matched reference, the best pool similarity of that candidate (``heldout_best``), and the boolean mask.
    """
    idx = one_to_one(reference, cand, mean)
    ok = idx >= 0
    sim = np.full(len(idx), np.nan)
    pool_best = np.full(len(idx), np.nan)
    if ok.any():
        rows = np.flatnonzero(ok)
        matched = shown(cand[torch.as_tensor(idx[rows])], mean)
        sim[rows] = ssim_cross(reference[torch.as_tensor(rows)], matched, kind).diagonal().numpy()
        pool_best[rows] = ssim_cross(matched, pool, kind).max(dim=1).values.numpy() if pool.shape[0] else -np.inf
    with np.errstate(invalid="ignore"):
        mask = ok & (sim > threshold) & (sim > pool_best)
        if null_best is not None:
            mask &= sim > null_best.numpy()
    return {"index": idx, "similarity": sim, "heldout_best": pool_best, "recovered": mask}


def heldout_control(train: torch.Tensor, heldout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, its pool): the held-out control C, the first n = len(train) held-out images (all of them when there are
    fewer), and the images each is compared with, T and H minus C (module docstring: the roles swapped)."""
    n = train.shape[0]
    dtype = torch.promote_types(train.dtype, heldout.dtype)
    return heldout[:n], torch.cat([train.to(dtype), heldout[n:].to(dtype)])


def headline_counts(
    cand: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor | None, mean: torch.Tensor,
    nulls: dict[str, torch.Tensor], rule: HeadlineRule = HeadlineRule(),
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``headline`` object of metrics.json, per-set similarities (for the ECDF picture) and the per-image
    details of the attack's candidates (``train``: :func:`recovered_mask` on the training images with
    ``null_best``, the best similarity any null candidate reaches for each; ``heldout``: the same on the
    held-out control, each compared with T and H minus C); the details are empty without held-out images.

    ``heldout``: raw images the victim never saw (at least 2 for a claim; several times n makes clause 2
    strict); the first n are the held-out control C (:func:`heldout_control`).  ``nulls``: named centred
    candidate sets scored as negative controls (:func:`null_sets` and any others, such as a shadow victim's
    candidates).
    """
    n = train.shape[0]
    kind = ssim_kind(train.shape)
    head: dict[str, Any] = {
        "recovered": None, "n": int(n), "m": int(cand.shape[0]), "rule": RULE_TEXT, "preprocessing": PREPROCESSING,
        "similarity": "classic SSIM (11x11, sigma 1.5)" if kind == "classic" else "paper SSIM (window 3, sigma 1.5)",
        "threshold": rule.threshold, "heldout_pool": 0 if heldout is None else int(heldout.shape[0]),
        "controls": {}, "informative": False,
    }
    if heldout is None or heldout.shape[0] < 2:
        head["reason"] = ("no claim: the rule needs held-out images (images the victim never saw, ideally several "
                          f"times n = {n}), got {head['heldout_pool']}; pass --heldout")
        return head, {}, {}
    sims: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    null_best = torch.full((n,), -torch.inf, dtype=torch.float64)
    for name, c in nulls.items():
        pool = heldout
        if name == "null_typical":  # compared with the pool minus its own images: the ones :func:`null_sets` drew
            typical, pool = typical_images(heldout, n, c.shape[0], rule.null_seed)
            if typical.shape != c.shape or not torch.allclose(typical - mean, c, rtol=0, atol=1e-12):
                raise ValueError("null_typical: not the typical images of this held-out pool and null seed "
                                 "(null_sets(..., seed=rule.null_seed, n=len(train)) draws them)")
        r = recovered_mask(train, c, mean, pool, kind, rule.threshold)
        counts[name] = int(r["recovered"].sum())
        sims[name] = r["similarity"]
        best = best_similarity(train, shown(c, mean), kind)
        null_best = torch.maximum(null_best, best)
    control, control_pool = heldout_control(train, heldout)
    r_ho = recovered_mask(control, cand, mean, control_pool, kind, rule.threshold)
    counts["heldout"] = int(r_ho["recovered"].sum())
    sims["heldout"] = r_ho["similarity"]
    truth = train - mean
    r_pos = recovered_mask(train, truth, mean, heldout, kind, rule.threshold)
    sims["positive"] = r_pos["similarity"]
    r = recovered_mask(train, cand, mean, heldout, kind, rule.threshold, null_best=null_best if nulls else None)
    sims["attack"] = r["similarity"]
    negatives = {k: v for k, v in counts.items()}
    positive = int(r_pos["recovered"].sum())
    worst = max(negatives.values())
    head.update({
        "recovered": int(r["recovered"].sum()),
        "recovered_indices": np.flatnonzero(r["recovered"]).tolist(),
        "controls": {**negatives, "positive": positive},
        "negative_controls_max": worst,
        "informative": bool(positive - worst >= n / 2),
        "informative_rule": "positive control - max(negative controls) >= n / 2",
    })
    return head, sims, {"train": {**r, "null_best": null_best.numpy()}, "heldout": r_ho}


def headline_line(head: dict[str, Any]) -> str:
    """The CLI's last line."""
    if head.get("recovered") is None:
        return f"headline: {head.get('reason', 'no claim')}"
    c = head["controls"]
    nulls = ", ".join(f"{k.removeprefix('null_')} {v}" for k, v in c.items() if k not in ("heldout", "positive"))
    verdict = "informative" if head["informative"] else "UNINFORMATIVE for this data: no claim"
    return (f"headline: {head['recovered']} of {head['n']} training images recovered "
            f"({head['similarity'].split(' (')[0]} > {head['threshold']}, one to one, nearer than all "
            f"{head['heldout_pool']} held-out images); controls: held-out {c['heldout']}, nulls [{nulls}], "
            f"true images {c['positive']}; protocol {verdict}")
