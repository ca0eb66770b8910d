"""The training-simulation attack (after SimuDy: Tian et al., ICLR 2025, "Reconstructing training data from
real-world models' trained parameters", reference code BlueBlood6/SimuDy).

An attacker who knows the initial weights theta_0 trains its candidates from theta_0 by a simulation of the
victim's training and asks that the simulated weight change look like the real one
(:class:`~trainrecon.objective.simulation.SimulationObjective`):

    J(X, W) = D( P(theta_S^sim(X, W) - theta_0), P(theta_T - theta_0) ) + box(X) + tv F(0) (1/m0) sum_j TV(x_j + mean),

theta^sim: S steps of the recipe's optimiser (SGD with momentum and weight decay, Adam, AdamW) on the recipe's
loss over the candidates (all of them per step, or ``sim_batch`` at a time), D SimuDy's 1 - cosine (``match``)
or the relative squared distance, P theta_0's direction projected out of each parameter tensor (``remove_init``
``project``, the default: what training kept of theta_0, weight decay's shrinking included, is not asked of the
candidates), the box keeps x + mean in [0, 1] (weight ``box_weight``, per candidate and pixel) and TV is
SimuDy's prior.  Candidates' labels are fixed in class blocks (K outputs; two halves +-1 for one output) or
learned (``labels = "learned"``: the multipliers w_jc >= 0 are candidate j's soft label times its weight in the
simulated loss, descended with ``lr_labels``).  The candidates move by Adam (lr, betas 0.8 / 0.9: SimuDy's).

The simulation is coarser than the training (``steps`` full-batch steps stand for the recipe's epochs of
mini-batch steps): with the recipe (threat level ``recipe``) it runs the recipe's optimiser, loss, momentum and
weight decay; without it (level ``init``) plain SGD on the loss the outputs suggest (cross-entropy, logistic for
one output).  Its learning rate is ``sim_lr`` when given; else it is chosen on the attacker-side loss alone, as
SimuDy chooses an unknown one: each candidate rate (the recipe's times ``sim_lr_factors``, a coarser simulation
needing larger steps; without a recipe ``sim_lr_grid``) runs ``search_iterations`` iterations of this attack from
the same start, and the lowest match D wins (recorded in the run's summary, ``loss.json["method_report"]``).

The candidates start where a cheaper attack on the same payload ends (``warm_start``, default Loo's NTK attack,
which also explains theta_T - theta_0): it runs in memory for ``warm_share`` of ``max_seconds`` (or
``warm_iterations`` without a budget; its seconds count in the run's), and each of this attack's slots takes the
unused candidate of that attack with the largest coefficient for the slot's label (its multiplier's sign for one
output, the label's column for K outputs: theta_T - theta_0 ~ sum_i alpha_i grad f(x_i) weighs a training image
towards its own label).  ``warm_start = "none"``: the random start.  On networks trained as people train them
this start recovered as many images as the random one or more on five of six MLPs (bench/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TrainreconError
from ..models.activations import EXACT, Surrogate
from ..models.recipe import LIKELIHOOD_LOSSES
from ..models.stationarity import NTK
from ..objective.candidates import CandidateSet
from ..objective.simulation import Optimiser, SimulationObjective
from .. import runtime
from ..hooks.budget import time_budget
from .buzaglo import block_labels
from .haim import haim_labels
from .method import METHODS, AttackConfig, Method, Tunable, box_penalty, register, total_variation
from .normalisation import Normalise
from .optim import Adam
from .plan import plan_run
from .runner import run_attack


@dataclass
class SimulationConfig(AttackConfig):
    """Hyper-parameters of the training-simulation attack (module docstring).  ``steps``: simulated optimiser
    steps; ``sim_batch``: candidates per simulated step (0: all); ``sim_lr``: the simulation's learning rate (0:
    the best, after ``search_iterations`` each, of the recipe's times ``sim_lr_factors``, or without a recipe of
    ``sim_lr_grid``; under a time budget the search takes at most ``search_share`` of ``max_seconds``, every rate
    running as many iterations as the first one did in its part); ``alpha > 0``: the simulated network's ReLUs take Haim's modified-ReLU derivative (0: the
    exact network); ``adam_smoothing > 0``: a simulated Adam's eps raised to eps + adam_smoothing x the RMS of each
    parameter tensor's first simulated gradient (:class:`~trainrecon.objective.simulation.Optimiser`);
    ``replay_epochs = E > 0``: instead of ``steps`` full-batch steps, the recipe's own first E epochs, batch by batch
    in its recorded order (:meth:`~trainrecon.models.recipe.Recipe.batch_order`) at its learning rate (``sim_lr``
    when given), candidate j standing for training image j (m = n, labels learned: whose label is j's is not
    disclosed); ``checkpoint_steps = k > 0``: the simulation's graph is kept k simulated steps at a time, each
    segment run again in the backward pass (the same derivatives for about one more simulation an iteration;
    :meth:`Simulation.graph_bytes`), 0 (the default): the whole graph where it fits in the memory available, else
    the k that needs least (the run's choice, in loss.json's ``method_report``); k >= S: the whole graph."""

    iterations: int = 1000
    lr: float = 0.01
    init_scale: float = 0.1
    dtype: Literal["float64", "float32"] = "float32"
    normalise: Normalise = "none"  # the recipe's learning rate holds at the victim's own scale only
    steps: int = 20
    sim_batch: int = 0
    sim_lr: float = 0.0
    sim_lr_factors: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0])
    sim_lr_grid: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0])
    search_iterations: int = 50
    search_share: float = 0.25
    match: Literal["cosine", "squared"] = "cosine"
    labels: Literal["fixed", "learned"] = "fixed"
    lr_labels: float = 0.01
    box_weight: float = 1.0
    alpha: float = 0.0
    adam_beta1: float = 0.8
    adam_beta2: float = 0.9
    warm_start: Literal["none", "loo-ntk"] = "loo-ntk"
    warm_share: float = 0.25
    warm_iterations: int = 1000
    adam_smoothing: float = 0.0
    replay_epochs: int = 0
    checkpoint_steps: int = 0

    #: runs recorded before the warm start existed started at random
    BEFORE: ClassVar[dict[str, Any]] = {**AttackConfig.BEFORE, "warm_start": "none"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.restarts != 1:
            raise TrainreconError(f"attack.restarts: the simulation runs one descent (its candidates are the training "
                                  f"set one to one), got {self.restarts}")
        if self.steps < 1:
            raise TrainreconError(f"attack.steps: need at least one simulated step, got {self.steps}")
        if self.sim_batch < 0 or self.sim_lr < 0 or self.box_weight < 0 or self.alpha < 0 or self.lr_labels < 0:
            raise TrainreconError("attack.sim_batch, sim_lr, box_weight, alpha and lr_labels must be >= 0")
        for name in ("sim_lr_grid", "sim_lr_factors"):
            if not getattr(self, name) or any(not v > 0 for v in getattr(self, name)):
                raise TrainreconError(f"attack.{name}: need positive numbers, got {getattr(self, name)}")
        if self.search_iterations < 1:
            raise TrainreconError(f"attack.search_iterations: must be >= 1, got {self.search_iterations}")
        if not 0 < self.search_share <= 1:
            raise TrainreconError(f"attack.search_share: a share of attack.max_seconds in (0, 1], got {self.search_share}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise TrainreconError("attack.adam_beta1 and adam_beta2 must be in [0, 1)")
        if self.adam_smoothing < 0:
            raise TrainreconError(f"attack.adam_smoothing: must be >= 0 (0: the recipe's eps), got {self.adam_smoothing}")
        if not 0 < self.warm_share < 1 or self.warm_iterations < 1:
            raise TrainreconError("attack.warm_share must be in (0, 1) and attack.warm_iterations >= 1")
        if self.solve_multipliers_every:
            raise TrainreconError("attack.solve_multipliers_every: the simulation's multipliers are its candidates' "
                                  "labels, not a weighted sum's weights; nothing to solve")
        if self.deep_weight != 1:
            raise TrainreconError("attack.deep_weight: weighs a weighted sum's stationarity residual per layer; the "
                                  "simulation matches its weight change by cosine (leave it at 1)")
        if self.split.enabled and self.sim_batch:
            raise TrainreconError("attack.split: sample splitting on the simulation needs every candidate in every "
                                  "simulated step (attack.sim_batch = 0)")
        if self.checkpoint_steps < 0:
            raise TrainreconError(f"attack.checkpoint_steps: must be >= 0 (0: only where the whole graph would not "
                                  f"fit), got {self.checkpoint_steps}")
        if self.replay_epochs < 0:
            raise TrainreconError(f"attack.replay_epochs: must be >= 0 (0: no replay), got {self.replay_epochs}")
        if self.replay_epochs and (self.split.enabled or self.sim_batch):
            raise TrainreconError("attack.replay_epochs: a replay's candidate j is training image j in the recipe's "
                                  "batches; it takes no sample splitting and no attack.sim_batch")
        if self.replay_epochs and self.labels != "learned":
            raise TrainreconError("attack.labels: in a replay candidate j stands for training image j, whose label is "
                                  "not disclosed; use 'learned'")


class _Labels:
    """Adam on the soft labels, kept >= 0 (a projected step)."""

    def __init__(self, lr: float, b1: float, b2: float) -> None:
        self.adam = Adam(lr, b1, b2)

    def step(self, p: torch.Tensor, g: torch.Tensor, state: dict) -> torch.Tensor:
        return self.adam.step(p, g, state).clamp_min(0)


class _Fixed:
    """The multipliers of fixed labels do not move."""

    def step(self, p: torch.Tensor, g: torch.Tensor, state: dict) -> torch.Tensor:
        return p


@register
class Simulation(Method):
    """Train the candidates from theta_0 by a simulation of the recipe; match the simulated weight change."""

    name = "simulation"
    Config = SimulationConfig
    form = NTK  # the displacement theta_T - theta_0 is what it explains
    candidates_per_sample = 1  # m = n: the candidates stand in for the training set in the simulated training
    cfg: SimulationConfig
    search_space = {"lr": Tunable("relative", 0.1, 10.0), "init_scale": Tunable("log", 0.01, 1.0),
                    "tv": Tunable("log", 0.003, 1.0)}

    @classmethod
    def auto_autocast(cls, cfg, device) -> str:
        """Every simulated step in the run's dtype: "auto" is "none" here (:meth:`check`)."""
        return "none"

    def check(self) -> None:
        p = self.payload
        if p.init_params is None:
            raise TrainreconError("the simulation attack trains its candidates from the initial weights theta_0 "
                                  "(threat level 'init' or 'recipe': trainrecon import --init / --init-seed)")
        if self.cfg.remove_init == "none":
            raise TrainreconError("attack.remove_init: the simulation matches the displacement theta_T - theta_0; use "
                                  "'subtract' or 'project'")
        if self.cfg.init_tolerance:
            raise TrainreconError("attack.init_tolerance: stands in for an unknown theta_0; the simulation knows it")
        if self.cfg.autocast == "bfloat16":
            raise TrainreconError("attack.autocast: for the weighted-sum methods; the simulation runs every step in "
                                  "its dtype (a replay can amplify rounding: bench/RESULTS.md)")
        if self.cfg.normalise != "none" and p.spec.homogeneity().degree is not None:  # 'auto' would rescale theta
            raise TrainreconError("attack.normalise: the simulation trains at the victim's own scale (the recipe's "
                                  "learning rate holds there only); leave it 'none'")
        r = p.recipe
        loss = r.loss if r is not None else ("logistic" if p.spec.n_outputs == 1 else "cross_entropy")
        if loss == "logistic" and p.spec.n_outputs != 1:
            raise TrainreconError(f"recipe.loss: 'logistic' needs a one-output network, this one has "
                                  f"{p.spec.n_outputs}")
        if loss == "cross_entropy" and p.spec.n_outputs < 2:
            raise TrainreconError("recipe.loss: 'cross_entropy' needs several outputs; a one-output network trains "
                                  "on 'logistic' or 'mse'")
        if loss not in LIKELIHOOD_LOSSES and self.cfg.labels == "learned":
            raise TrainreconError(f"attack.labels: learned soft labels need a likelihood loss "
                                  f"({' or '.join(LIKELIHOOD_LOSSES)}), not {loss}")
        self.loss_kind = loss
        self.sim_lr = self.cfg.sim_lr
        self.order = self.replay_order()
        if self.order is not None and not self.sim_lr:
            self.sim_lr = r.lr  # a replay runs at the recipe's own rate: nothing to search
        self.search: dict[str, Any] | None = None
        self.segment = 0  # the whole simulated graph until init(m) knows m (segment_steps)
        self.warm: dict[str, Any] | None = None
        self.resumed = False
        self._mu = p.mean_flat().reshape(1, -1)

    @classmethod
    def graph_shape(cls, payload, m: int, cfg: AttackConfig) -> tuple[int, int]:
        """(S, b): the simulated steps and the rows of each, a replay's recipe steps and batch, or the coarse
        simulation's ``steps`` and ``sim_batch`` (or all m)."""
        r, n = payload.recipe, payload.n_train
        if cfg.replay_epochs and r is not None and n:
            return r.first_epochs_steps(n, cfg.replay_epochs), n if r.full_batch(n) else r.batch_size
        return cfg.steps, cfg.sim_batch if 0 < cfg.sim_batch < m else m

    @classmethod
    def graph_bytes(cls, payload, m: int, cfg: AttackConfig, k: int) -> float:
        """The simulation's graph, kept for the backward pass: over all S simulated steps of b rows each
        (:meth:`graph_shape`),

            item S (6 P + 4 b sum_l a_l),

        parameters, gradient and optimiser state per step, and the step's activations with their derivatives
        (measured on the bench, one value_and_grad of a 100-step replay: 1.8 P per step under SGD with momentum,
        4.6 P under Adam, about 2 b sum_l a_l on a CNN whose activations dominate); kept k steps at a time
        (``checkpoint_steps``, 0 < k < S), the inputs of every segment and one segment's graph,

            item (ceil(S / k) 4 P + k (6 P + 4 b sum_l a_l))."""
        steps, P, per_step, item = cls._graph_sizes(payload, m, cfg)
        if 0 < k < steps:
            return item * (math.ceil(steps / k) * 4 * P + k * per_step)
        return item * steps * per_step

    @classmethod
    def _graph_sizes(cls, payload, m: int, cfg: AttackConfig) -> tuple[int, int, int, int]:
        """(S, P, 6 P + 4 b sum_l a_l, item) of :meth:`graph_bytes`."""
        spec = payload.spec
        steps, rows = cls.graph_shape(payload, m, cfg)
        P = spec.n_params()
        return steps, P, 6 * P + 4 * rows * sum(spec.activation_sizes()), 4 if cfg.dtype == "float32" else 8

    @classmethod
    def least_segment(cls, payload, m: int, cfg: AttackConfig) -> int:
        """The k whose :meth:`graph_bytes` is least (0, the whole graph, where no segment length keeps less)."""
        steps, P, per_step, _ = cls._graph_sizes(payload, m, cfg)
        k = np.arange(1, steps)
        if not len(k):
            return 0
        sizes = np.ceil(steps / k) * 4 * P + k * per_step
        best = int(np.argmin(sizes))  # the first, the shortest, of equal sizes
        return int(k[best]) if sizes[best] < steps * per_step else 0

    @classmethod
    def segment_steps(cls, payload, m: int, cfg: AttackConfig, free: int | None) -> int:
        """The k of ``checkpoint_steps`` a run of m candidates (at most: sample splitting's growth) uses: the
        config's; for 0, none (0: the whole graph) where the whole graph fits in ``free`` bytes (or free is
        unknown), else :meth:`least_segment`."""
        if cfg.checkpoint_steps:
            return cfg.checkpoint_steps
        if free is None or super().memory_bytes(payload, m, cfg) + cls.graph_bytes(payload, m, cfg, 0) <= free:
            return 0
        return cls.least_segment(payload, m, cfg)

    @classmethod
    def memory_bytes(cls, payload, m: int, cfg: AttackConfig, free: int | None = None) -> float:
        """The generic estimate (:meth:`Method.memory_bytes`) plus the simulation's graph (:meth:`graph_bytes`) as
        a run that finds ``free`` bytes keeps it (:meth:`segment_steps`): whole where it fits, else in the
        segments that keep least (without ``free``, the least)."""
        k = cls.segment_steps(payload, m, cfg, free) if free is not None else \
            cfg.checkpoint_steps or cls.least_segment(payload, m, cfg)
        return super().memory_bytes(payload, m, cfg) + cls.graph_bytes(payload, m, cfg, k)

    @classmethod
    def default_removal(cls, cfg: AttackConfig, payload) -> str:
        return "project" if payload.init_params is not None else "none"

    def replay_order(self) -> list[torch.Tensor] | None:
        """The replayed steps' candidate rows (``replay_epochs`` epochs of the recipe's batches, at most its whole
        training), or None; refused in one line without the recipe, n or the batch order's seed."""
        E, p = self.cfg.replay_epochs, self.payload
        if not E:
            return None
        if p.recipe is None:
            raise TrainreconError("attack.replay_epochs: replays the recipe's own batches; needs the recipe (threat "
                                  "level 'recipe': trainrecon import --recipe)")
        if not p.n_train:
            raise TrainreconError("attack.replay_epochs: replays the training's batches of n images; n is not "
                                  "disclosed")
        n = p.n_train
        return p.recipe.batch_order(n, p.recipe.first_epochs_steps(n, E))

    def optimiser(self, lr: float) -> Optimiser:
        """The simulated optimiser: the recipe's (at ``lr``), or plain SGD without one."""
        r = self.payload.recipe
        if r is None:
            return Optimiser("sgd", lr)
        return Optimiser(r.optimizer, lr, r.momentum, r.nesterov, r.weight_decay, tuple(r.betas), r.eps,
                         self.cfg.adam_smoothing)

    def labels(self, m: int) -> torch.Tensor:
        k = self.payload.spec.n_outputs
        if self.order is not None and m != self.payload.n_train:
            raise TrainreconError(f"attack.m: a replay's candidate j stands for training image j; need m = n = "
                                  f"{self.payload.n_train}, got {m}")
        if k == 1:
            if m % 2:
                raise TrainreconError(f"attack.m: a one-output victim's candidates come in two label halves; need an "
                                      f"even m, got {m}")
            return haim_labels(m, torch.float64, "cpu")
        return torch.as_tensor(block_labels(m, k))

    def multipliers(self, m: int, g: torch.Generator) -> torch.Tensor:
        """w_jc: the one-hot row of candidate j's label (cross-entropy: K columns; logistic: columns +1, -1; mse:
        one column of ones)."""
        lab = self.labels(m)
        if self.loss_kind == "mse":
            return torch.ones(m, 1, dtype=torch.float64)
        if self.order is not None:  # a replayed slot's label is unknown: every class alike, learned from there
            k = 2 if self.loss_kind == "logistic" else self.payload.spec.n_outputs
            return torch.full((m, k), 1.0 / k, dtype=torch.float64)
        return self.label_rows(lab)

    def label_rows(self, y: torch.Tensor) -> torch.Tensor:
        """The one-hot rows w_j of labels y (float64): logistic, columns +1 and -1; cross-entropy, K columns."""
        if self.loss_kind == "logistic":
            return torch.stack([(y > 0), (y < 0)], 1).double()
        return F.one_hot(y.long(), self.payload.spec.n_outputs).double()

    def weights(self, M: torch.Tensor, m0: int) -> torch.Tensor:
        return M.clamp_min(0)

    def truth_slots(self, cands: CandidateSet, labels: np.ndarray | None, k: int) -> list[int]:
        """In a replay image i goes into slot i, the slot that stands for training image i in the recipe's batches
        (otherwise :meth:`Method.truth_slots`)."""
        return super().truth_slots(cands, labels, k) if self.order is None else list(range(min(cands.m, k)))

    def start_at(self, cands: CandidateSet, x: torch.Tensor, labels: np.ndarray | None) -> list[int]:
        """:meth:`Method.start_at`; in a replay, given the images' labels, each slot's soft label becomes its
        image's label."""
        slots = super().start_at(cands, x, labels)
        if self.order is not None and labels is not None:
            M = cands.multipliers.detach().clone()
            M[slots] = self.label_rows(torch.as_tensor(np.asarray(labels)[: len(slots)])).to(M)
            cands.multipliers = M
        return slots

    def prior(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        return self.cfg.box_weight * box_penalty(X, -self._mu, 1 - self._mu) / X.shape[1]

    def surrogate(self, it: int) -> Surrogate:
        return Surrogate("modified_relu", self.cfg.alpha) if self.cfg.alpha else EXACT

    def optimisers(self):
        c = self.cfg
        labels = _Labels(c.lr_labels, c.adam_beta1, c.adam_beta2) if c.labels == "learned" else _Fixed()
        return Adam(c.lr, c.adam_beta1, c.adam_beta2), labels

    def refit_residual(self, cands: CandidateSet) -> float | None:
        return None  # its yardstick is its own match D (loss.json's relative_stationarity)

    def sample_loss(self, surrogate: Surrogate):
        """The simulated per-candidate loss sum_c w_jc loss_c(f(theta; x_j)) (:data:`~trainrecon.objective.
        simulation.LossFn`) of the recipe's loss."""
        spec, kind = self.payload.spec, self.loss_kind
        offset = self.payload.recipe.label_offset if self.payload.recipe is not None else 0.0

        def loss(params, X, W, labels):
            out = spec.forward(params, X, surrogate)
            if kind == "cross_entropy":
                return -(W * F.log_softmax(out, dim=1)).sum(1)
            if kind == "logistic":
                f = out[:, 0]
                return W[:, 0] * F.softplus(-f) + W[:, 1] * F.softplus(f)
            t = labels.to(out).reshape(-1, 1) if out.shape[1] == 1 else \
                F.one_hot(labels.long(), out.shape[1]).to(out) - offset
            return W[:, 0] * ((out - t) ** 2).mean(1)

        return loss

    def objective(self, it: int, cands: CandidateSet, surrogate: Surrogate | None = None) -> SimulationObjective:
        p, m0 = self.payload, cands.m0
        surrogate = self.surrogate(it) if surrogate is None else surrogate
        return SimulationObjective(
            list(p.init_params), self.outer.target, list(p.init_params) if self.removal == "project" else None,
            self.sample_loss(surrogate), self.optimiser(self.sim_lr), lambda M: self.weights(M, m0),
            self.regulariser(m0),
            cands.labels, m0, self.cfg.steps, self.cfg.sim_batch, self.cfg.match, self.cfg.chunk_size,
            first_layer=p.spec.first_layer, order=self.order, segment=self.segment)

    def tv_prior(self, X: torch.Tensor, M: torch.Tensor, m0: int) -> torch.Tensor:
        """The TV prior relative to D's scale (D(0) = 1 for both matches), each candidate's term weighted by its
        weight in the simulated loss, w_j = sum_c W_jc (1 for fixed labels until a split halves it):

            tv (1/m0) sum_j w_j TV(x_j + mean),

        a sum over the set's weighted points, so that a split at eps = 0 leaves it unchanged (two children of
        half the weight) and splitting is judged by the match alone."""
        tv = total_variation(X + self._mu.reshape(-1), self.payload.spec.input_shape)
        return self.cfg.tv * (self.weights(M, m0).sum(1).to(tv) * tv).sum() / m0

    def init(self, m: int) -> CandidateSet:
        """The method's start (random, or where ``warm_start`` ends: :meth:`warm_started`); without ``sim_lr``
        then the search of the module docstring, from this very start.  A resumed run does neither.  First, the
        segments its graph is kept in (:meth:`segment_steps`, for the memory free on the run's device)."""
        p, c = self.payload, self.cfg
        k = self.segment_steps(p, c.largest_m(m), c, runtime.available_bytes(p.params[0].device))
        self.segment = k if 0 < k < self.graph_shape(p, c.largest_m(m), c)[0] else 0  # k >= S: the whole graph
        cands = super().init(m)
        if self.cfg.warm_start != "none" and not self.resumed:
            cands, self.warm = self.warm_started(cands)
        if not self.sim_lr:
            self.sim_lr, self.search = self.search_lr(cands)
        return cands

    def warm_started(self, cands: CandidateSet) -> tuple[CandidateSet, dict[str, Any]]:
        """``cands`` with each slot at the candidate of the ``warm_start`` attack (run here, in memory, on this
        payload) that weighs most towards the slot's label; unmatched slots keep their random start."""
        c = self.cfg
        budget = c.warm_share * c.max_seconds
        Warm = METHODS[c.warm_start].Config
        warm = Warm(given=c.given, seed=c.seed, m=2 * cands.m, dtype="float64", max_seconds=budget,
                    iterations=10 ** 9 if budget else c.warm_iterations, log_every=10 ** 9, checkpoint_every=10 ** 9)
        t0 = time.perf_counter()
        plan = plan_run(self.payload, warm, self.payload.params[0].device)
        rec = run_attack(plan.with_hooks(time_budget(budget)), device=self.payload.params[0].device,
                         log=lambda *a: None, refit=False)
        w = rec.multipliers.double().reshape(rec.m, -1)
        one = w.shape[1] == 1  # one output: the coefficient's sign is the label (-1: column 0, +1: column 1)
        score = w * torch.tensor([[-1.0, 1.0]], dtype=w.dtype) if one else w
        slots = (cands.labels > 0).long() if one else cands.labels.long()  # a slot's column of score
        x, used = cands.x.clone(), set()
        for j, col in enumerate(slots.tolist()):
            order = [int(k) for k in torch.argsort(score[:, col], descending=True) if int(k) not in used]
            if order:
                used.add(order[0])
                x[j] = rec.x[order[0]].reshape(-1).to(x)
        report = {"method": c.warm_start, "iterations": rec.stats["iterations_done"],
                  "seconds": time.perf_counter() - t0, "started": len(used), "of": cands.m}
        return CandidateSet(x, cands.multipliers, cands.labels), report

    def search_lr(self, start: CandidateSet) -> tuple[float, dict[str, Any]]:
        """The candidate learning rate whose short run (``search_iterations`` of this attack from ``start``) ends
        with the lowest match D; a diverging one counts as infinite."""
        r = self.payload.recipe
        grid = [f * r.lr for f in self.cfg.sim_lr_factors] if r is not None else list(self.cfg.sim_lr_grid)
        found = {}
        each = self.cfg.search_iterations
        share = self.cfg.search_share * self.cfg.max_seconds / len(grid)  # seconds per rate (0: no budget)
        capped = False
        for lr in grid:
            self.sim_lr = lr
            c = CandidateSet(start.x.clone(), start.multipliers.clone(), start.labels)
            opt_x, opt_m = self.optimisers()
            d = math.inf
            t0 = time.perf_counter()
            for it in range(each):
                values, gx, gm = self.objective(it, c).value_and_grad(c.x, c.multipliers)
                if not np.isfinite(values["total"]):
                    d = math.inf
                    break
                c.x = opt_x.step(c.x, gx, c.state_x)
                c.multipliers = opt_m.step(c.multipliers, gm, c.state_m)
                d = values["stationarity"]
                if share and not capped and time.perf_counter() - t0 > share:  # its part of the budget is spent:
                    each, capped = it + 1, True  # every other rate runs as many iterations
                    break
            found[lr] = d
        best = min(found, key=lambda k: found[k])
        if not math.isfinite(found[best]):
            raise TrainreconError(f"attack.{'sim_lr_factors' if r is not None else 'sim_lr_grid'}: the simulation "
                                  "diverged at every learning rate tried; give smaller ones (or attack.sim_lr)")
        what = "the recipe's times sim_lr_factors" if r is not None else "sim_lr_grid (no recipe)"
        return best, {"sim_lr": best, "tried": {repr(k): (v if math.isfinite(v) else None) for k, v in found.items()},
                      "iterations_each": each,
                      "reason": f"the simulation's learning rate is the one of {what} with the lowest match D after a "
                                "short run (attacker-side loss only)"}

    @classmethod
    def replayed(cls, cfg: SimulationConfig, report: dict[str, Any] | None) -> SimulationConfig:
        """The run's searched learning rate as ``sim_lr`` (a replay runs no second search), and no warm start
        (a replay starts where it is put)."""
        cfg = dataclasses.replace(cfg, warm_start="none")
        if report and not cfg.sim_lr and report.get("sim_lr"):
            return dataclasses.replace(cfg, sim_lr=float(report["sim_lr"]))
        return cfg

    def restore(self, report: dict[str, Any] | None) -> None:
        """A resumed run keeps the learning rate its search chose (no second search) and its candidates (no warm
        start)."""
        self.resumed = True
        self.warm = (report or {}).get("warm_start")
        if report and not self.cfg.sim_lr and report.get("sim_lr"):
            self.sim_lr, self.search = float(report["sim_lr"]), report.get("lr_search")

    def report(self) -> dict[str, Any] | None:
        """The simulation's settings for loss.json: its optimiser, loss, steps, learning rate and how it was
        chosen."""
        o = self.optimiser(self.sim_lr)
        steps = self.cfg.steps if self.order is None else len(self.order)
        return {"optimizer": o.kind, "loss": self.loss_kind, "steps": steps, "replay_epochs": self.cfg.replay_epochs,
                "sim_lr": self.sim_lr,
                "sim_batch": self.cfg.sim_batch, "momentum": o.momentum, "weight_decay": o.weight_decay,
                "recipe_given": self.payload.recipe is not None, "lr_search": self.search, "warm_start": self.warm,
                "checkpoint_steps": self.segment}
