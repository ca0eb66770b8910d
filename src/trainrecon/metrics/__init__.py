"""Evaluation: SSIM variants, matchings, and the scoring protocol with its false-positive control."""

from .evaluate import PROTOCOLS, evaluate, headline
from .matching import extraction_score, greedy_one_to_one, hungarian, ncc_dist, nearest
from .ssim import ssim_classic, ssim_paper

__all__ = [
    "PROTOCOLS",
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
