"""Per-image exposure and the threshold-free view of the headline: an ROC of training against held-out images.

For the attack's candidates and the headline's one-to-one matching (:mod:`.headline`), every training image
t_i with matched candidate c_i gets

* ``similarity``: s(t_i, c_i), the headline's similarity (classic SSIM, or the paper's on 8x8 digits);
* ``heldout_best``: max_{h in H} s(h, c_i), the best any image the victim never saw reaches with that candidate;
* ``null_best``: the best similarity any null candidate set reaches for t_i;
* ``exposure`` = similarity - heldout_best, and ``margin_over_nulls`` = similarity - null_best.

An image is exposed when its candidate looks more like it than like anything unseen: exposure > 0 is clause 2 of
the headline's rule.  The same score is computed for the held-out control C (the first n held-out images, which
the victim never saw, matched one to one to the same candidates, each compared with T and H minus C: the roles
swapped, :func:`.headline.heldout_control`), so that for candidates that know nothing of which of T and C trained
the victim the two sets' scores have one distribution (for a given centring mean).  The ROC of
the score with training images as positives and held-out control images as negatives
(:func:`sklearn.metrics.roc_curve`, :func:`~sklearn.metrics.roc_auc_score`) needs no threshold: AUC 0.5 is an
attack that tells training images from unseen ones no better than chance.  TPR at a fixed FPR (1 %, 0.1 %) is
the largest TPR among the curve's points with FPR <= that rate; with N negatives the smallest nonzero FPR is
1/N, so below it the figure is the TPR at FPR 0 (``min_nonzero_fpr`` says where that is).  An image left
unmatched (m < n) scores ``UNMATCHED``, below every matched one (matched scores lie in [-2, 2]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FPR_TARGETS = (0.01, 0.001)
UNMATCHED = -3.0
SCORE_DEFINITION = ("exposure = similarity of an image to its one-to-one candidate - the best similarity of that "
                    "candidate to any held-out image (for a held-out control image: any training image or held-out "
                    "image outside the control)")


@dataclass(frozen=True)
class ImageExposure:
    """One training image: its row in the training set, its index in the dataset split (None when unknown),
    its matched candidate (-1: none) and the quantities of the module docstring."""

    position: int
    train_index: int | None
    candidate: int
    similarity: float
    heldout_best: float
    null_best: float
    margin_over_nulls: float
    exposure: float
    recovered: bool


@dataclass(frozen=True)
class RocSummary:
    """ROC of the exposure score, training images (positives) against held-out control images (negatives)."""

    auc: float | None
    tpr_at_fpr: dict[str, float | None]
    n_positive: int
    n_negative: int
    min_nonzero_fpr: float | None
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]


@dataclass(frozen=True)
class Exposure:
    """Every training image's exposure, most exposed first; the held-out control's scores; their ROC."""

    images: tuple[ImageExposure, ...]
    heldout_scores: tuple[float, ...]
    roc: RocSummary
    definition: str = SCORE_DEFINITION

    def scores(self) -> np.ndarray:
        """The training images' exposure scores in the order of ``images`` (unmatched: ``UNMATCHED``)."""
        return np.array([_ranked(e.exposure) for e in self.images])

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's ``exposure``: numbers only, NaN written as null."""
        return {
            "definition": self.definition,
            "unmatched_score": UNMATCHED,
            "images": [{k: _json(v) for k, v in vars(e).items()} for e in self.images],
            "heldout_scores": [_json(v) for v in self.heldout_scores],
            "roc": {"auc": self.roc.auc, "tpr_at_fpr": dict(self.roc.tpr_at_fpr), "n_positive": self.roc.n_positive,
                    "n_negative": self.roc.n_negative, "min_nonzero_fpr": self.roc.min_nonzero_fpr,
                    "fpr": list(self.roc.fpr), "tpr": list(self.roc.tpr),
                    "positives": "training images", "negatives": "held-out control images"},
        }


def _json(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (int, np.integer)):
        return int(v)
    return v


def _ranked(v: float | None) -> float:
    return UNMATCHED if v is None or not np.isfinite(v) else float(v)


def roc_summary(positive: np.ndarray, negative: np.ndarray, targets: tuple[float, ...] = FPR_TARGETS) -> RocSummary:
    """ROC of scores, ``positive`` against ``negative`` (NaN counts as ``UNMATCHED``); AUC and the TPR at each
    FPR target as the module docstring defines it.  With no positives or no negatives there is no curve."""
    from sklearn.metrics import roc_auc_score, roc_curve  # here: importing scikit-learn costs every command a second

    pos = np.array([_ranked(v) for v in np.asarray(positive, dtype=np.float64)])
    neg = np.array([_ranked(v) for v in np.asarray(negative, dtype=np.float64)])
    if not len(pos) or not len(neg):
        return RocSummary(None, {str(t): None for t in targets}, len(pos), len(neg), None, (), ())
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scores = np.r_[pos, neg]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    tpr_at = {str(t): float(tpr[fpr <= t + 1e-12].max()) for t in targets}
    return RocSummary(float(roc_auc_score(labels, scores)), tpr_at, len(pos), len(neg), 1.0 / len(neg),
                      tuple(float(v) for v in fpr), tuple(float(v) for v in tpr))


def exposure_of(details: dict[str, Any], train_indices: list[int] | np.ndarray | None = None) -> Exposure | None:
    """The :class:`Exposure` of the headline's per-image details (:func:`.headline.headline_counts`' third
    value); None when the headline had no held-out images to compare with."""
    if not details:
        return None
    tr, ho = details["train"], details["heldout"]
    sim, best, null = (np.asarray(tr[k], dtype=np.float64) for k in ("similarity", "heldout_best", "null_best"))
    with np.errstate(invalid="ignore"):
        score, margin = sim - best, sim - null
    idx = None if train_indices is None else [int(i) for i in train_indices]
    if idx is not None and len(idx) != len(sim):
        idx = None
    images = [ImageExposure(int(i), None if idx is None else idx[i], int(tr["index"][i]), float(sim[i]), float(best[i]),
                            float(null[i]), float(margin[i]), float(score[i]), bool(tr["recovered"][i]))
              for i in range(len(sim))]
    images.sort(key=lambda e: (-_ranked(e.exposure), e.position))
    ho_scores = np.asarray(ho["similarity"], dtype=np.float64) - np.asarray(ho["heldout_best"], dtype=np.float64)
    return Exposure(tuple(images), tuple(float(v) for v in ho_scores), roc_summary(score, ho_scores))
