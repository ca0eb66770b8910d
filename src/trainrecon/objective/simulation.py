"""The training-simulation objective (after SimuDy, Tian et al., ICLR 2025): candidates are *trained on*, from the
victim's initial weights, by a simulation of its training recipe, and the simulated weight change is matched to
the real one.

    theta_0^sim = theta_0,   theta_{t+1}^sim = U_t(theta_t^sim, g_t),   g_t = grad_theta L_t(theta_t^sim),
    L_t(theta)  = (1 / b_t) sum_{j in B_t} sum_c w_jc loss_c(f(theta; x_j)),                 t = 0 .. S - 1,
    J(X, W)     = D( P(theta_S^sim - theta_0), P(theta_T - theta_0) ) + R(X, W),

with U the optimiser's update (:func:`sgd_update`, :func:`adam_update`: PyTorch's SGD with momentum, Nesterov and
L2 weight decay, Adam, AdamW), B_t the candidates of simulated step t and b_t its normaliser: all of them, or
consecutive chunks in turn, with b_t = m0; or a replay of the training's own batches (``order``: candidate j
stands for training image j, B_t the indices of the training's step t, b_t = |B_t|, the batch mean), w_jc >= 0
the weight of candidate j's class c in the simulated loss (a fixed label is a one-hot row; a learned soft label
any row; a split halves it), P the projection of each parameter tensor off a given direction
(theta_0: blind to what training kept of the initialisation) and D either SimuDy's 1 - cosine or the relative
squared distance.  The simulation is differentiable end to end (``create_graph``), so dJ/dX and dJ/dW are exact.

**Sample splitting.** The first variation of J in candidate j's weight is, with the adjoints
gamma_t = dJ/dg_t of the simulated gradients held fixed (they carry every later step's dependence on g_t),

    h_j(x) = sum_{t: j in B_t} (1 / b_t) sum_c w_jc <gamma_t, grad_theta loss_c(f(theta_t^sim; x))>,

the exact analogue of the weighted sum's per-candidate term, one parameter point per simulated step: adding a
sample of weight eps at x changes every g_t with j's batch by eps grad loss(x) / b_t, and J by eps h(x) / w.  Its
Hessian in x is candidate j's splitting matrix; :meth:`SimulationObjective.per_candidate_term` evaluates every
h_j at once (a forward-mode derivative of the loss along gamma_t at every theta_t, differentiable in x), so the
Lanczos machinery of :mod:`trainrecon.refinement.splitting` applies unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import torch
from torch.func import jvp

Params = Sequence[torch.Tensor]
#: (params, X (k, d), W (k, C), labels (k,) or None) -> per-candidate loss (k,): sum_c W_jc loss_c(f(theta; x_j))
LossFn = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class Optimiser:
    """The simulated optimiser: PyTorch's update rules (``sgd``: momentum, dampening 0, ``nesterov``, L2
    ``weight_decay`` added to the gradient; ``adam``: L2 weight decay; ``adamw``: decoupled decay).  ``smoothing =
    s > 0`` smooths Adam's normalisation: each parameter tensor's eps becomes eps + s RMS(d_0), d_0 its first
    simulated gradient, so that m / (sqrt(v) + eps) is a soft sign with a derivative in the gradient
    (Adam's own update is almost exactly sign(g) in its first steps, flat in the candidates)."""

    kind: Literal["sgd", "adam", "adamw"]
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    smoothing: float = 0.0

    def state_keys(self) -> set[str]:
        """The keys of the state its steps keep (one tensor per parameter tensor each)."""
        if self.kind == "sgd":
            return {"buf"} if self.momentum else set()
        return {"m", "v", "eps"} if self.smoothing else {"m", "v"}

    def update(self, theta: list[torch.Tensor], g: list[torch.Tensor], state: dict, t: int) -> list[torch.Tensor]:
        """theta_{t+1} from theta_t, its gradient g_t and the state (updated in place: a new dict entry per step,
        never a tensor modified in place, so the graph stays intact)."""
        if self.kind == "sgd":
            return sgd_update(self, theta, g, state)
        return adam_update(self, theta, g, state, t)


def sgd_update(o: Optimiser, theta, g, state) -> list[torch.Tensor]:
    """torch.optim.SGD: d = g + wd theta; buf = d (first step) or mu buf + d; step = d + mu buf (Nesterov) or buf;
    theta - lr step.  With momentum, one fused step per tensor (:class:`_SGDStep`)."""
    if o.momentum:
        first = "buf" not in state
        hp = (o.lr, o.momentum, o.weight_decay, o.nesterov)
        out = [_SGDStep.apply(p, None if first else b, gi, hp) for p, gi, b in zip(theta, g, state.get("buf", g))]
        state["buf"] = [r[1] for r in out]
        return [r[0] for r in out]
    d = [gi + o.weight_decay * p for gi, p in zip(g, theta)] if o.weight_decay else list(g)
    return [p - o.lr * di for p, di in zip(theta, d)]


class _SGDStep(torch.autograd.Function):
    """One tensor's step of SGD with momentum, (p, buf', g) -> (p - lr step, buf) with d = g + wd p, buf = mu buf'
    + d (buf' = None: the first step, buf = d) and step = d + mu buf (Nesterov) or buf, in three passes (four with
    Nesterov).  The step is linear in its inputs, so its backward needs nothing saved: with dstep = -lr dp_out,

        dbuf = dbuf_out + (mu dstep if Nesterov else dstep),   dd = dbuf (+ dstep if Nesterov),
        dp = dp_out + wd dd,   dbuf' = mu dbuf,   dg = dd,

    each line one pass (the simulated SGD's elementwise work is half an iteration on an MLP).  First derivatives
    only, as :class:`_AdamStep`."""

    @staticmethod
    def forward(p, buf_prev, g, hp):
        lr, mu, wd, nesterov = hp
        d = torch.add(g, p, alpha=wd) if wd else g
        if buf_prev is None:
            buf = d if wd and not nesterov else d.clone()
        else:  # in place on d where d is this step's own temporary and no longer needed
            buf = d.add_(buf_prev, alpha=mu) if wd and not nesterov else torch.add(d, buf_prev, alpha=mu)
        step = torch.add(d, buf, alpha=mu) if nesterov else buf
        return torch.add(p, step, alpha=-lr), buf

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.first, ctx.hp = inputs[1] is None, inputs[3]
        ctx.set_materialize_grads(False)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dp, dbuf_out):
        lr, mu, wd, nesterov = ctx.hp
        if dp is None:
            if dbuf_out is None:
                return None, None, None, None
            dbuf = dd = dbuf_out
        else:
            c = -lr * mu if nesterov else -lr
            dbuf = dp * c if dbuf_out is None else torch.add(dbuf_out, dp, alpha=c)
            dd = torch.add(dbuf, dp, alpha=-lr) if nesterov else dbuf
        dp_in = (dd * wd if wd else None) if dp is None else (torch.add(dp, dd, alpha=wd) if wd else dp)
        return dp_in, None if ctx.first else dbuf * mu, dd, None


