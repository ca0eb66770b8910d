"""NTK reconstruction of Loo et al., ICLR 2024 ("Understanding Reconstruction Attacks with the Neural
Tangent Kernel and Dataset Distillation"), reference code yolky/understanding_reconstruction.

Candidates X (m, d) and free duals alpha (m, K) minimise

    g(theta)  = grad_theta [ (1/(m0 K)) sum_{i,k} alpha_ik f_k^beta(x_i; theta) ]
    L         = sum_p || (theta_T - theta_0)_p - g(theta_T)_p ||^2
                + 0.1 (1/(HWC)) sum_{i,pix} [ (x - (1 - mu))_+^2 + (-mu - x)_+^2 ]

where f^beta is the network with softplus(beta z)/beta in the forward pass (and so in every derivative), mu
the victim's centring mean (the box is [0, 1] in pixel space), and beta follows Loo's schedule
beta_i = min(beta_start + 10^(i / beta_period), beta_max) = min(10 + 10^(i/20000), 200).  The kernel is taken at
theta_T as in the reference (``kernel_at = "init"`` evaluates it at theta_0, the NTK-exact form; ``"both"``
averages the two, g = (g(theta_0) + g(theta_T)) / 2, the trapezoid rule for the path integral of the gradients
that training summed).  It runs on any victim whose theta_0 is given (threat level ``init``), not only on the
``ntk`` trainer's: ``remove_init = "project"`` makes it blind to theta_0's direction, what weight decay shrank.
Optimiser: Adam, lr 0.02, on X and alpha; X ~ 0.2 N(0, 1) (centred space), alpha ~ U(-0.5, 0.5); m = 2n;
80,000 iterations; float32.  The high-frequency penalty of the reference is 0 for MLPs and is omitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import TrainreconError
from ..models.activations import Surrogate
from ..models.stationarity import NTK
from .method import AttackConfig, Method, Tunable, box_penalty, register
from .optim import Adam


@dataclass
class LooConfig(AttackConfig):
    """Hyper-parameters of the Loo NTK attack (reference defaults, bulk mode)."""

    iterations: int = 80000
    lr: float = 0.02
    init_scale: float = 0.2
    dtype: Literal["float64", "float32"] = "float32"
    dual_init: float = 0.5
    box_weight: float = 0.1
    beta_start: float = 10.0
    beta_period: float = 20000.0
    beta_max: float = 200.0
    kernel_at: Literal["final", "init", "both"] = "final"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_start < 0 or self.beta_max <= 0 or self.beta_period <= 0:
            raise TrainreconError("attack.beta_start must be >= 0, attack.beta_max and attack.beta_period positive")
        if self.box_weight < 0:
            raise TrainreconError(f"attack.box_weight: must be >= 0, got {self.box_weight}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1 and self.adam_eps > 0):
            raise TrainreconError("attack.adam_beta1 and adam_beta2 must be in [0, 1), adam_eps positive")


def beta_schedule(cfg: LooConfig, it: int) -> float:
    """Loo's softplus sharpness at iteration ``it``: min(beta_start + 10^(it / beta_period), beta_max)."""
    return min(cfg.beta_start + 10.0 ** min(it / cfg.beta_period, 300.0), cfg.beta_max)  # no overflow past beta_max


@register
class LooNTK(Method):
    """Loo et al.: the NTK form, softplus surrogate on a beta schedule, pixel-space box, Adam."""

    name = "loo-ntk"
    Config = LooConfig
    form = NTK
    cfg: LooConfig
    search_space = {"lr": Tunable("relative", 0.1, 10.0), "init_scale": Tunable("log", 0.01, 1.0),
                    "dual_init": Tunable("log", 0.05, 5.0), "beta_max": Tunable("uniform", 50.0, 500.0)}

    def check(self) -> None:
        if self.payload.init_params is None:
            raise TrainreconError("the Loo NTK attack needs the victim's initial parameters theta_0 (threat level "
                                  "'init': train with --trainer ntk, or trainrecon import --init / --init-seed)")
        self._mu = self.payload.mean_flat().reshape(1, -1)

    @property
    def kernel_at_init(self) -> bool:  # type: ignore[override]
        return self.cfg.kernel_at == "init"

    def kernel_points(self) -> list[list[torch.Tensor]]:
        if self.cfg.kernel_at == "both":
            return [self.payload.init_params, self.payload.params]
        return super().kernel_points()

    def weights(self, M: torch.Tensor, m0: int) -> torch.Tensor:
        return M / (m0 * M.shape[1])

    def prior(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        return self.cfg.box_weight * box_penalty(X, -self._mu, 1 - self._mu) / X.shape[1]

    def surrogate(self, it: int) -> Surrogate:
        return Surrogate("softplus", beta_schedule(self.cfg, it))

    def multipliers(self, m: int, g: torch.Generator) -> torch.Tensor:
        """alpha ~ U(-dual_init, dual_init), (m, K)."""
        return (torch.rand(m, self.payload.spec.n_outputs, generator=g, dtype=torch.float64) * 2 - 1) * self.cfg.dual_init

    def optimisers(self) -> tuple[Adam, Adam]:
        opt = Adam(self.cfg.lr, self.cfg.adam_beta1, self.cfg.adam_beta2, self.cfg.adam_eps)
        return opt, opt
