"""A reconstruction method is one class: its config, its stationarity form, its prior, its candidates'
initialisation and labels, and its optimisers.  Methods register themselves by name in :data:`METHODS`;
the CLI's method list and help come from there.

The objective every method builds (:meth:`Method.objective`) is the weighted-sum form of :mod:`.weighted_sum`,

    J = || target - grad_theta sum_jk w_jk(M) phi_k(theta_at; x_j) ||^2 + R(X, M),   phi = form.features(f~(x), y),

with f~ the network under the method's smooth surrogate activation at iteration i, w = the method's weights
normalised by m0 (the initial number of candidates), and target / theta_at from the stationarity form
(:mod:`trainrecon.models.stationarity`).  A new method subclasses :class:`Method`, sets ``name``,
``Config`` and ``form``, implements ``labels`` / ``weights`` / ``prior`` / ``surrogate`` / ``optimisers``
(and ``init`` when its starting point differs), and decorates itself with :func:`register`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch

from ..config import check_numbers, to_dict
from ..errors import TrainreconError
from ..registry import Registry
from ..runtime import available_bytes, compiler_works, fast_bfloat16
from ..models.activations import Surrogate
from ..models.stationarity import StationarityForm
from ..refinement.settings import MergeConfig, SplitConfig
from ..objective.candidates import CandidateSet, cosine_matrix
from .normalisation import Normalise
from .payload import Payload
from ..objective.fused import CompiledPass, CompiledPrior
from ..objective.restarts import Restarts
from ..objective.weighted_sum import (DeadZoneDistance, ProjectedDistance, SquaredDistance, SummedCopies,
                                      TensorWeighted, WeightedSumObjective)

#: why ``compile = "auto"`` becomes inductor (config.json["adapted"])
COMPILE_REASON = ("a large iteration (m * n_params at or above the method's compile_work) and a fixed surrogate: "
                  "the objective's passes in one graph compiled by torch.compile (10-30 s once, within the budget), "
                  "for more iterations in a budget (compile 'auto'; 'none' to keep the eager passes)")
#: what "auto" resolves to without a choice worth recording in config.json["adapted"]
UNCHOSEN = (("remove_init", "none"), ("dtype", "float64"), ("autocast", "none"), ("compile", "none"))
#: why ``dtype = "auto"`` becomes float32 (config.json["adapted"])
FP32_REASON = ("a large iteration (m * n_params at or above the method's fp32_work): float32 costs about half as much "
               "per iteration on CPU and recovered as much per iteration, so more within a budget (dtype 'auto'; "
               "'float64' to keep double precision)")
#: why ``autocast = "auto"`` becomes bfloat16 (config.json["adapted"])
AUTOCAST_REASON = ("a float32 run on a device whose bfloat16 matrix products are at least twice as fast "
                   "(runtime.fast_bfloat16): the network's products in bfloat16, accumulated in float32, for more "
                   "iterations in a budget (autocast 'auto'; 'none' to keep every operation in float32)")
#: why a method's default total-variation prior is off: inputs that are not images, or sample splitting (each child
#: of a split adds its own TV term, which outweighs what a split gains: every split is vetoed, bench/RESULTS.md)
TV_REASON = {"vector": "inputs are not images (input_shape with H or W of 1): no total-variation prior (tv 0)",
             "split": "sample splitting is on: no total-variation prior (tv 0), which would veto every split (each "
                      "child adds its own TV term); a tv other than the default, or adapt false, keeps one"}
#: why ``remove_init = "auto"`` becomes what it becomes when theta_0 is given (config.json["adapted"])
INIT_REASON = {
    "project": "theta_0 is given: the residual is blind to its direction in each parameter tensor (what training "
               "kept of the initialisation, weight decay's shrinking included), remove_init 'project'",
    "subtract": "theta_0 is given: the NTK form fits the displacement theta_T - theta_0 (remove_init 'subtract')",
}


class _TotalVariation(torch.autograd.Function):
    """Per-row TV (:func:`total_variation`) with its gradient written out: for each direction, the differences'
    signs over their count, added at the later pixel and subtracted at the earlier one (200 MNIST candidates, one
    CPU thread: 0.8 ms a value and gradient, against 1.5 through autograd's slices).  The backward recomputes the
    differences from x, so torch.func's grad and a second derivative (zero almost everywhere) go through."""

    @staticmethod
    def forward(X: torch.Tensor, shape) -> torch.Tensor:
        tv = X.new_zeros(X.shape[0])
        for d in _differences(X.reshape(X.shape[0], *shape)):
            if d is not None:
                tv = tv + d.abs().sum(dim=(1, 2, 3)) / d[0].numel()
        return tv

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.shape = inputs[1]

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (X,) = ctx.saved_tensors
        dv, dh = _differences(X.reshape(X.shape[0], *ctx.shape))
        out = torch.zeros_like(X).reshape(X.shape[0], *ctx.shape)
        if dv is not None:
            step = dv.sign_().mul_((g / dv[0].numel()).reshape(-1, 1, 1, 1))
            out[..., 1:, :] += step
            out[..., :-1, :] -= step
        if dh is not None:
            step = dh.sign_().mul_((g / dh[0].numel()).reshape(-1, 1, 1, 1))
            out[..., :, 1:] += step
            out[..., :, :-1] -= step
        return out.reshape(X.shape), None


def _differences(img: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The vertical and horizontal differences of images (m, C, H, W); None along a side of one pixel."""
    H, W = img.shape[-2], img.shape[-1]
    return (img[..., 1:, :] - img[..., :-1, :] if H > 1 else None,
            img[..., :, 1:] - img[..., :, :-1] if W > 1 else None)


def total_variation(X: torch.Tensor, shape) -> torch.Tensor:
    """TV of every row of X (m, C H W) as an image of ``shape`` (C, H, W): mean |vertical differences| + mean
    |horizontal differences| (SimuDy's anisotropic total variation), shape (m,).  Traced by ``torch.compile`` (the
    compiled prior, ``objective/fused.py``), the same expression in plain operations, which it differentiates and
    fuses itself (|.|'s derivative at 0 is 0 there too)."""
    if torch.compiler.is_compiling():
        return _TotalVariation.forward(X, tuple(shape))
    return _TotalVariation.apply(X, tuple(shape))


@dataclass
class AttackConfig:
    """Fields every method's config has.  ``m = 0`` means 2 n (twice the disclosed training-set size; n for the
    training simulation: :attr:`Method.candidates_per_sample`);
    ``chunk_size`` bounds memory by accumulating the weighted sum over candidate chunks; ``split`` the sample
    splitting refinement (off unless ``split.enabled``); ``merge`` the merging of near-duplicate candidates
    (off unless ``merge.enabled``); ``max_seconds > 0`` ends the run at that wall-clock
    (summed over resumes) even before ``iterations``, for comparisons at equal wall-clock; ``normalise = "auto"``
    runs the attack on the victim rescaled to a canonical parameter scale when it is homogeneous
    (:mod:`.normalisation`), so the defaults do not depend on the scale the victim was stored at; ``adapt``
    lets the method replace default-valued fields by its defaults for this kind of victim (:meth:`Method.adapt`,
    recorded in config.json["adapted"]), ``false`` runs the config exactly as given; ``auto_split`` lets it turn
    sample splitting on where splitting wins (power victims; the CLI's ``--no-split`` sets it false).

    ``init_tolerance = c > 0`` is for a victim trained from PyTorch's default initialisation (``nn.Linear`` /
    ``nn.Conv2d``: U(-b, b), b = 1/sqrt(fan_in)) and saved as trained, not rescaled: the stationarity forms
    whose target is theta itself (KKT, weight decay) then forgive each weight up to c b, the theta_0 that
    training never removed (:class:`~trainrecon.objective.weighted_sum.DeadZoneDistance`).  0 (the default) is
    the plain squared distance.

    ``given``: the threat level the attacker works at (``weights``, ``init``: plus theta_0, ``recipe``: plus the
    training recipe; ``all``, the default: everything the victim has), :meth:`~.payload.Payload.at_level`.
    ``remove_init``: what the stationarity residual does with a known theta_0: ``none`` (the residual of the
    target as the form states it), ``subtract`` (the displacement theta_T - theta_0), ``project`` (theta_0's
    direction in each parameter tensor projected out: blind to how much of theta_0 training kept, weight decay
    included; :class:`~trainrecon.objective.weighted_sum.ProjectedDistance`), ``auto`` (the default: the
    method's choice for what it is given, :meth:`Method.adapt`).  ``tv >= 0`` adds a total-variation prior on
    the candidate images, tv F(0) (1/m0) sum_j TV(x_j + mean), with TV(z) = mean |z(h+1, w) - z(h, w)| +
    mean |z(h, w+1) - z(h, w)| (SimuDy's anisotropic TV) and F(0) the stationarity term at s = 0, so that the
    weight is relative to what the attack explains.  ``solve_multipliers_every = k > 0`` replaces the multipliers
    every k iterations by the best ones for the current candidates (NNLS on the stationarity term,
    :mod:`trainrecon.hooks.multipliers`) instead of only descending them.  ``lr_final = f`` in (0, 1] scales
    every step (candidates and multipliers) by a cosine from 1 to f over the run's progress, the larger of
    iterations done / ``iterations`` and seconds / ``max_seconds`` (1, the default: a constant step);
    ``lr_decay_start = s`` in [0, 1) keeps the step constant for the first share s of that progress and decays it
    by the cosine over the rest (0, the default: over the whole run).
    ``deep_weight = gamma > 0`` counts the stationarity residual of every parameter tensor after the first
    parameterised layer's gamma times, F(s) = sum_p gamma_p ||target_p - s_p||^2 with gamma_p = 1 on the first
    layer (the one equation linear in the candidates: W_1 = sum_j w_j delta_j x_j^T) and gamma elsewhere
    (:class:`~trainrecon.objective.weighted_sum.TensorWeighted`); 1, the default: every tensor alike.
    ``autocast = "bfloat16"`` runs the objective's passes through the network under ``torch.autocast``: its
    matrix products in bfloat16, accumulated in float32 (AMX on Intel CPUs that have it, tensor cores on CUDA),
    the residual, its gradient and the priors in float32; for a float32 run of a weighted-sum method
    (:class:`~trainrecon.objective.weighted_sum.WeightedSumObjective`); "none", the default: every operation in
    the run's dtype; "auto": bfloat16 for a float32 run on a device where it is at least twice as fast
    (:meth:`Method.auto_autocast`).
    ``compile = "inductor"`` computes the objective's value and gradients in one graph compiled by
    ``torch.compile`` (:mod:`trainrecon.objective.fused`: the passes share their forward through the network and
    the elementwise work is fused; compiling takes 10-30 s once, inside the run's budget); for a weighted-sum method
    whose surrogate is fixed; "none", the default: the eager passes; "auto": "inductor" where an iteration is large
    enough to repay the compiling (m * n_params at or above the method's ``compile_work``) and ``torch.compile``
    works on the device (:meth:`Method.auto_compile`).
    ``restarts = R > 1`` runs R independent descents in one run: R blocks of m candidates, block r drawn from seed
    + r, each descending its own objective alone (J = sum_r J_r(X_r, M_r): no block sees another, so block r
    moves as the run with seed + r would), merged at the end into the m candidates that most blocks agree on
    (:mod:`trainrecon.refinement.consensus`: the pixel median of each image found by several restarts); 1, the
    default: one descent.  Not with sample splitting, merging or ``solve_multipliers_every`` (they act on the
    whole set)."""

    m: int = 0
    iterations: int = 8000
    lr: float = 0.03
    init_scale: float = 0.1
    dtype: Literal["auto", "float64", "float32"] = "float64"
    seed: int = 0
    chunk_size: int = 0
    checkpoint_every: int = 500
    log_every: int = 100
    max_seconds: float = 0.0
    init_tolerance: float = 0.0
    given: Literal["all", "weights", "init", "recipe"] = "all"
    remove_init: Literal["auto", "none", "subtract", "project"] = "auto"
    tv: float = 0.0
    solve_multipliers_every: int = 0
    lr_final: float = 1.0
    lr_decay_start: float = 0.0
    deep_weight: float = 1.0
    autocast: Literal["auto", "none", "bfloat16"] = "none"
    compile: Literal["auto", "none", "inductor"] = "none"
    restarts: int = 1
    normalise: Normalise = "auto"
    adapt: bool = True
    auto_split: bool = True
    split: SplitConfig = field(default_factory=SplitConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)

    #: what a field meant in runs recorded before it existed (resuming those must not change their behaviour)
    BEFORE: ClassVar[dict[str, Any]] = {"normalise": "none", "remove_init": "none", "deep_weight": 1.0,
                                        "autocast": "none", "compile": "none"}
    #: the fields a hook on the run carries out (its ``implements``), not the method: a run that enables one
    #: without that hook is refused (:meth:`needs_hooks`)
    HOOKED: ClassVar[tuple[str, ...]] = ("split", "merge", "max_seconds", "solve_multipliers_every", "restarts")

    def __post_init__(self) -> None:
        check_numbers(self, "attack")
        if self.m < 0:
            raise TrainreconError(f"attack.m: need a number of candidates (or 0 for 2n), got {self.m}")
        if self.iterations < 1:
            raise TrainreconError(f"attack.iterations: must be >= 1 (0 would save the random starts as candidates), got {self.iterations}")
        for name in ("checkpoint_every", "log_every", "lr", "init_scale"):
            if getattr(self, name) <= 0:
                raise TrainreconError(f"attack.{name}: must be positive, got {getattr(self, name)}")
        if self.chunk_size < 0:
            raise TrainreconError(f"attack.chunk_size: must be >= 0 (0: one chunk), got {self.chunk_size}")
        if self.max_seconds < 0:
            raise TrainreconError(f"attack.max_seconds: must be >= 0 (0: no limit), got {self.max_seconds}")
        if self.init_tolerance < 0:
            raise TrainreconError(f"attack.init_tolerance: must be >= 0 (0: off), got {self.init_tolerance}")
        if self.tv < 0:
            raise TrainreconError(f"attack.tv: must be >= 0 (0: off), got {self.tv}")
        if not self.deep_weight > 0:
            raise TrainreconError(f"attack.deep_weight: the weight of the layers after the first, must be > 0 "
                                  f"(1: every layer alike), got {self.deep_weight}")
        if not 0 < self.lr_final <= 1:
            raise TrainreconError(f"attack.lr_final: the last step as a fraction of the first, in (0, 1], got "
                                  f"{self.lr_final}")
        if not 0 <= self.lr_decay_start < 1:
            raise TrainreconError(f"attack.lr_decay_start: the share of the run before lr_final's decay starts, in "
                                  f"[0, 1), got {self.lr_decay_start}")
        if self.restarts < 1:
            raise TrainreconError(f"attack.restarts: the number of independent descents, must be >= 1, got "
                                  f"{self.restarts}")
        if self.solve_multipliers_every < 0:
            raise TrainreconError(f"attack.solve_multipliers_every: must be >= 0 (0: off), got "
                                  f"{self.solve_multipliers_every}")

    def largest_m(self, m: int) -> int:
        """The most candidates a run started with ``m`` can hold: m, or up to ``split.max_factor`` x m where
        sample splitting grows the set."""
        return int(self.split.max_factor * m) if self.split.enabled and self.split.mode == "grow" else m

    def needs_hooks(self) -> list[tuple[str, str]]:
        """(the field that asks, what a hook must implement) for every :data:`HOOKED` field this config turns on:
        a settings block's ``name.enabled``, else ``name`` set away from its default (0, or 1 restart)."""
        out = []
        for name in self.HOOKED:
            value = getattr(self, name)
            on = value.enabled if hasattr(value, "enabled") else value != self.__dataclass_fields__[name].default
            if on:
                out.append((f"{name}.enabled" if hasattr(value, "enabled") else name, name))
        return out


@dataclass(frozen=True)
class Tunable:
    """How a sweep draws one hyper-parameter: ``log`` (log-uniform on [low, high]), ``uniform``, or ``relative``
    (log-uniform on [low, high] times the sweep's base value, so a user's own base config stays the centre)."""

    kind: Literal["log", "uniform", "relative"]
    low: float
    high: float

    def range(self, base: float, where: str = "sweep.base") -> tuple[float, float]:
        """[low, high], times ``base`` for a relative parameter; refused in one line (naming ``where``) unless
        it is a range of finite numbers, positive and above float64's smallest normal number where drawn on a
        log scale (a base near 1e308 or 1e-308 makes it overflow or underflow)."""
        lo, hi = (self.low * base, self.high * base) if self.kind == "relative" else (self.low, self.high)
        floor = sys.float_info.min if self.kind != "uniform" else -math.inf
        if not (floor <= lo < hi < math.inf):
            raise TrainreconError(f"{where}: the search range [{lo:.3g}, {hi:.3g}] drawn around {base:.3g} is not a "
                                  "range of finite" + (" positive" if self.kind != "uniform" else "") + " numbers; "
                                  "choose a base value nearer 1")
        return lo, hi


class Optimizer(Protocol):
    def step(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor: ...


class _BoxPenalty(torch.autograd.Function):
    """sum (x - clamp(x, lo, hi))^2, gradient 2 (x - clamp(x, lo, hi)), the same numbers as autograd of the two
    clamped terms (200 MNIST candidates, one CPU thread: 0.4 ms against 2.4), in x only (the bounds are
    constants).  The backward is made of torch operations on x, so torch.func's grad and a second derivative go
    through."""

    @staticmethod
    def forward(X: torch.Tensor, lo, hi) -> torch.Tensor:
        d = X - torch.clamp(X, lo, hi)
        return (d * d).sum()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.bounds = inputs[1:]

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (X,) = ctx.saved_tensors
        return 2 * g * (X - torch.clamp(X, *ctx.bounds)), None, None


def box_penalty(X: torch.Tensor, lo, hi) -> torch.Tensor:
    """sum over candidates and pixels of (x - hi)_+^2 + (lo - x)_+^2."""
    return _BoxPenalty.apply(X, lo, hi)


def repulsion_penalty(X: torch.Tensor, cos_max: float) -> torch.Tensor:
    """sum over pairs a < b of (cos(x_a, x_b) - cos_max)_+^2, cos of the centred candidates (rows of X): zero
    unless two candidates are near-copies, which the weighted sum cannot tell from one candidate carrying both
    multipliers (a collapse onto one attractor)."""
    return ((cosine_matrix(X) - cos_max).clamp_min(0) ** 2).triu(1).sum()


def start_slots(cand_labels: torch.Tensor | None, truth_labels: np.ndarray | None, m: int, n: int) -> list[int]:
    """The candidate slot of each of the first min(n, m) training images: the first free slot with the same label
    where both have labels, else the first free slot."""
    free = list(range(m))
    slots = []
    for i in range(min(n, m)):
        j = free[0]
        if cand_labels is not None and truth_labels is not None:
            same = [k for k in free if float(cand_labels[k]) == float(truth_labels[i])]
            j = same[0] if same else j
        free.remove(j)
        slots.append(j)
    return slots


class Method:
    """Base class; see the module docstring.  ``payload`` must already be on the run's device and dtype."""

    name: ClassVar[str]
    Config: ClassVar[type[AttackConfig]]
    form: ClassVar[StationarityForm]
    kernel_at_init: bool = False  # evaluate features at theta_0 instead of theta_T (Loo's NTK-exact variant)
    #: the hyper-parameters a sweep (``trainrecon sweep``) searches, and how
    search_space: ClassVar[dict[str, Tunable]] = {}
    #: m = 0 means this many candidates per disclosed training sample
    candidates_per_sample: ClassVar[int] = 2
    #: iterations of the probe that :func:`trainrecon.reconstruct` runs before a run whose step size is the
    #: default and whose victim is attacked at its own scale (no normalisation): where the probe diverges, the
    #: step is divided by 3 (up to three times) and the run's record says so; 0: no probe
    probe_iterations: ClassVar[int] = 0
    #: ``dtype = "auto"`` (:meth:`auto_dtype`) runs in float32 where m * n_params reaches this (None: never)
    fp32_work: ClassVar[float | None] = None
    #: ``compile = "auto"`` (:meth:`auto_compile`) compiles the objective where m * n_params reaches this (None:
    #: never; a method whose objective is not a weighted sum, or whose surrogate follows a schedule, leaves it None)
    compile_work: ClassVar[float | None] = None

    def __init__(self, payload: Payload, cfg: AttackConfig) -> None:
        if type(cfg) is not self.Config:
            raise TrainreconError(f"method {self.name}: expected a {self.Config.__name__}, got {type(cfg).__name__}")
        self.payload, self.cfg = payload, cfg
        if cfg.autocast == "bfloat16" and cfg.dtype == "float64":
            raise TrainreconError(f"attack.autocast: {cfg.autocast} products are for a float32 run; this one runs in "
                                  "float64 (dtype 'auto' keeps float64 for a small iteration): set dtype 'float32' or "
                                  "autocast 'none'")
        if cfg.compile == "inductor" and not self.compilable(cfg):
            raise TrainreconError(f"attack.compile: 'inductor' is for a weighted-sum objective with a fixed "
                                  f"surrogate (the KKT methods without alpha_start); this {self.name} run has none: "
                                  "set compile 'none' or 'auto'")
        self.check()
        self.points = self.kernel_points()
        self.at = [p for point in self.points for p in point]  # one parameter list, or the points' lists in turn
        self.removal = cfg.remove_init if cfg.remove_init != "auto" else self.default_removal(cfg, payload)
        self.outer = self.outer_loss(self.stationarity_target())
        self._baseline = self.outer.baseline  # F(0), read once (a cached property: not where torch.compile traces)
        self._mean = payload.mean_flat()  # x + mean: the candidates' pixels (a tensor made once, traced by compile)
        self._compiled: CompiledPass | None = None
        self._compiled_prior: tuple[int, CompiledPrior] | None = None  # (m0, the compiled prior of that m0)

    def kernel_points(self) -> list[list[torch.Tensor]]:
        """The parameter points at which the features are evaluated: theta_T, or theta_0 for the NTK kernel at
        initialisation; several points add their gradients (:class:`SummedCopies`)."""
        return [self.payload.init_params if self.kernel_at_init else self.payload.params]

    @classmethod
    def memory_bytes(cls, payload: Payload, m: int, cfg: AttackConfig, free: int | None = None) -> float:
        """A generous estimate of a run's peak memory, in bytes of the run's dtype (item = 4 or 8), for a run that
        finds ``free`` bytes available (a method whose memory adapts to it reads it; None: unknown):

            item (4 m d + 8 r sum_l a_l + 8 P),

        the candidates with their optimiser state (d inputs each), every layer's per-candidate activations a_l
        for r = m rows (``chunk_size`` rows when it is set), and a few copies of the P parameters."""
        spec = payload.spec
        rows = min(m, cfg.chunk_size) if cfg.chunk_size else m
        item = 4 if cfg.dtype == "float32" else 8
        return item * (4 * m * spec.input_dim + 8 * rows * sum(spec.activation_sizes()) + 8 * spec.n_params())

    @classmethod
    def default_removal(cls, cfg: AttackConfig, payload: Payload) -> str:
        """What ``remove_init = "auto"`` means for this payload: ``none`` without theta_0 (or with
        ``init_tolerance``, the stand-in for an unknown theta_0), the form's own ``subtract`` for the NTK form
        (its target is the displacement), and ``project`` for the forms whose target is theta itself."""
        if payload.init_params is None or cfg.init_tolerance:
            return "none"
        return "subtract" if cls.form.target_removes_init else "project"

    def stationarity_target(self) -> list[torch.Tensor]:
        """The target of the weighted sum: the form's own (``remove_init = "none"``: theta, or theta_T - theta_0
        for the NTK form), or the displacement theta_T - theta_0 (``subtract``, ``project``)."""
        theta, init = self.payload.params, self.payload.init_params
        if self.removal == "none":
            return self.form.target(theta, init)
        if init is None:
            raise TrainreconError(f"attack.remove_init: {self.removal!r} needs the initial weights theta_0 (threat "
                                  "level 'init': trainrecon import --init)")
        return [p - p0 for p, p0 in zip(theta, init)]

    def outer_loss(self, target: list[torch.Tensor]) -> SquaredDistance | TensorWeighted:
        """||target - s||^2; with ``remove_init = "project"`` blind to theta_0's direction in each parameter tensor
        (:class:`ProjectedDistance`); or with ``init_tolerance`` c > 0 the dead zone b_p = c / (sqrt(fan_in_p) scale)
        of PyTorch's default init (scale: the attacker's normalisation of the weights).  With ``deep_weight``
        gamma != 1 that loss is built on the target scaled by sqrt(gamma_p) per tensor (:class:`TensorWeighted`)."""
        gamma = self.cfg.deep_weight
        if gamma == 1:
            return self._distance(target, [1.0] * len(target))
        first = self.payload.spec.first_layer_tensors()
        scale = [1.0] * first + [math.sqrt(gamma)] * (len(target) - first)
        return TensorWeighted(self._distance([c * t for c, t in zip(scale, target)], scale), scale, list(target))

    def _distance(self, target: list[torch.Tensor], scale: list[float]) -> SquaredDistance:
        """:meth:`outer_loss`'s distance on a target already scaled by ``scale`` per tensor (the dead zone's
        bounds scaled alike)."""
        c = self.cfg.init_tolerance
        if self.removal == "project":
            if c:
                raise TrainreconError("attack.init_tolerance: stands in for an unknown theta_0; with theta_0 given "
                                      "(remove_init 'project') leave it at 0")
            return ProjectedDistance(target, list(self.payload.init_params))
        if c == 0:
            return SquaredDistance(target)
        if self.form.target_removes_init or self.removal != "none":
            whose = "the NTK form's target" if self.form.target_removes_init else "remove_init's target"
            raise TrainreconError(f"attack.init_tolerance: {whose} theta_T - theta_0 already removes the "
                                  "initialisation; leave it at 0")
        bounds = [k * c * b / self.payload.scale for k, b in zip(scale, self.payload.spec.default_init_bounds())]
        outer = DeadZoneDistance(target, bounds)
        if not outer.relative(1.0) < float("inf"):
            raise TrainreconError(f"attack.init_tolerance: every weight of the victim lies within {c} x PyTorch's "
                                  "init bound, so the objective is zero everywhere; lower it (or 0: off)")
        return outer

    def tv_prior(self, X: torch.Tensor, M: torch.Tensor, m0: int) -> torch.Tensor:
        """tv F(0) (1/m0) sum_j TV(x_j + mean) (:class:`AttackConfig`'s ``tv``): every candidate counted once,
        whatever its multiplier M_j (free in sign and scale here; the simulation weights its terms)."""
        return self.cfg.tv * self._baseline * total_variation(X + self._mean, self.payload.spec.input_shape).sum() / m0

    def regulariser(self, m0: int):
        """R(X, M) of the objective: the method's :meth:`prior`, plus :meth:`tv_prior` when ``tv`` is set."""
        if not self.cfg.tv:
            return self.prior
        return lambda X, M: self.prior(X, M) + self.tv_prior(X, M, m0)

    # -- what a method defines ---------------------------------------------------------------------------------
    @classmethod
    def adapt(cls, cfg: AttackConfig, payload: Payload, device: torch.device | str = "cpu"
              ) -> tuple[AttackConfig, dict[str, Any] | None]:
        """(the config this victim's attack runs with on ``device``, the record of what changed and why, or None).
        Fields left at their defaults take the method's defaults for what the payload is and holds
        (:meth:`victim_defaults`) and for the device (``autocast = "auto"``, :meth:`auto_autocast`); the run records
        both in config.json.  ``adapt = false`` runs the config as given (its "auto" fields resolved)."""
        if not cfg.adapt:
            out = cfg if cfg.dtype != "auto" else dataclasses.replace(cfg, dtype=cls.auto_dtype(cfg, payload))
            out = out if out.autocast != "auto" else dataclasses.replace(out, autocast=cls.auto_autocast(out, device))
            return (out if out.compile != "auto" else
                    dataclasses.replace(out, compile=cls.auto_compile(out, payload, device))), None
        changed, reasons, notes = cls.victim_defaults(cfg, payload)
        if cfg.autocast == "auto":
            mode = changed["autocast"] = cls.auto_autocast(dataclasses.replace(cfg, **changed), device)
            reasons += [AUTOCAST_REASON] if mode != "none" else []
        if cfg.compile == "auto":
            mode = changed["compile"] = cls.auto_compile(dataclasses.replace(cfg, **changed), payload, device)
            reasons += [COMPILE_REASON] if mode != "none" else []
        if not changed:
            return cfg, None
        out = dataclasses.replace(cfg, **changed)
        if not reasons:  # resolved without a choice worth a record (remove_init "auto" without theta_0)
            return out, None
        fields = {k: to_dict(v) for k, v in changed.items() if (k, v) not in UNCHOSEN}
        return out, {"fields": fields, "reason": "; ".join(reasons), **notes}

    @classmethod
    def victim_defaults(cls, cfg: AttackConfig, payload: Payload) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """(fields to change, the reasons, further notes for the record): ``remove_init = "auto"`` resolved
        (:meth:`default_removal`), ``dtype = "auto"`` (:meth:`auto_dtype`), and a nonzero default ``tv`` set to 0
        where the inputs are not images (a total variation across the features of a vector means nothing) or
        sample splitting is on (:data:`TV_REASON`).  Methods add their own (power victims, threat levels)."""
        changed: dict[str, Any] = {}
        reasons: list[str] = []
        if cfg.tv and cfg.tv == type(cfg)().tv:
            why = "vector" if min(payload.spec.input_shape[-2:]) == 1 else "split" if cfg.split.enabled else None
            if why:
                changed["tv"] = 0.0
                reasons.append(TV_REASON[why])
        if cfg.remove_init == "auto":
            mode = changed["remove_init"] = cls.default_removal(cfg, payload)
            reasons += [] if mode == "none" else [INIT_REASON[mode]]
        if cfg.dtype == "auto":
            dtype = changed["dtype"] = cls.auto_dtype(cfg, payload)
            reasons += [FP32_REASON] if dtype == "float32" else []
        return changed, reasons, {}

    @classmethod
    def auto_dtype(cls, cfg: AttackConfig, payload: Payload) -> str:
        """What ``dtype = "auto"`` runs in: float32 where the work of an iteration, m * n_params (m = 2n by
        default), reaches the method's :attr:`fp32_work`, float64 otherwise.  Where the iteration is large,
        float32 halves its cost on CPU and recovers as much per iteration; where it is small, per-operation
        overhead decides and float32 is no faster (bench/RESULTS.md, issue 28)."""
        if cls.fp32_work is None:
            return "float64"
        m = cfg.m or cls.candidates_per_sample * (payload.n_train or 0)
        return "float32" if m * payload.spec.n_params() >= cls.fp32_work else "float64"

    @classmethod
    def auto_autocast(cls, cfg: AttackConfig, device: torch.device | str) -> str:
        """What ``autocast = "auto"`` runs with: bfloat16 for a float32 run on a device whose bfloat16 matrix
        products are at least twice as fast as float32's (:func:`trainrecon.runtime.fast_bfloat16`: AMX on Intel
        CPUs, tensor cores on CUDA), "none" otherwise.  On the n = 100 MNIST victims it recovers as much or more in
        the same wall-clock (bench/RESULTS.md, "bfloat16 products")."""
        return "bfloat16" if cfg.dtype == "float32" and fast_bfloat16(torch.device(device)) else "none"

    @classmethod
    def compilable(cls, cfg: AttackConfig) -> bool:
        """Whether this run's objective can be compiled (``compile``): a weighted-sum method (one with a
        :attr:`compile_work`) whose surrogate stays fixed over the run (a schedule would recompile it at every
        change)."""
        return cls.compile_work is not None

    @classmethod
    def auto_compile(cls, cfg: AttackConfig, payload: Payload, device: torch.device | str) -> str:
        """What ``compile = "auto"`` runs with: "inductor" where the run is :meth:`compilable`, the work of an
        iteration (m * n_params, m = 2n by default) reaches :attr:`compile_work` (below it the compiling costs
        more than it saves in a run of minutes) and ``torch.compile`` works on the device
        (:func:`trainrecon.runtime.compiler_works`); "none" otherwise."""
        m = cfg.m or cls.candidates_per_sample * (payload.n_train or 0)
        if not cls.compilable(cfg) or m * payload.spec.n_params() < cls.compile_work:
            return "none"
        return "inductor" if compiler_works(torch.device(device)) else "none"

    def check(self) -> None:
        """Refuse a victim this method cannot attack (one line)."""

    def labels(self, m: int) -> torch.Tensor | None:
        """The candidates' fixed labels, or None."""
        return None

    def weights(self, M: torch.Tensor, m0: int) -> torch.Tensor:
        """Per-candidate weights w (m, K) from the multipliers."""
        raise NotImplementedError

    def prior(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def surrogate(self, it: int) -> Surrogate:
        raise NotImplementedError

    def multipliers(self, m: int, g: torch.Generator) -> torch.Tensor:
        """Initial multipliers, drawn after x from the same generator."""
        raise NotImplementedError

    def optimisers(self) -> tuple[Optimizer, Optimizer]:
        raise NotImplementedError

    def report(self) -> dict[str, Any] | None:
        """What the method chose for this run beyond its config, for loss.json's ``method_report`` (None: nothing);
        it travels in every checkpoint, so a resumed run takes it back (:meth:`restore`) instead of choosing again."""
        return None

    def compile_report(self) -> dict[str, Any] | None:
        """For a run with ``compile = "inductor"``: whether its objective's pass and its prior ran compiled, and
        where the compiler failed, why (the eager passes ran instead: same objective, more seconds per iteration);
        None otherwise."""
        if self.cfg.compile != "inductor":
            return None
        parts = {"compiled": self._compiled, "prior_compiled": self._compiled_prior and self._compiled_prior[1]}
        ran = {k: c is not None and c.failure is None for k, c in parts.items()}
        return {**ran, "failure": next((c.failure for c in parts.values() if c is not None and c.failure), None)}

    def restore(self, report: dict[str, Any] | None) -> None:
        """Take back a checkpoint's :meth:`report` (a resumed run), before :meth:`init`."""

    @classmethod
    def replayed(cls, cfg: AttackConfig, report: dict[str, Any] | None) -> AttackConfig:
        """The config that reruns a finished run as it ran, given its :meth:`report` (``loss.json``'s
        ``method_report``): what the method chose during the run (a searched learning rate) fixed in it.  The
        truth-start control replays a run this way.  By default the config itself."""
        return cfg

    # -- shared --------------------------------------------------------------------------------------------------
    def draw(self, m: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """m starting points x ~ init_scale N(0, 1) (m, d) in centred space, then their multipliers, from ``g``
        (float64, on the CPU): the initialisation, and the fresh starts of re-seeded candidates."""
        X = torch.randn(m, self.payload.spec.input_dim, generator=g, dtype=torch.float64) * self.cfg.init_scale
        return X, self.multipliers(m, g)

    def init(self, m: int) -> CandidateSet:
        """:meth:`draw` from ``cfg.seed``, with the method's labels; with ``restarts`` R > 1, R blocks of m, block r
        drawn from ``cfg.seed`` + r."""
        like = self.payload.params[0]
        R = self.cfg.restarts
        drawn = [self.draw(m, torch.Generator().manual_seed(self.cfg.seed + r)) for r in range(R)]
        X, M = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        labels = self.labels(m)
        labels = None if labels is None else torch.cat([labels] * R).to(like.device)
        return CandidateSet(X.to(like), M.to(like), labels, restarts=R)

    def truth_slots(self, cands: CandidateSet, labels: np.ndarray | None, k: int) -> list[int]:
        """The slot of each of the first min(k, m) given images: the first free slot of its label
        (:func:`start_slots`)."""
        return start_slots(cands.labels, labels, cands.m, k)

    def start_at(self, cands: CandidateSet, x: torch.Tensor, labels: np.ndarray | None) -> list[int]:
        """Put the given centred images x (k, d) into their slots (:meth:`truth_slots`), in place: the truth-start
        control's start; with restarts, in every block.  Returns the slots."""
        per = cands.m // cands.restarts  # every restart starts there
        slots = [r * per + j for r, block in enumerate(cands.blocks())
                 for j in self.truth_slots(block, labels, x.shape[0])]
        X = cands.x.detach().clone()
        X[slots] = x[: len(slots) // cands.restarts].repeat(cands.restarts, 1).to(X)
        cands.x = X
        return slots

    def refit_residual(self, cands: CandidateSet) -> float | None:
        """The candidates' own stationarity residual, refit with the exact activation:

            min_w || target - sum_jk w_jk grad_theta phi_k(theta_at; x_j) || / || target ||,

        w >= 0 for the KKT form (free otherwise), by the victim's parameters (normalised or not: it is scale
        free).  It is the quantity a victim's train.json reports for its own training set, so it compares runs
        made with different surrogates, multipliers and priors on one yardstick.  None when the per-candidate
        gradients (m x P floats) would take more than a quarter of the free memory."""
        p = self.payload
        free = available_bytes(p.params[0].device)
        rows = cands.m * (p.spec.n_outputs if self.form.name == "ntk" else 1)  # the NTK form: one row per output
        if free is not None and 16 * rows * p.spec.n_params() > free / 4:
            return None
        x = cands.x.detach().double()
        labels = None if cands.labels is None else cands.labels.detach()
        params = [t.double() for t in p.params]
        init = None if p.init_params is None else [t.double() for t in p.init_params]
        at = None if self.points[0] is p.params and len(self.points) == 1 else \
            tuple([t.double() for t in point] for point in self.points)
        target = [t.double() for t in self.outer.target]
        blind = init if self.removal == "project" else None
        return self.form.residual(p.spec, params, x, labels, init=init, grads_at=at, target=target,
                                  blind_to=blind)["kkt_residual"]

    def objective(self, it: int, cands: CandidateSet,
                  surrogate: Surrogate | None = None) -> WeightedSumObjective | Restarts:
        """The objective at iteration ``it`` for ``cands``; ``surrogate`` replaces the method's activation (the
        smooth model sample splitting may take its curvature from); for a set of several restarts, the sum of
        each block's own objective (:class:`~trainrecon.objective.restarts.Restarts`)."""
        if cands.restarts > 1:
            return Restarts([self.objective(it, block, surrogate) for block in cands.blocks()])
        spec, m0 = self.payload.spec, cands.m0
        surrogate = self.surrogate(it) if surrogate is None else surrogate

        k = len(self.points)
        outer = self.outer if k == 1 else SummedCopies(self.outer, k)
        autocast = torch.bfloat16 if self.cfg.autocast == "bfloat16" else None
        fused = fused_prior = None
        if self.cfg.compile == "inductor" and surrogate == self.surrogate(0):  # the run's own surrogate (not one
            if self._compiled is None:  # sample splitting takes its curvature from): one compiled pass, built once
                self._compiled = CompiledPass(self.features(surrogate), outer, autocast)
            if self._compiled_prior is None or self._compiled_prior[0] != m0:  # and its prior, once per m0
                self._compiled_prior = (m0, CompiledPrior(self.regulariser(m0)))
            fused, fused_prior = self._compiled, self._compiled_prior[1]
        return WeightedSumObjective(self.at, outer, self.features(surrogate), lambda M: self.weights(M, m0),
                                    self.regulariser(m0), cands.labels, self.cfg.chunk_size,
                                    first_layer=spec.first_layer, autocast=autocast, fused=fused,
                                    fused_prior=fused_prior)

    def features(self, surrogate: Surrogate):
        """phi(params, X, labels) (m, K): the form's features of the network under ``surrogate``, averaged over the
        kernel points (``params`` holds each point's list in turn)."""
        spec, form = self.payload.spec, self.form
        k, n = len(self.points), len(self.points[0])

        def phi(params, X, labels):
            if k == 1:
                return form.features(spec.forward(params, X, surrogate), labels)
            return sum(form.features(spec.forward(params[i * n:(i + 1) * n], X, surrogate), labels)
                       for i in range(k)) / k

        return phi


#: the registered methods by name (CLI ``--method``, experiment files, sweeps): :func:`register` adds one
METHODS: Registry[type[Method]] = Registry("method", config_of=lambda cls: cls.Config)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available by its ``name`` (CLI ``--method``, experiment files)."""
    return METHODS.register(cls.name, cls)


def method_for(cfg: AttackConfig) -> type[Method]:
    """The registered method whose config class is exactly ``cfg``'s type."""
    return METHODS.for_config(cfg)[1]


def method_named(name: str, where: str = "--method") -> type[Method]:
    """The method registered as ``name``; an unknown name is refused in one line naming ``where``."""
    return METHODS.get(name, where)