def adam_update(o: Optimiser, theta, g, state, t: int) -> list[torch.Tensor]:
    """torch.optim.Adam / AdamW at step t + 1: m = b1 m + (1 - b1) d, v = b2 v + (1 - b2) d^2 (d = g + wd theta for
    Adam, g for AdamW, whose theta first shrinks by 1 - lr wd); theta - lr m_hat / (sqrt(v_hat) + eps).  The square
    root is taken of v_hat + eps^2, whose derivative is finite where a gradient is exactly zero (a dead unit)."""
    b1, b2 = o.betas
    if o.kind == "adamw" and o.weight_decay:
        theta = [p * (1 - o.lr * o.weight_decay) for p in theta]
        d = list(g)
    else:
        d = [gi + o.weight_decay * p for gi, p in zip(g, theta)] if o.weight_decay else list(g)
    c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
    if not o.smoothing:  # the fused step: the same values, its derivative written out (_AdamStep)
        first = "m" not in state
        out = [_AdamStep.apply(p, None if first else mi, None if first else vi, di, (o.lr, b1, b2, c1, c2, o.eps))
               for p, di, mi, vi in zip(theta, d, state.get("m", d), state.get("v", d))]
        state["m"], state["v"] = [r[1] for r in out], [r[2] for r in out]
        return [r[0] for r in out]
    m = [(1 - b1) * di if "m" not in state else b1 * mi + (1 - b1) * di for di, mi in
         zip(d, state.get("m", d))]
    v = [(1 - b2) * di * di if "v" not in state else b2 * vi + (1 - b2) * di * di for di, vi in
         zip(d, state.get("v", d))]
    state["m"], state["v"] = m, v
    if o.smoothing:
        if "eps" not in state:  # eps + s RMS(d_0) per tensor, from the first step (differentiated through)
            state["eps"] = [o.eps + o.smoothing * di.pow(2).mean().sqrt() for di in d]
        return [p - o.lr * (mi / c1) / (torch.sqrt(vi / c2 + o.eps ** 2) + e)
                for p, mi, vi, e in zip(theta, m, v, state["eps"])]
    return [p - o.lr * (mi / c1) / (torch.sqrt(vi / c2 + o.eps ** 2) + o.eps) for p, mi, vi in zip(theta, m, v)]


