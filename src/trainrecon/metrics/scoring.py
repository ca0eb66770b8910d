"""Scoring in memory: candidates, training images and held-out images in, a typed :class:`Score` out.

:func:`score` is the library's front door to evaluation (``trainrecon.score``); the ``evaluate`` command
(:func:`trainrecon.pipeline.evaluate_run`) is a client that reads the arrays from files and writes the result's
``metrics`` as metrics.json.  What is computed is :func:`.evaluate.evaluate`: the honest headline with its
negative, held-out and positive controls (:mod:`.headline`), the per-image exposure and its ROC
(:mod:`.exposure`) and the field's protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import TrainreconError
from ..reconstruction import Reconstruction
from .protocols import evaluate, headline
from .exposure import Exposure
from .headline import HeadlineRule, headline_line


@dataclass(frozen=True)
class Score:
    """The result of :func:`score`.

    ``headline``: metrics.json's ``headline`` (the rule, ``recovered``, ``recovered_indices``, ``controls``,
    ``informative``); ``exposure``: every training image's exposure and the ROC of training against held-out
    images (None without held-out images); ``protocols``: the field's protocols, each with its controls;
    ``metrics``: all of it as metrics.json holds it; ``pairs``: per protocol the matched images and per-set
    similarities (for pictures)."""

    headline: dict[str, Any]
    exposure: Exposure | None
    protocols: dict[str, Any]
    metrics: dict[str, Any]
    pairs: dict[str, Any]

    @property
    def recovered(self) -> int | None:
        """Training images recovered under the headline's rule (None: no claim possible)."""
        return self.headline.get("recovered")

    @property
    def controls(self) -> dict[str, int]:
        """Each control's count under the same rule: ``heldout``, every ``null_*`` (and ``shadow``), ``positive``."""
        return dict(self.headline.get("controls", {}))

    @property
    def paper_measures(self) -> list[dict[str, Any]]:
        """The papers' continuous measures (mean SSIM of a one-to-one matching, all and best 10; mean per-pixel L2
        after the optimal permutation; nearest-neighbour SSIM count), each beside its held-out control, the nearest
        null set and the true images (:func:`.evaluate.paper_measures`)."""
        return list(self.metrics.get("paper_measures") or [])

    @property
    def informative(self) -> bool:
        """Whether the positive control beats every negative control by at least n / 2."""
        return bool(self.headline.get("informative"))

    def line(self) -> str:
        """The headline as the CLI prints it."""
        return headline_line(self.headline)

    def summary(self) -> str:
        """The field protocol's line and the headline, as ``trainrecon evaluate`` prints them."""
        return headline(self.metrics)


#: the largest absolute value read as a pixel (centred images are of order 1; a 0-255 image passes)
MAX_PIXEL = 1e6


def checked_images(x: Any, what: str, where: str = "score", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The one image validator, for arrays and tensors in memory and for what a file held: ``x`` as float64
    (N >= 1, C, H, W), real numbers only (complex, bool, text and object arrays are refused, never cast), flat
    rows (N, C*H*W) reshaped to ``shape``, of ``shape`` where given, finite, and |x| <= :data:`MAX_PIXEL` (larger
    squares overflow the scores).  Refused in one line naming ``where`` (the caller or the file) and ``what``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().resolve_conj().resolve_neg().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):
        raise TrainreconError(f"{where}: {what} is not numeric") from None
    if a.dtype.kind not in "fiu" or a.dtype == bool:
        raise TrainreconError(f"{where}: {what} of dtype {a.dtype}; images must be real numbers "
                              "(complex, bool and text arrays are refused, not converted)")
    a = a.astype(np.float64, copy=False)
    if shape is not None and a.ndim == 2 and a.shape[1] == int(np.prod(shape)):
        a = a.reshape(-1, *shape)
    if a.ndim != 4 or a.shape[0] == 0:
        want = "N >= 1, C, H, W" if shape is None else f"N >= 1, {', '.join(map(str, shape))}"
        raise TrainreconError(f"{where}: {what} of shape {a.shape}; expected images ({want})")
    if shape is not None and a.shape[1:] != tuple(shape):
        raise TrainreconError(f"{where}: {what} of shape {a.shape[1:]}, but the victim takes {tuple(shape)}")
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).sum())
        raise TrainreconError(f"{where}: {bad} of {len(a)} {what} hold NaN or inf")
    if np.abs(a).max() > MAX_PIXEL:
        raise TrainreconError(f"{where}: {what} hold values up to {np.abs(a).max():.3g}; images are of order 1 "
                              f"(at most {MAX_PIXEL:.0e} is read: larger squares overflow the scores)")
    return a


def score(
    candidates: Any,
    truth: Any,
    heldout: Any = None,
    mean: Any = None,
    labels: Any = None,
    nulls: dict[str, Any] | None = None,
    rule: HeadlineRule = HeadlineRule(),
    train_indices: list[int] | np.ndarray | None = None,
    runs_unioned: int = 1,
) -> Score:
    """Score centred ``candidates`` (m, C, H, W: the attack's output, in the victim's input space) against the
    training images ``truth`` (n, C, H, W, raw in [0, 1]), with ``heldout`` raw images the victim never saw
    (the first n are the held-out control, all of them the headline's pool; several times n make the rule
    strict; without them no claim is made).  Arrays or tensors; ``candidates`` may also be the
    :class:`~trainrecon.reconstruction.Reconstruction` an attack returned (its ``x``, and its victim's mean).

    ``mean``: the victim's centring (input mean, broadcastable to (C, H, W)); default a Reconstruction's own
    mean, else the training images' per-pixel mean.  ``labels``: training labels (per-class counts).  ``nulls``:
    further named negative controls in centred space (a shadow victim's candidates).  ``train_indices``: the
    training images' indices in their dataset split, for the per-image table.  Returns a :class:`Score`.
    """
    if isinstance(candidates, Reconstruction):
        mean = candidates.mean if mean is None else mean
        candidates = candidates.x
    cand = checked_images(candidates, "candidates")
    tr = checked_images(truth, "training images")
    ho = None if heldout is None else checked_images(heldout, "held-out images")
    if cand.shape[1:] != tr.shape[1:] or (ho is not None and ho.shape[1:] != tr.shape[1:]):
        raise TrainreconError(f"score: image shapes differ: candidates {cand.shape[1:]}, training images "
                              f"{tr.shape[1:]}" + ("" if ho is None else f", held-out images {ho.shape[1:]}"))
    if isinstance(mean, torch.Tensor):
        mean = mean.detach().cpu().numpy()
    mu = tr.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    try:
        mu = np.array(np.broadcast_to(mu, tr.shape[1:]))
    except ValueError:
        raise TrainreconError(f"score: mean of shape {mu.shape} does not fit images of shape {tr.shape[1:]}") from None
    extra = {k: checked_images(v, f"null set {k!r}") for k, v in (nulls or {}).items()}
    for k, v in extra.items():
        if v.shape[1:] != tr.shape[1:]:
            raise TrainreconError(f"score: null set {k!r} has images of shape {v.shape[1:]}, not {tr.shape[1:]}")
    metrics, pairs = evaluate(cand, tr, ho, mu, labels, runs_unioned=runs_unioned, extra_nulls=extra, rule=rule,
                              train_indices=train_indices)
    return Score(metrics["headline"], pairs["exposure"], metrics["protocols"], metrics, pairs)
