"""KKT reconstruction of Haim et al., NeurIPS 2022 ("Reconstructing Training Data from Trained Neural Networks").

Candidates x_1..x_m with fixed labels (first half -1, second half +1) and free multipliers lambda minimise

    L(x, lambda) = sum_p || theta_p - (1/m) sum_i lambda_i y_i grad_{theta_p} Phi~(theta; x_i) ||^2
                   + sum_{i,pix} [(x - 1)_+^2 + (-1 - x)_+^2]  +  5 sum_i (lambda_min - lambda_i)_+^2,

where Phi~ is the network with the modified ReLU (forward relu, derivative sigmoid(alpha z)), the box is on
the centred candidates, and the sum runs over every parameter tensor (biases included), unnormalised.
Optimiser: SGD with momentum 0.9 on x (lr) and on lambda (lr_lambda, 1e-4 in the reference);
x ~ init_scale N(0, 1), lambda ~ U(0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import TrainreconError
from ..models.mlp import MLPSpec, Surrogate, forward
from ..models.victim import Victim
from .optim import SGDMomentum
from .plan import AttackConfig, AttackPlan, box_penalty
from .weighted_sum import WeightedSumObjective


@dataclass
class HaimConfig(AttackConfig):
    """Hyper-parameters of the Haim KKT attack.

    The objective, the 1/m scaling, the penalties and the optimiser are the reference code's.  The reference
    sweeps init_scale, lr, lambda_min and alpha per run and keeps lr_lambda at 1e-4; the defaults here were
    tuned on trainrecon victims (rescaled to unit minimum margin), where a faster lr_lambda = 0.01 lets the
    multipliers reach their scale.  ``box_space = "centred"`` is the reference's box [-box, box] on the centred
    candidates; ``"pixel"`` (a trainrecon option) keeps x + mean in [0, 1], the valid pixel range, as Loo's
    prior does, which stops candidates from going darker than the background.
    """

    lr_lambda: float = 0.01
    lambda_min: float = 0.1
    lambda_penalty: float = 5.0
    alpha: float = 30.0
    box: float = 1.0
    box_space: Literal["centred", "pixel"] = "centred"
    box_weight: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha <= 0:
            raise TrainreconError(f"attack.alpha: must be positive, got {self.alpha}")
        for name in ("lr_lambda", "lambda_penalty", "box", "box_weight"):
            if getattr(self, name) < 0:
                raise TrainreconError(f"attack.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise TrainreconError(f"attack.momentum: must be in [0, 1), got {self.momentum}")


def haim_labels(m: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Fixed candidate labels: y_i = -1 for i < m/2, +1 otherwise."""
    y = torch.ones(m, dtype=dtype, device=device)
    y[: m // 2] = -1
    return y


def kkt_prior(cfg: "HaimConfig", mean: torch.Tensor | None = None):
    """Haim / Buzaglo prior: box [-box, box] on the centred x (or [-mean, 1 - mean] with box_space 'pixel'),
    weight box_weight, + lambda_penalty (lambda_min - lambda)_+^2."""
    if cfg.box_space == "pixel":
        if mean is None:
            raise TrainreconError("attack.box_space: 'pixel' needs the victim's input mean")
        lo, hi = -mean.reshape(1, -1), 1 - mean.reshape(1, -1)
    else:
        lo, hi = -cfg.box, cfg.box

    def prior(X, lam):
        reg = cfg.box_weight * box_penalty(X, lo, hi)
        if cfg.lambda_penalty:
            reg = reg + cfg.lambda_penalty * ((cfg.lambda_min - lam).clamp_min(0) ** 2).sum()
        return reg

    return prior


def haim_objective(
    spec: MLPSpec, theta: list[torch.Tensor], cfg: HaimConfig, m: int, mean: torch.Tensor | None = None
) -> WeightedSumObjective:
    if spec.n_outputs != 1:
        raise TrainreconError(f"the Haim attack needs a binary (1-output) victim, this one has {spec.n_outputs} outputs")
    surrogate = Surrogate("modified_relu", cfg.alpha)
    labels = haim_labels(m, theta[0].dtype, theta[0].device)

    def phi(params, X, _labels):
        return forward(spec, params, X, surrogate)

    def weights(lam):
        return (lam * labels / m)[:, None]

    return WeightedSumObjective(theta, theta, phi, weights, kkt_prior(cfg, mean), labels, cfg.chunk_size)


def haim_init(
    m: int, d: int, cfg: HaimConfig, like: torch.Tensor, normal_lambda: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ init_scale N(0, 1) of shape (m, d); lambda ~ U(0, 1) (Haim, Buzaglo multiclass) or N(0, 1)
    (Buzaglo regression), from ``cfg.seed``; on the device and dtype of ``like``."""
    g = torch.Generator().manual_seed(cfg.seed)
    X = torch.randn(m, d, generator=g, dtype=torch.float64) * cfg.init_scale
    draw = torch.randn if normal_lambda else torch.rand
    lam = draw(m, generator=g, dtype=torch.float64)
    return X.to(like), lam.to(like)


def victim_mean(victim: Victim) -> torch.Tensor:
    """The victim's centring mean as a flat tensor on its parameters' device and dtype."""
    like = victim.params[0]
    return torch.as_tensor(victim.mean_chw(), dtype=like.dtype, device=like.device).reshape(-1)


def kkt_optimisers(cfg: HaimConfig) -> tuple[SGDMomentum, SGDMomentum]:
    """Two SGD-with-momentum optimisers on one loss: x (lr) and lambda (lr_lambda)."""
    return SGDMomentum(cfg.lr, cfg.momentum), SGDMomentum(cfg.lr_lambda, cfg.momentum)


def haim_plan(victim: Victim, cfg: HaimConfig, m: int) -> AttackPlan:
    """The Haim attack on a victim already on its device and dtype."""
    if m % 2:
        raise TrainreconError(f"attack.m: the Haim attack needs an even number of candidates, got {m}")
    obj = haim_objective(victim.spec, victim.params, cfg, m, victim_mean(victim))
    X, lam = haim_init(m, victim.spec.widths[0], cfg, victim.params[0])
    labels = haim_labels(m, torch.float64, "cpu").numpy()
    return AttackPlan(lambda it: obj, X, lam, *kkt_optimisers(cfg), labels)