class _AdamStep(torch.autograd.Function):
    """One tensor's Adam step, (p, m', v', d) -> (p - lr (m / c1) / (sqrt(v / c2 + eps^2) + eps), m, v) with
    m = b1 m' + (1 - b1) d, v = b2 v' + (1 - b2) d^2 (m' = v' = None: the first step, m = (1 - b1) d), those
    expressions to rounding (in place on its own temporaries), with the backward written out: with
    s = sqrt(v / c2 + eps^2) and q = dp / (s + eps),

        dm = dm_out - (lr / c1) q,   dv = dv_out + q (lr / c1) m / (2 c2 s (s + eps)),
        dp' = dp,   dm' = b1 dm,   dv' = b2 dv,   dd = (1 - b1) dm + 2 (1 - b2) d dv.

    Recomputing s from the saved v, it keeps one fused pass where autograd kept each intermediate (the simulated
    Adam's elementwise work is most of an iteration).  First derivatives only (the simulation's gradient and
    adjoints need no more)."""

    @staticmethod
    def forward(p, m_prev, v_prev, d, hp):
        lr, b1, b2, c1, c2, eps = hp  # in place on its own temporaries: few allocations
        m = d * (1 - b1)
        v = (d * d).mul_(1 - b2)
        if m_prev is not None:
            m.add_(m_prev, alpha=b1)
            v.add_(v_prev, alpha=b2)
        den = (v / c2).add_(eps ** 2).sqrt_().add_(eps)
        return torch.sub(p, (m / den).mul_(lr / c1)), m, v

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, m_prev, _, d, ctx.hp = inputs
        ctx.first = m_prev is None
        ctx.save_for_backward(output[1], output[2], d)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dp, dm_out, dv_out):
        lr, b1, b2, c1, c2, eps = ctx.hp
        m, v, d = ctx.saved_tensors
        s = (v / c2).add_(eps ** 2).sqrt_()
        den = s + eps
        q = dp / den
        dm = torch.add(dm_out, q, alpha=-lr / c1)
        dv = q.mul_(m).div_(s.mul_(den)).mul_(lr / c1 / (2 * c2)).add_(dv_out)
        dd = (d * dv).mul_(2 * (1 - b2)).add_(dm, alpha=1 - b1)
        return dp, None if ctx.first else dm * b1, None if ctx.first else dv * b2, dd, None


@dataclass
class Trajectory:
    """What the first variation needs of one simulation: the parameters theta_t at every simulated step, the
    adjoints gamma_t = dJ/dg_t (both detached) and which candidate rows each step's batch held."""

    thetas: list[list[torch.Tensor]]
    adjoints: list[list[torch.Tensor]]
    batches: list[slice | torch.Tensor]


