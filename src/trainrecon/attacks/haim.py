"""KKT reconstruction of Haim et al., NeurIPS 2022 ("Reconstructing Training Data from Trained Neural Networks").

Candidates x_1..x_m with fixed labels (first half -1, second half +1) and free multipliers lambda minimise

    L(x, lambda) = sum_p || theta_p - (1/m0) sum_i lambda_i grad_{theta_p} [y_i Phi~(theta; x_i)] ||^2
                   + sum_{i,pix} [(x - 1)_+^2 + (-1 - x)_+^2]  +  5 sum_i (lambda_min - lambda_i)_+^2,

where Phi~ is the network with the modified ReLU (forward relu, derivative sigmoid(alpha z)), the box is on
the centred candidates, the sum runs over every parameter tensor (biases included), unnormalised, and m0 is
the number of candidates at initialisation (the KKT form of :mod:`trainrecon.models.stationarity`).
Optimiser: SGD with momentum 0.9 on x (lr) and on lambda (lr_lambda, 1e-4 in the reference);
x ~ init_scale N(0, 1), lambda ~ U(0, 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..errors import TrainreconError
from ..models.activations import Surrogate
from ..models.stationarity import KKT
from .method import AttackConfig, Method, Tunable, box_penalty, register, repulsion_penalty
from .optim import RowAdam, SGDMomentum
from .payload import Payload


#: the per-candidate Adam's lr is a step per pixel: from this on (the whole pixel range per iteration) it is an SGD
#: rate given to the wrong optimiser (the defaults were lr 1 with SGD until 2026-12-06), refused
ROW_ADAM_LR_LIMIT = 1.0


@dataclass
class KKTConfig(AttackConfig):
    """Hyper-parameters the KKT attacks share (Haim's and Buzaglo's multiclass and regression attacks), with the
    defaults they share: the x step SGD with momentum at lr 1, in float64.

    The objective, the 1/m scaling, the penalties and the optimiser are the reference code's.  The reference
    sweeps init_scale, lr, lambda_min and alpha per run and keeps lr_lambda at 1e-4 with the box on the centred
    candidates.  The defaults here are one set for every victim, made possible by the attacker-side scale
    normalisation (``normalise = "auto"``, :mod:`.normalisation`): tuned on trainrecon's MNIST and CIFAR
    victims, they are lr 1, init_scale 1e-3, lr_lambda 0.01 (the multipliers reach their scale), lambda_min 0.1,
    alpha 30 and ``box_space = "pixel"`` (a trainrecon option: x + mean stays in [0, 1], the valid pixel range,
    as Loo's prior does, which stops candidates from going darker than the background); ``"centred"`` is the
    reference's box [-box, box] on the centred candidates.  ``trainrecon sweep`` searches around them.
    ``max_step > 0`` bounds each candidate's x step (Euclidean norm; 0: the reference's plain SGD).
    ``x_optimiser = "row_adam"`` replaces the x step by Adam with one second moment per candidate
    (:class:`.optim.RowAdam`: each candidate moves about lr per pixel whatever its multiplier; lr is then a pixel
    step, e.g. 0.01, not SGD's 1; Haim's default, :class:`HaimConfig`).  ``alpha_start > 0`` is a continuation
    in the surrogate's sharpness: alpha grows geometrically from alpha_start to alpha over the first
    ``alpha_ramp`` iterations, alpha(it) = alpha_start (alpha / alpha_start)^min(1, it / alpha_ramp) (0, the
    default: alpha throughout).  ``repel > 0`` adds a repulsion between near-copies (cosine above ``repel_cos``)
    to the prior, against the collapse of many candidates onto one attractor (bench/RESULTS.md, MNIST n = 100).
    Power-activation victims get their own defaults (:meth:`KKTMethod.adapt`).
    """

    iterations: int = 8000
    lr: float = 1.0
    init_scale: float = 1e-3
    lr_lambda: float = 0.01
    lambda_min: float = 0.1
    lambda_penalty: float = 5.0
    alpha: float = 30.0
    box: float = 1.0
    box_space: Literal["centred", "pixel"] = "pixel"
    box_weight: float = 1.0
    momentum: float = 0.9
    max_step: float = 0.0
    repel: float = 0.0
    repel_cos: float = 0.9
    x_optimiser: Literal["sgd", "row_adam"] = "sgd"
    alpha_start: float = 0.0
    alpha_ramp: int = 2000

    #: box_space came in when the box was centred only, x_optimiser when the x step was SGD's
    BEFORE: ClassVar[dict[str, Any]] = {**AttackConfig.BEFORE, "box_space": "centred", "x_optimiser": "sgd"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha <= 0:
            raise TrainreconError(f"attack.alpha: must be positive, got {self.alpha}")
        for name in ("lr_lambda", "lambda_penalty", "box", "box_weight", "max_step", "repel"):
            if getattr(self, name) < 0:
                raise TrainreconError(f"attack.{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise TrainreconError(f"attack.momentum: must be in [0, 1), got {self.momentum}")
        if self.alpha_start < 0 or self.alpha_ramp < 1:
            raise TrainreconError(f"attack.alpha_start must be >= 0 and alpha_ramp >= 1, got {self.alpha_start} "
                                  f"and {self.alpha_ramp}")
        if self.x_optimiser == "row_adam" and self.max_step:
            raise TrainreconError("attack.max_step: bounds the SGD step; x_optimiser 'row_adam' takes none")
        if self.x_optimiser == "row_adam" and self.lr >= ROW_ADAM_LR_LIMIT:
            raise TrainreconError(f"attack.lr: {self.lr:g} is a step per pixel under x_optimiser 'row_adam' (below "
                                  f"{ROW_ADAM_LR_LIMIT:g}, e.g. Haim's default 0.01); an SGD rate such as 1 needs "
                                  "x_optimiser 'sgd'")
        if not -1 <= self.repel_cos < 1:
            raise TrainreconError(f"attack.repel_cos: must be in [-1, 1), got {self.repel_cos}")


@dataclass
class HaimConfig(KKTConfig):
    """Hyper-parameters of the Haim KKT attack (:class:`KKTConfig`), with its own defaults since 2026-12-06: the
    per-candidate Adam on x at lr 0.01 (``x_optimiser = "row_adam"``) and ``dtype = "auto"`` (float32 where an
    iteration is large, :data:`FP32_WORK`); at n = 100 they recover about twice what SGD at lr 1 in float64 did
    in the same CPU time (bench/RESULTS.md, "The plateau at n = 100").  And the total-variation prior at
    ``tv = 0.1`` (:class:`~.method.AttackConfig`; off where the inputs are not images, power victims included):
    at n = 100 it recovers a third more in the same CPU time, and holds more of the training set when the
    attack starts there (bench/RESULTS.md, "A total-variation prior on the KKT attack").  And the layers after the
    first counted a tenth (``deep_weight = 0.1``): the first layer's equation is the one linear in the candidates;
    at n = 20, 40 and 100 it recovers a few images more and holds more of the training set from the truth
    (bench/RESULTS.md, "The first layer's equation first").  And the network's products in bfloat16 where the
    device makes them at least twice as fast (``autocast = "auto"``, :meth:`~.method.Method.auto_autocast`): on
    this project's CPU (AMX) an iteration costs about 0.7 of float32's, and at n = 100 three paired seeds recover
    41 / 43 / 44 of 100 against 42 / 35 / 37 in the same 10 minutes (bench/RESULTS.md, "bfloat16 products").
    And the objective's pass compiled into one graph where an iteration is large (``compile = "auto"``,
    :meth:`~.method.Method.auto_compile`): at n = 100, 1.3-1.9 times the iterations in 10 minutes on two threads
    (bench/RESULTS.md, "One compiled graph")."""

    lr: float = 0.01
    tv: float = 0.1
    deep_weight: float = 0.1
    x_optimiser: Literal["sgd", "row_adam"] = "row_adam"
    dtype: Literal["auto", "float64", "float32"] = "auto"
    autocast: Literal["auto", "none", "bfloat16"] = "auto"
    compile: Literal["auto", "none", "inductor"] = "auto"


def haim_labels(m: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Fixed candidate labels: y_i = -1 for i < m/2, +1 otherwise."""
    y = torch.ones(m, dtype=dtype, device=device)
    y[: m // 2] = -1
    return y


def kkt_prior(cfg: KKTConfig, mean: torch.Tensor | None = None):
    """Haim / Buzaglo prior: box [-box, box] on the centred x (or [-mean, 1 - mean] with box_space 'pixel'),
    weight box_weight, + lambda_penalty (lambda_min - lambda)_+^2, + repel sum_{a<b} (cos(x_a, x_b) - repel_cos)_+^2
    (:func:`.method.repulsion_penalty`; 0 by default)."""
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
        if cfg.repel:
            reg = reg + cfg.repel * repulsion_penalty(X, cfg.repel_cos)
        return reg

    return prior


#: the KKT attacks' defaults on power-activation victims (:meth:`KKTMethod.adapt`; init_scale = 1 / sqrt(d)),
#: from runs on exact-KKT points (alpha 3 and 4, d 20 and 50: bench/RESULTS.md).  No box and no multiplier
#: penalty: the inputs are not pixels (a Gaussian sample's coordinates leave [-1, 1]) and an exact KKT point's
#: multipliers are whatever they are
POWER_DEFAULTS: dict[str, Any] = {"x_optimiser": "sgd", "lr": 0.003, "lr_lambda": 0.1, "box_space": "centred",
                                  "max_step": 0.01, "box_weight": 0.0, "lambda_penalty": 0.0, "deep_weight": 1.0}
#: sample splitting on power victims, where it wins (bench/RESULTS.md, "Growth from m < n" and "the library's
#: defaults on exact-KKT points"): rounds where J stalls, from 5 % of the iterations on, each splitting every
#: candidate once (m doubles) until m = 4 m0
POWER_SPLIT: dict[str, Any] = {"enabled": True, "trigger": "stall", "start": 0.05, "every": 0.1, "per_round": 4096,
                               "max_factor": 4.0}
POWER_REASON = ("power activation: candidates start at unit scale (init_scale = 1 / sqrt(d)), smaller x steps, "
                "each candidate's bounded by max_step, on the degree-2 alpha objective; no box and no multiplier "
                "penalty (inputs are not pixels), every layer's equation alike (deep_weight 1)")
POWER_SPLIT_REASON = ("splitting on by default here: on exact KKT points of polynomial networks with m < n, growing "
                      "the candidates by splitting where the descent stalls recovers more samples than the plain "
                      "attack at about the same CPU time (bench/RESULTS.md); --no-split (attack.auto_split = false) "
                      "turns it off")


#: the work of an iteration, m * n_params, from which the Haim attack runs in float32 by default (dtype "auto").
#: Measured on this project's 2-core CPU (bench/RESULTS.md, "float32 and the per-candidate Adam"): float32 costs
#: 1.3-2 times less per iteration from 7.9e6 (m = 40, 784-200-200-1) to 3.6e8, and was slower at 3.5e6
#: (m = 40, 784-100-100-1); at equal iterations it recovered as much, and in 10 minutes at n = 100 more
#: (three paired seeds)
FP32_WORK = 5e6
#: ``compile = "auto"`` compiles the objective from m * n_params = COMPILE_WORK on: at the n = 100 MNIST victim
#: (m = 200, 784-500-500-1: 1.3e8) the compiled pass takes about 0.7 of the eager one's time, which repays the
#: 10-30 s of compiling within a minute; the demo's victim (m = 80, 784-200-200-1: 1.6e7) stays eager
COMPILE_WORK = 5e7


class KKTMethod(Method):
    """What Haim and both Buzaglo attacks share: the modified-ReLU surrogate, the box / lambda prior, one
    multiplier per candidate weighted by 1/m0, SGD with momentum on x (lr) and on lambda (lr_lambda)."""

    cfg: KKTConfig
    compile_work = COMPILE_WORK
    #: the default lr 1 holds on normalised victims; a victim at its own scale can need less (a CIFAR-10 LeNet
    #: trained with SGD diverged at iteration 10, bench/RESULTS.md)
    probe_iterations = 20
    #: Haim's own sweep (nivha/dataset_reconstruction issue #2: lr, init scale, alpha, lambda_min), with the
    #: ranges narrowed around what works on normalised victims
    search_space = {"lr": Tunable("relative", 0.1, 10.0), "init_scale": Tunable("log", 1e-4, 0.3),
                    "alpha": Tunable("uniform", 10.0, 300.0), "lambda_min": Tunable("uniform", 0.01, 0.5)}

    @classmethod
    def victim_defaults(cls, cfg: KKTConfig, payload: Payload) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """Besides the base class's (theta_0 removed where given), power-activation victims (two-layer x^alpha
        networks, ``exact-kkt`` and ``train-poly``) get their own defaults for every field left at its default
        (:data:`POWER_DEFAULTS`): the image defaults start the candidates at 1e-3, where
        grad_x (w . x)^alpha ~ |x|^(alpha - 1) vanishes, and take steps of lr 1 on an objective of degree 2 alpha in
        x, which diverge within 20 iterations; and there is no pixel range.  A split config left entirely at its
        defaults becomes :data:`POWER_SPLIT` (splitting on: it grows the candidate set where the descent stalls,
        which recovers more than the plain attack there).  Every other victim keeps splitting off (no gain on
        ReLU victims).  ``auto_split = false`` keeps splitting as configured."""
        changed, reasons, notes = super().victim_defaults(cfg, payload)
        spec = payload.spec
        if "power" not in spec.activations():
            return changed, reasons, notes
        base = type(cfg)()
        wanted = {**POWER_DEFAULTS, "init_scale": 1.0 / math.sqrt(spec.input_dim)}
        power = {k: v for k, v in wanted.items() if getattr(cfg, k) == getattr(base, k) and getattr(cfg, k) != v}
        changed.update(power)
        reasons += [POWER_REASON] if power else []
        if cfg.auto_split and cfg.split == base.split:
            changed["split"] = dataclasses.replace(cfg.split, **POWER_SPLIT)
            reasons.append(POWER_SPLIT_REASON)
            notes["split"] = POWER_SPLIT_REASON
        return changed, reasons, notes

    @classmethod
    def compilable(cls, cfg: KKTConfig) -> bool:
        """A fixed surrogate: no continuation in alpha (``alpha_start``)."""
        return super().compilable(cfg) and not cfg.alpha_start

    def __init__(self, payload: Payload, cfg: KKTConfig) -> None:
        super().__init__(payload, cfg)
        self._prior = kkt_prior(cfg, payload.mean_flat())
        self._surrogate = Surrogate("modified_relu", cfg.alpha)

    def weights(self, M: torch.Tensor, m0: int) -> torch.Tensor:
        return (M / m0)[:, None]

    def prior(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        return self._prior(X, M)

    def surrogate(self, it: int) -> Surrogate:
        """The modified ReLU at sharpness alpha, or on the continuation's way to it (``alpha_start``)."""
        a0 = self.cfg.alpha_start
        if not a0 or it >= self.cfg.alpha_ramp:
            return self._surrogate
        return Surrogate("modified_relu", a0 * (self.cfg.alpha / a0) ** (it / self.cfg.alpha_ramp))

    def multipliers(self, m: int, g: torch.Generator) -> torch.Tensor:
        """lambda ~ U(0, 1)."""
        return torch.rand(m, generator=g, dtype=torch.float64)

    def optimisers(self) -> tuple[SGDMomentum | RowAdam, SGDMomentum]:
        opt_x = (RowAdam(self.cfg.lr) if self.cfg.x_optimiser == "row_adam"
                 else SGDMomentum(self.cfg.lr, self.cfg.momentum, self.cfg.max_step))
        return opt_x, SGDMomentum(self.cfg.lr_lambda, self.cfg.momentum)


@register
class Haim(KKTMethod):
    """Haim et al. 2022: binary KKT, labels -1 / +1 in halves, lambda >= lambda_min (soft)."""

    name = "haim"
    Config = HaimConfig
    form = KKT
    #: dtype "auto" runs in float32 from m * n_params = FP32_WORK on (bench/RESULTS.md, "float32 by default")
    fp32_work = FP32_WORK

    @classmethod
    def auto_dtype(cls, cfg: HaimConfig, payload: Payload) -> str:
        """float64 on power victims (an objective of degree 2 alpha in x, at exact KKT points); elsewhere the
        size rule of :meth:`Method.auto_dtype`."""
        return "float64" if "power" in payload.spec.activations() else super().auto_dtype(cfg, payload)

    def check(self) -> None:
        if self.payload.spec.n_outputs != 1:
            raise TrainreconError(f"the Haim attack needs a binary (1-output) victim, this one has "
                                  f"{self.payload.spec.n_outputs} outputs")

    def labels(self, m: int) -> torch.Tensor:
        if m % 2:
            raise TrainreconError(f"attack.m: the Haim attack needs an even number of candidates, got {m}")
        return haim_labels(m, torch.float64, "cpu")
