"""What an attack returns: the candidates it reconstructed and everything it knows about how it got there.

A :class:`Reconstruction` lives in memory; a run folder (:class:`trainrecon.runfolder.RunFolder`) writes it as
``candidates.npz`` (:meth:`Reconstruction.to_arrays`), ``loss.json`` (``history`` and ``stats``), the
refinements' files (``artifacts``) and ``candidates.png`` (:meth:`Reconstruction.images`).  It depends on no
other part of trainrecon, so the attack that makes it, the folder that stores it and the scoring that reads it
(:func:`trainrecon.score` takes one directly) all meet here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Reconstruction:
    """An attack's result, in memory.

    ``x``: the candidates (m, C, H, W), float64 on the CPU, in the victim's **centred** input space (the space
    its weights see; :meth:`images` adds the mean back); ``multipliers``: (m,) or (m, K), float64; ``labels``:
    the candidates' fixed labels where the method has them (else None); ``ids`` / ``parents``: each candidate's
    id and its parent's (-1 for a candidate drawn at initialisation; a split's children name their parent);
    ``mean``: the victim's input mean (C, H, W), float64; ``method``: the method's registered name; ``config``:
    the run's record as config.json holds it (method, m, every attack field, the victim's fingerprint, what the
    attacker was given, the normalisation and what the method adapted); ``history``: the logged loss parts, one
    dict per logged iteration; ``stats``: the run's summary as loss.json holds it beside the history
    (``iterations_done``, ``finished``, ``stopped_by_max_seconds``, ``stopped_by_monitor``, ``seconds``,
    ``final_loss``, ``refit_residual``, ``normalisation``, ``second_order``, ``collapse``, ``splitting``,
    ``merging``, ...); ``artifacts``: the refinements' own records by file name (``splits.json`` -> its JSON,
    ``split_images.npz`` -> its arrays, ``merges.json``)."""

    x: torch.Tensor
    multipliers: torch.Tensor
    labels: torch.Tensor | None
    ids: torch.Tensor
    parents: torch.Tensor
    mean: torch.Tensor
    method: str
    config: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def m(self) -> int:
        """The number of candidates."""
        return int(self.x.shape[0])

    @property
    def finished(self) -> bool:
        """Whether the run reached its last iteration (or spent its wall-clock budget); False when it was
        stopped early (``stop_after``, a sweep's pruning)."""
        return bool(self.stats.get("finished"))

    @property
    def victim(self) -> str | None:
        """The fingerprint of the victim the candidates were reconstructed from."""
        return self.config.get("victim")

    def images(self) -> torch.Tensor:
        """The candidates as images, x + the victim's input mean (m, C, H, W): what pictures show (not scaled
        to [0, 1]; :func:`trainrecon.pictures.candidate_grid` min-max scales each one)."""
        return self.x + self.mean

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``candidates.npz``: ``x`` (m, C, H, W) float64 centred, ``multipliers``, ``ids``,
        ``parents`` and, where the method fixes labels, ``y``."""
        arrays = {"x": self.x.numpy(), "multipliers": self.multipliers.numpy(), "ids": self.ids.numpy(),
                  "parents": self.parents.numpy()}
        if self.labels is not None:
            arrays["y"] = self.labels.numpy()
        return arrays


__all__ = ["Reconstruction"]