@dataclass
class SimulationObjective:
    """J(X, M) of the module docstring.  ``theta0``: the initial weights; ``target``: theta_T - theta_0;
    ``blind_to``: per parameter tensor a direction projected out of both displacements (theta_0), or None;
    ``loss``: the per-candidate simulated loss (:data:`LossFn`); ``weights``: M -> W (m, C) >= 0 divided by nothing
    (the 1 / m0 is applied here); ``steps``: S; ``batch``: candidates per step (0: all); ``match``: ``cosine`` or
    ``squared``; ``prior``: R(X, M)."""

    theta0: list[torch.Tensor]
    target: list[torch.Tensor]
    blind_to: list[torch.Tensor] | None
    loss: LossFn
    optimiser: Optimiser
    weights: Callable[[torch.Tensor], torch.Tensor]
    prior: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    labels: torch.Tensor | None
    m0: int
    steps: int
    batch: int = 0
    match: Literal["cosine", "squared"] = "cosine"
    chunk_size: int = 0
    first_layer: Callable | None = None
    order: list[torch.Tensor] | None = None
    segment: int = 0
    _unit: list[torch.Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.blind_to is not None:
            self._unit = [d / d.norm() if d.norm() > 0 else torch.zeros_like(d) for d in self.blind_to]
        self._target = self.project(self.target)
        self._target_norm = torch.sqrt(sum((t * t).sum() for t in self._target))

    @property
    def theta(self) -> list[torch.Tensor]:
        """The parameters the network starts from (what splitting's kink diagnostics read)."""
        return self.theta0

    def project(self, r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self._unit is None:
            return list(r)
        return [ri - e * (ri * e).sum() for ri, e in zip(r, self._unit)]

    def _chunks(self, m: int) -> list[slice]:
        c = self.chunk_size if 0 < self.chunk_size < m else m
        return [slice(i, min(i + c, m)) for i in range(0, m, c)]

    def batches(self, m: int) -> list[slice | torch.Tensor]:
        """The candidate rows of each simulated step: the replayed ``order``, or all of them, or consecutive
        chunks of ``batch`` in turn."""
        if self.order is not None:
            return self.order
        if not self.batch or self.batch >= m:
            return [slice(0, m)] * self.steps
        starts = list(range(0, m, self.batch))
        return [slice(starts[t % len(starts)], min(starts[t % len(starts)] + self.batch, m)) for t in range(self.steps)]

    def normaliser(self, rows: slice | torch.Tensor) -> int:
        """b_t: |B_t| for a replayed step (the batch mean), m0 otherwise."""
        return len(rows) if self.order is not None else self.m0

    def simulate(self, X: torch.Tensor, W: torch.Tensor, keep: bool = False):
        """theta_S - theta_0 (differentiable in X and W), and with ``keep`` the simulated gradients g_t and
        parameters theta_t (graph kept) for the adjoints.  With ``segment = k`` (0 < k < S; not with ``keep``) the
        graph is kept k steps at a time: each segment runs without one and is run again with it in the backward
        pass (:class:`_Segment`), the same derivatives for about one more simulation."""
        steps = list(enumerate(self.batches(X.shape[0])))
        if not keep and 0 < self.segment < len(steps):
            theta, state = [p.detach() for p in self.theta0], {}
            for s in range(0, len(steps), self.segment):
                theta, state = _Segment.run(self, steps[s:s + self.segment], theta, state, X, W)
            return [p - p0 for p, p0 in zip(theta, self.theta0)]
        thetas: list = []
        grads: list = []
        theta = self.advance(steps, [p.detach().requires_grad_(True) for p in self.theta0], {}, X, W, graph=True,
                             thetas=thetas if keep else None, grads=grads if keep else None)
        delta = [p - p0 for p, p0 in zip(theta, self.theta0)]
        return (delta, grads, thetas) if keep else delta

    def advance(self, span, theta: list[torch.Tensor], state: dict, X: torch.Tensor, W: torch.Tensor, graph: bool,
                thetas: list | None = None, grads: list | None = None) -> list[torch.Tensor]:
        """theta after the simulated steps ``span`` (pairs (t, rows)) from ``theta`` and the optimiser ``state``
        (updated in place): differentiable in every input with ``graph`` (theta must then require grad), values
        only without.  ``thetas`` / ``grads``, when given, receive each step's theta_t (detached) and g_t."""
        lab = self.labels
        for t, rows in span:
            if not graph:
                theta = [p.detach().requires_grad_(True) for p in theta]
            if thetas is not None:
                thetas.append([p.detach() for p in theta])
            with torch.enable_grad():
                per = self.loss(theta, X[rows], W[rows], None if lab is None else lab[rows])
                g = torch.autograd.grad(per.sum() / self.normaliser(rows), theta, create_graph=graph)
            if grads is not None:
                grads.append(g)
            if graph:
                theta = self.optimiser.update(theta, list(g), state, t)
            else:
                with torch.no_grad():
                    theta = self.optimiser.update(theta, list(g), state, t)
        return theta

    def discrepancy(self, delta: Sequence[torch.Tensor]) -> torch.Tensor:
        """D(P delta, P target): 1 - cosine, or ||P delta - P target||^2 / ||P target||^2."""
        d = self.project(delta)
        if self.match == "cosine":
            norm = torch.sqrt(sum((a * a).sum() for a in d))
            dot = sum((a * b).sum() for a, b in zip(d, self._target))
            return 1 - dot / (norm * self._target_norm).clamp_min(torch.finfo(norm.dtype).tiny)
        return sum(((a - b) ** 2).sum() for a, b in zip(d, self._target)) / self._target_norm ** 2

    def value_and_grad(self, X: torch.Tensor, M: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """({'total', 'stationarity', 'relative_stationarity', 'prior'}, dJ/dX, dJ/dM); stationarity is D (the
        match of the simulated to the real displacement), relative_stationarity the same (D is relative)."""
        X = X.detach().requires_grad_(True)
        M = M.detach().requires_grad_(True)
        D = self.discrepancy(self.simulate(X, self.weights(M)))
        prior = self.prior(X, M)
        gx, gm = torch.autograd.grad(D + prior, [X, M], allow_unused=True)
        gx = torch.zeros_like(X) if gx is None else gx
        gm = torch.zeros_like(M) if gm is None else gm
        values = {"stationarity": float(D.detach()), "prior": float(prior.detach())}
        values["total"] = values["stationarity"] + values["prior"]
        values["relative_stationarity"] = values["stationarity"]
        return values, gx.detach(), gm.detach()

    def loss_of(self, X: torch.Tensor, M: torch.Tensor) -> float:
        """J at (X, M), no gradient kept (the line search of a split)."""
        with torch.enable_grad():  # the simulation differentiates the simulated loss in theta
            D = self.discrepancy(self.simulate(X.detach(), self.weights(M.detach())))
        with torch.no_grad():
            return float(D.detach() + self.prior(X, M))

    def u(self, X: torch.Tensor, M: torch.Tensor) -> Trajectory:
        """The trajectory and the adjoints gamma_t = dJ/dg_t (total derivatives: through every later step).  With
        ``segment = k`` the graph is kept k steps at a time: the forward pass runs without one (keeping each theta_t
        and each segment's starting state), then the segments run again with it in reverse order, each giving its
        steps' gamma_t and the adjoint of its starting theta and state, which the segment before takes as its
        outputs' adjoint."""
        X = X.detach()
        W = self.weights(M.detach())
        steps = list(enumerate(self.batches(X.shape[0])))
        n, k = len(self.theta0), self.segment
        if not 0 < k < len(steps):
            delta, grads, thetas = self.simulate(X, W, keep=True)
            D = self.discrepancy(delta)
            flat = [gi for g in grads for gi in g]
            adj = torch.autograd.grad(D, flat, allow_unused=True)
            adj = [torch.zeros_like(f) if a is None else a.detach() for a, f in zip(adj, flat)]
            return Trajectory(thetas, [adj[i * n:(i + 1) * n] for i in range(len(grads))], [b for _, b in steps])
        thetas, starts = [], []
        theta, state = [p.detach() for p in self.theta0], {}
        for s in range(0, len(steps), k):
            starts.append((theta, {key: list(v) for key, v in state.items()}))
            theta = self.advance(steps[s:s + k], theta, state, X, W, graph=False, thetas=thetas)
        end = [p.detach().requires_grad_(True) for p in theta]
        with torch.enable_grad():
            D = self.discrepancy([p - p0 for p, p0 in zip(end, self.theta0)])
        adj_out: list = list(torch.autograd.grad(D, end))  # the adjoint of a segment's outputs: theta, then state
        adjoints: list = [None] * len(steps)
        for i in reversed(range(len(starts))):
            span, (theta_s, state_s) = steps[i * k:(i + 1) * k], starts[i]
            keys = sorted(state_s)
            flat = [*theta_s, *(t for key in keys for t in state_s[key]), X, W]
            got = _Segment.rerun_vjp(self, span, n, [(key, len(state_s[key])) for key in keys], flat, adj_out,
                               range(len(flat) - 2), gammas=True)
            for j in range(len(span)):
                adjoints[i * k + j] = [torch.zeros_like(p) if a is None else a.detach()
                                       for a, p in zip(got[j * n:(j + 1) * n], self.theta0)]
            adj_out = got[len(span) * n:]  # the adjoint of theta and state at the segment's start (None: zero)
        return Trajectory(thetas, adjoints, [b for _, b in steps])

    def hvp_parts(self, u: Trajectory) -> list[Trajectory]:
        """The trajectory in parts of ``segment`` steps (the whole of it without): h_j is a sum over steps, so a
        Hessian-vector product of it is the sum of the parts', each keeping one part's graph."""
        k, S = self.segment, len(u.thetas)
        if not 0 < k < S:
            return [u]
        return [Trajectory(u.thetas[i:i + k], u.adjoints[i:i + k], u.batches[i:i + k]) for i in range(0, S, k)]

    def per_candidate_term(self, X: torch.Tensor, W: torch.Tensor, u: Trajectory,
                           labels: torch.Tensor | None = None, rows: Sequence[int] | None = None) -> torch.Tensor:
        """h_j (module docstring) for every row of X (m,), differentiable in X.  ``rows``: the candidates' positions
        in the set the trajectory was simulated with (default 0 .. m-1), which say the steps each took part in;
        each step evaluates the loss on the rows of its batch only."""
        labels = self.labels if labels is None else labels
        pos = torch.arange(X.shape[0]) if rows is None else torch.as_tensor(rows)
        out = torch.zeros(X.shape[0], dtype=X.dtype, device=X.device)
        for theta, gamma, batch in zip(u.thetas, u.adjoints, u.batches):
            if isinstance(batch, slice):
                inside = (pos >= batch.start) & (pos < batch.stop)
            else:
                inside = torch.isin(pos, batch.to(pos.device))
            idx = torch.nonzero(inside).flatten().to(X.device)
            if not len(idx):
                continue
            Xi, Wi, li = X[idx], W[idx], None if labels is None else labels[idx]

            def loss_of(*params, Xi=Xi, Wi=Wi, li=li):
                return self.loss(list(params), Xi, Wi, li)

            _, tangent = jvp(loss_of, tuple(theta), tuple(gamma))
            tangent = tangent if self.order is None else tangent / self.normaliser(batch)
            out = out.index_add(0, idx, tangent)
        return out / self.m0 if self.order is None else out


class _Segment(torch.autograd.Function):
    """k simulated steps, (theta_t, state_t, X, W) -> (theta_{t+k}, state_{t+k}), with no graph kept: the forward
    runs them for values only and saves its inputs; the backward runs them again with the graph
    (:meth:`SimulationObjective.advance`) and returns the vector-Jacobian products of the outputs' adjoints in every
    input that needs one.  The tensors travel flat: theta, then each optimiser-state entry (a list per key, in
    key order), then X and W.  First derivatives only."""

    @staticmethod
    def run(obj, span, theta, state, X, W):
        keys = sorted(state)
        flat = [*theta, *(t for k in keys for t in state[k]), X, W]
        out = _Segment.apply(obj, span, len(theta), [(k, len(state[k])) for k in keys], *flat)
        theta_out, state_out, _, _ = _Segment.unflatten(len(theta), _Segment.layout_after(obj, len(theta), state),
                                                        [*out, None, None])
        return theta_out, state_out

    @staticmethod
    def layout_after(obj, n: int, state) -> list[tuple[str, int]]:
        """The state's (key, length) list after a segment: that of the optimiser's state after its steps."""
        return [(k, n) for k in sorted(set(state) | obj.optimiser.state_keys())]

    @staticmethod
    def unflatten(n: int, layout, tensors):
        theta, state, i = list(tensors[:n]), {}, n
        for k, c in layout:
            state[k], i = list(tensors[i:i + c]), i + c
        return theta, state, tensors[i], tensors[i + 1]

    @staticmethod
    def rerun_vjp(obj, span, n: int, layout, tensors, adjoint, wanted, gammas: bool = False) -> list:
        """Run the steps ``span`` again from ``tensors`` (flat, as :meth:`run` lays them out) with their graph and
        return the vector-Jacobian products of ``adjoint`` (one per output: theta, then the state in key order;
        None: zero) in the inputs ``wanted`` (indices into ``tensors``), preceded, with ``gammas``, by those in
        each step's gradient g_t (n tensors a step: the adjoints gamma_t); None where one does not matter."""
        last = len(tensors) - 2  # theta and the state always take part in the graph; X and W where wanted
        inputs = [t.detach().requires_grad_(t.is_floating_point() and (i < last or i in wanted))
                  for i, t in enumerate(tensors)]
        theta, state, X, W = _Segment.unflatten(n, layout, inputs)
        grads: list | None = [] if gammas else None
        with torch.enable_grad():
            theta = obj.advance(span, theta, state, X, W, graph=True, grads=grads)
        out = [*theta, *(t for k in sorted(state) for t in state[k])]
        pairs = [(o, a) for o, a in zip(out, adjoint) if a is not None and o.requires_grad]
        wrt = [g for step in grads or [] for g in step] + [inputs[i] for i in wanted]
        if not pairs or not wrt:
            return [None] * len(wrt)
        return list(torch.autograd.grad([o for o, _ in pairs], wrt, [a for _, a in pairs], allow_unused=True))

    @staticmethod
    def forward(ctx, obj, span, n, layout, *tensors):
        inputs = [t.detach() for t in tensors]
        theta, state, X, W = _Segment.unflatten(n, layout, inputs)
        theta = obj.advance(span, theta, state, X, W, graph=False)
        ctx.obj, ctx.span, ctx.n, ctx.layout = obj, span, n, layout
        ctx.save_for_backward(*tensors)
        out = [*theta, *(t for k in sorted(state) for t in state[k])]
        ids = {id(t) for t in inputs}  # a state entry the steps left as it was (a smoothed Adam's eps): a copy
        return tuple(o.clone() if id(o) in ids else o.detach() for o in out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[4:]) if need]
        got = _Segment.rerun_vjp(ctx.obj, ctx.span, ctx.n, ctx.layout, ctx.saved_tensors, grads, wanted)
        result: list = [None] * len(ctx.saved_tensors)
        for i, gi in zip(wanted, got):
            result[i] = gi
        return (None, None, None, None, *result)


__all__ = ["Optimiser", "SimulationObjective", "Trajectory", "adam_update", "sgd_update"]
