"""Evaluation: SSIM variants, matchings, the scoring protocol with its false-positive control, per-image exposure
and its ROC, and :func:`score`, the in-memory entry point."""

from .protocols import PROTOCOLS, evaluate, headline
from .exposure import Exposure, ImageExposure, RocSummary, exposure_of, roc_summary
from .matching import extraction_score, greedy_one_to_one, hungarian, ncc_dist, nearest
from .scoring import Score, score
from .ssim import ssim_classic, ssim_paper

__all__ = [
    "Exposure",
    "ImageExposure",
    "PROTOCOLS",
    "RocSummary",
    "Score",
    "exposure_of",
    "roc_summary",
    "score",
    "evaluate",
    "extraction_score",
    "greedy_one_to_one",
    "headline",
    "hungarian",
    "ncc_dist",
    "nearest",
    "ssim_classic",
    "ssim_paper",
]
