"""Reconstruction of Buzaglo et al., NeurIPS 2023 ("Deconstructing Data Reconstruction: Multiclass, Weight
Decay and General Losses"), reference code gonbuzaglo/decoreco.

**Multiclass** (cross-entropy victims, K outputs).  One multiplier per candidate times its margin to the
runner-up class, candidate labels fixed in contiguous class blocks (block c of size m/K has label c):

    L = sum_p || theta_p - (1/m0) sum_i grad_{theta_p} [ lambda_i ( Phi~_{y_i}(x_i) - max_{j != y_i} Phi~_j(x_i) ) ] ||^2
        + box(x) + 5 sum_i (lambda_min - lambda_i)_+^2

(the max is taken on forward values; its gradient reaches the argmax class only).

**Regression / weight decay** (MSE or Huber victims with weight decay; the stationarity of the regularised
loss): theta = sum_i lambda_i grad Phi(x_i) with free multipliers, no labels and no lambda_min penalty:

    L = sum_p || theta_p - (1/m0) sum_i lambda_i grad_{theta_p} Phi~(x_i) ||^2 + box(x),   lambda ~ N(0, 1).

Phi~, the box prior (on the centred candidates, or in pixel space with ``box_space = "pixel"``), the
initialisation and the two SGD-with-momentum optimisers are Haim's (:mod:`.haim`), and so are the defaults
(one set for every scale, through the attacker-side normalisation).  The reference runs used, for victims
trained 1e6 epochs by GD: multiclass ``reconstructions/multiclass/sweep.txt`` (init 3.6e-4, lr 2.4e-4,
lambda lr 0.95, lambda_min 0.040, alpha 326); regression ``reconstruct_regression_run1_args.txt`` (init 0.0197,
lr 0.95, alpha 90, lambda lr 1e-4); pass them in a config file to reproduce those runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TrainreconError
from ..models.stationarity import KKT, WEIGHT_DECAY
from .haim import KKTConfig, KKTMethod
from .method import Tunable, register


@dataclass
class BuzagloMulticlassConfig(KKTConfig):
    """Buzaglo multiclass attack (the KKT attacks' shared defaults, :class:`.haim.KKTConfig`: SGD at lr 1 on x,
    float64; the per-candidate Adam that Haim's attack takes by default recovered no more here, bench/RESULTS.md);
    ``m = 0`` means 2 n, and m must be a multiple of the number of classes."""


@dataclass
class BuzagloRegressionConfig(KKTConfig):
    """Buzaglo regression / weight-decay attack: free multipliers initialised N(0, 1), no lambda_min term; the
    KKT attacks' shared defaults otherwise (:class:`.haim.KKTConfig`)."""

    lambda_penalty: float = 0.0


def block_labels(m: int, n_classes: int) -> np.ndarray:
    """Contiguous class blocks: candidate i has label i // (m / K)."""
    if m % n_classes:
        raise TrainreconError(f"attack.m: {m} candidates do not split into {n_classes} equal class blocks")
    return np.repeat(np.arange(n_classes), m // n_classes)


@register
class BuzagloMulticlass(KKTMethod):
    """Runner-up margin of K-class victims, labels in class blocks (the KKT form, multiclass)."""

    name = "buzaglo-multiclass"
    Config = BuzagloMulticlassConfig
    form = KKT
    search_space = {**KKTMethod.search_space, "lr_lambda": Tunable("relative", 0.1, 10.0)}

    def check(self) -> None:
        if self.payload.spec.n_outputs < 2:
            raise TrainreconError("the Buzaglo multiclass attack needs a victim with several outputs; use --method "
                                  "haim or buzaglo-regression for a one-output victim")

    def labels(self, m: int) -> torch.Tensor:
        return torch.as_tensor(block_labels(m, self.payload.spec.n_outputs))


@register
class BuzagloRegression(KKTMethod):
    """Weight-decay stationarity of one-output victims: free multipliers ~ N(0, 1), no labels."""

    name = "buzaglo-regression"
    Config = BuzagloRegressionConfig
    form = WEIGHT_DECAY
    search_space = {k: v for k, v in KKTMethod.search_space.items() if k != "lambda_min"}  # no lambda_min term
    search_space["lr_lambda"] = Tunable("relative", 0.1, 10.0)

    def check(self) -> None:
        if self.payload.spec.n_outputs != 1:
            raise TrainreconError(f"the Buzaglo regression attack needs a one-output victim, this one has "
                                  f"{self.payload.spec.n_outputs}")

    def multipliers(self, m: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(m, generator=g, dtype=torch.float64)
