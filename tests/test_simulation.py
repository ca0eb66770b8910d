"""The training-simulation objective against dense float64 oracles: the simulated training is torch.optim's, its
gradient is the finite-difference one, and its splitting matrices are the Hessians of the first variation."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import hessian

from trainrecon.models.sequential import Layer, SequentialSpec
from trainrecon.objective.simulation import Optimiser, SimulationObjective
from trainrecon.refinement.splitting import splitting_hvp

D, H, K, M = 6, 5, 3, 4


def net():
    spec = SequentialSpec(input_shape=[1, 1, D], layers=[Layer("linear", features=H, bias=True), Layer("softplus"),
                                                        Layer("linear", features=K, bias=True)])
    g = torch.Generator().manual_seed(0)
    theta0 = [torch.randn(s, generator=g, dtype=torch.float64) * 0.5 for s in spec.param_shapes().values()]
    target = [torch.randn(s, generator=g, dtype=torch.float64) * 0.1 for s in spec.param_shapes().values()]
    X = torch.randn(M, D, generator=g, dtype=torch.float64)
    labels = torch.arange(M) % K
    return spec, theta0, target, X, labels


def ce(spec):
    def loss(params, X, W, labels):
        return -(W * F.log_softmax(spec.forward(params, X), dim=1)).sum(1)
    return loss


def objective(opt, steps=3, batch=0, match="cosine", blind=True, m0=M):
    spec, theta0, target, X, labels = net()
    return SimulationObjective(theta0, target, theta0 if blind else None, ce(spec), opt, lambda M_: M_,
                               lambda X_, M_: (X_ ** 2).sum() * 1e-3, labels, m0, steps, batch, match), spec, X, labels


def torch_twin(obj):
    """The nn.Module of net() at the objective's theta_0."""
    module = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Softplus(), torch.nn.Linear(H, K)).double()
    with torch.no_grad():
        for p, v in zip(module.parameters(), obj.theta0):
            p.copy_(v)
    return module


@pytest.mark.parametrize("opt, batch", [
    (Optimiser("sgd", 0.3), 0),
    (Optimiser("sgd", 0.3, momentum=0.9, weight_decay=0.05), 2),
    (Optimiser("sgd", 0.3, momentum=0.9, nesterov=True, weight_decay=0.05), 0),
    (Optimiser("adam", 0.05, weight_decay=0.01, betas=(0.8, 0.9)), 3),
    (Optimiser("adamw", 0.05, weight_decay=0.1), 0),
    (Optimiser("adam", 0.05, betas=(0.8, 0.9), smoothing=0.5), 0),
])
def test_the_simulated_training_is_torch_optims(opt, batch):
    """theta_S of the simulation equals S steps of torch.optim on an nn.Module with the same weights, on the same
    batches (consecutive chunks in turn), the same loss (cross-entropy, summed over the batch / m0); a smoothed
    Adam is torch's Adam with each tensor in a group of its own whose eps is eps + s RMS(its first gradient)."""
    obj, spec, X, labels = objective(opt, steps=5, batch=batch)
    W = F.one_hot(labels, K).double()
    delta = obj.simulate(X, W)
    module = torch_twin(obj)
    if opt.kind == "sgd":
        torch_opt = torch.optim.SGD(module.parameters(), lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                    weight_decay=opt.weight_decay)
    elif opt.smoothing:
        first = next(iter(obj.batches(M)))
        g0 = torch.autograd.grad(F.cross_entropy(module(X[first]), labels[first], reduction="sum") / M,
                                 list(module.parameters()))
        torch_opt = torch.optim.Adam([{"params": [p], "eps": opt.eps + opt.smoothing * float(g.pow(2).mean().sqrt())}
                                      for p, g in zip(module.parameters(), g0)], lr=opt.lr, betas=opt.betas)
    else:
        cls = torch.optim.Adam if opt.kind == "adam" else torch.optim.AdamW
        torch_opt = cls(module.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    for rows in obj.batches(M):
        torch_opt.zero_grad()
        (F.cross_entropy(module(X[rows]), labels[rows], reduction="sum") / M).backward()
        torch_opt.step()
    for p, p0, d in zip(module.parameters(), obj.theta0, delta):
        assert torch.allclose(p.detach() - p0, d.detach(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("match, opt", [
    ("cosine", Optimiser("adam", 0.05, weight_decay=0.01)), ("squared", Optimiser("adam", 0.05, weight_decay=0.01)),
    ("cosine", Optimiser("adam", 0.05, weight_decay=0.01, smoothing=0.5)),
    ("cosine", Optimiser("sgd", 0.3, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("squared", Optimiser("sgd", 0.3, momentum=0.9, weight_decay=0.05))])
def test_the_gradient_is_the_finite_difference_one(match, opt):
    obj, spec, X, labels = objective(opt, match=match)
    Wm = F.one_hot(labels, K).double() * torch.linspace(0.5, 1.5, M, dtype=torch.float64)[:, None]
    _, gx, gm = obj.value_and_grad(X, Wm)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        dx = torch.randn(X.shape, generator=g, dtype=torch.float64)
        dm = torch.randn(Wm.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        fd = (obj.loss_of(X + h * dx, Wm + h * dm) - obj.loss_of(X - h * dx, Wm - h * dm)) / (2 * h)
        assert math.isclose(fd, float((gx * dx).sum() + (gm * dm).sum()), rel_tol=1e-6, abs_tol=1e-10)


class _Held:
    """A tensor saved for the backward pass; ``live`` counts the bytes of those not yet freed."""

    live = 0

    def __init__(self, t):
        self.t, self.n = t, t.numel() * t.element_size()
        _Held.live += self.n

    def __del__(self):
        _Held.live -= self.n


@pytest.mark.parametrize("opt, batch", [
    (Optimiser("sgd", 0.3), 2),
    (Optimiser("sgd", 0.3, momentum=0.9, nesterov=True, weight_decay=0.05), 3),
    (Optimiser("adam", 0.05, weight_decay=0.01, betas=(0.8, 0.9)), 2),
    (Optimiser("adamw", 0.05, weight_decay=0.1), 0),
    (Optimiser("adam", 0.05, betas=(0.8, 0.9), smoothing=0.5), 2),
    ("replay", 0),
])
def test_a_graph_kept_in_segments_gives_the_same_derivatives_and_keeps_less(opt, batch):
    """segment = k: J and its gradient in X and the weights as with the whole graph (float64, to rounding) for
    every k, the optimisers' states (momentum, Adam's moments, the smoothed eps) carried across segments; a
    replayed order too; and so are the trajectory's adjoints gamma_t (splitting's first variation) and the splitting
    matrices' products, per part of the trajectory and per chunk of candidates, and for one candidate at its place
    in the set.  After the forward pass the graph holds less: 40 steps, 6 at a time, keep under a third of
    the bytes the whole graph keeps."""
    order = None
    if opt == "replay":
        opt, order = Optimiser("sgd", 0.3, momentum=0.9, weight_decay=0.05), [torch.tensor([0, 2]),
                                                                           torch.tensor([3, 1, 0]), torch.tensor([2])]
    obj, spec, X, labels = objective(opt, steps=7, batch=batch)
    obj = dataclasses.replace(obj, order=order)
    Wm = F.one_hot(labels, K).double() * torch.linspace(0.5, 1.5, M, dtype=torch.float64)[:, None]
    v0, gx0, gm0 = obj.value_and_grad(X, Wm)
    u0 = obj.u(X, Wm)
    h0 = obj.per_candidate_term(X, Wm, u0)
    V = torch.randn(M, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hv0 = splitting_hvp(obj, X, Wm, u0, V)
    for j in range(M):  # one candidate alone at its place in the set (a split's curvature model) gives its row
        one = splitting_hvp(obj, X[j:j + 1], Wm[j:j + 1], u0, V[j:j + 1], labels[j:j + 1], positions=[j])
        assert torch.allclose(one[0], hv0[j], rtol=1e-11, atol=1e-14)
    for k in (1, 2, 3, 6, 7):
        seg = dataclasses.replace(obj, segment=k)
        v, gx, gm = seg.value_and_grad(X, Wm)
        assert math.isclose(v["total"], v0["total"], rel_tol=1e-13)
        assert torch.allclose(gx, gx0, rtol=1e-11, atol=1e-14) and torch.allclose(gm, gm0, rtol=1e-11, atol=1e-14)
        u = seg.u(X, Wm)  # the adjoints gamma_t of the first variation, by the reverse sweep over segments
        assert len(u.adjoints) == len(u0.adjoints) == len(u.thetas)
        for a, b in zip([t for step in u.thetas + u.adjoints for t in step],
                        [t for step in u0.thetas + u0.adjoints for t in step]):
            assert torch.allclose(a, b, rtol=1e-11, atol=1e-14)
        assert torch.allclose(seg.per_candidate_term(X, Wm, u), h0, rtol=1e-11, atol=1e-14)
        for chunk in (0, 3):  # splitting's products, per part of the trajectory and per chunk of candidates
            hv = splitting_hvp(dataclasses.replace(seg, chunk_size=chunk), X, Wm, u, V)
            assert torch.allclose(hv, hv0, rtol=1e-10, atol=1e-13)
    assert gx0.abs().max() > 1e-3 and gm0.abs().max() > 1e-3
    if order is None:
        long = dataclasses.replace(obj, steps=40)
        held = {}
        for k in (0, 6):
            o = dataclasses.replace(long, segment=k)
            _Held.live = 0
            with torch.autograd.graph.saved_tensors_hooks(_Held, lambda h: h.t):
                J = o.discrepancy(o.simulate(X.detach().requires_grad_(True), Wm))
                held[k] = _Held.live  # J keeps its graph alive until here
            assert J.requires_grad
            del J  # its graph freed before the next count starts
        assert held[6] < held[0] / 3


def test_a_projected_match_ignores_theta0s_direction():
    """Blind to theta_0: adding c theta_0 to the target (what weight decay shrank) changes nothing."""
    obj, spec, X, labels = objective(Optimiser("sgd", 0.3, momentum=0.9))
    W = F.one_hot(labels, K).double()
    shifted = SimulationObjective(obj.theta0, [t + 0.7 * p for t, p in zip(obj.target, obj.theta0)], obj.theta0,
                                  obj.loss, obj.optimiser, obj.weights, obj.prior, obj.labels, obj.m0, obj.steps)
    assert math.isclose(obj.loss_of(X, W), shifted.loss_of(X, W), rel_tol=1e-12)


def test_splitting_matrices_are_hessians_of_the_first_variation():
    """S_j = Hess_x of V(x) = dJ/d eps of a new candidate at x with weight eps w_j (every other candidate and the
    whole simulation fixed), at x = x_j: dense float64 Hessians against the matrix-free splitting HVP; and the
    per-candidate term at x_j is the derivative of J in candidate j's own weight."""
    obj, spec, X, labels = objective(Optimiser("sgd", 0.3, momentum=0.9, weight_decay=0.05), steps=4)
    W = F.one_hot(labels, K).double() * torch.tensor([1.0, 0.7, 1.3, 0.9], dtype=torch.float64)[:, None]
    u = obj.u(X, W)
    h = obj.per_candidate_term(X, W, u)
    for j in range(M):
        def with_weight(eps, j=j):
            Wj = W.clone()
            Wj[j] = W[j] * (1 + eps)
            return obj.discrepancy(obj.simulate(X, Wj))
        eps = torch.zeros((), dtype=torch.float64, requires_grad=True)
        (d,) = torch.autograd.grad(with_weight(eps), eps)
        assert math.isclose(float(d), float(h[j]), rel_tol=1e-8, abs_tol=1e-12)

        def V(x, j=j):
            eps = torch.zeros((), dtype=torch.float64, requires_grad=True)
            Xe = torch.cat([X, x[None]])
            We = torch.cat([W, eps * W[j][None]])
            lab = torch.cat([labels, labels[j:j + 1]])
            o = SimulationObjective(obj.theta0, obj.target, obj.blind_to, obj.loss, obj.optimiser, obj.weights,
                                    obj.prior, lab, obj.m0, obj.steps)
            (v,) = torch.autograd.grad(o.discrepancy(o.simulate(Xe, We)), eps, create_graph=True)
            return v

        S = hessian(V, X[j].clone())
        v = torch.randn(M, D, generator=torch.Generator().manual_seed(j), dtype=torch.float64)
        hv = splitting_hvp(obj, X, W, u, v)
        assert torch.allclose(hv[j], S @ v[j], rtol=1e-7, atol=1e-10)


def test_a_splitting_round_runs_on_the_simulation_with_exact_losses():
    """split_round on the simulation: each tried split's J is the simulation's own, evaluated afresh on the trial set
    (labels and weights halved with the children); accepted splits lower J; the round's final set has that J."""
    from trainrecon.objective.candidates import CandidateSet
    from trainrecon.refinement.settings import SplitConfig
    from trainrecon.refinement.splitting import split_round

    obj, spec, X, labels = objective(Optimiser("sgd", 0.3, momentum=0.9), steps=3, blind=False)
    obj = dataclasses.replace(obj, prior=lambda X_, M_: X_.sum() * 0.0)  # no prior: a split may only help the match
    W = F.one_hot(labels, K).double()
    cands = CandidateSet(X.clone(), W.clone(), labels.clone())
    r = split_round(obj, cands, SplitConfig(enabled=True, per_round=3, lanczos_steps=6), 0)
    assert r.log and all(e["accepted"] == (e["actual_change"] < 0) for e in r.log)
    kept = sum(e["accepted"] for e in r.log)
    assert r.cands.m == M + kept and r.cands.multipliers.sum() == pytest.approx(float(W.sum()))
    final = SimulationObjective(obj.theta0, obj.target, obj.blind_to, obj.loss, obj.optimiser, obj.weights,
                                obj.prior, r.cands.labels, obj.m0, obj.steps)
    start = obj.loss_of(X, W)
    assert final.loss_of(r.cands.x, r.cands.multipliers) == pytest.approx(start + sum(
        e["actual_change"] for e in r.log if e["accepted"]), rel=1e-9)


def test_a_replayed_order_is_torch_optims_on_those_batches_and_its_first_variation_holds():
    """order: step t trains on the rows B_t with the batch-mean loss (torch's reduction 'mean'), any rows in any
    order; the per-candidate term is then the derivative of J in the candidate's own weight (float64)."""
    order = [torch.tensor([0, 2]), torch.tensor([3, 1, 0]), torch.tensor([2])]
    obj, spec, X, labels = objective(Optimiser("sgd", 0.3, momentum=0.9, weight_decay=0.05))
    obj = dataclasses.replace(obj, order=order)
    W = F.one_hot(labels, K).double()
    delta = obj.simulate(X, W)
    module = torch_twin(obj)
    torch_opt = torch.optim.SGD(module.parameters(), lr=0.3, momentum=0.9, weight_decay=0.05)
    for rows in order:
        torch_opt.zero_grad()
        F.cross_entropy(module(X[rows]), labels[rows]).backward()
        torch_opt.step()
    for p, p0, d in zip(module.parameters(), obj.theta0, delta):
        assert torch.allclose(p.detach() - p0, d.detach(), rtol=1e-9, atol=1e-12)
    Wm = W * torch.tensor([1.0, 0.7, 1.3, 0.9], dtype=torch.float64)[:, None]
    h = obj.per_candidate_term(X, Wm, obj.u(X, Wm))
    for j in range(M):
        eps = torch.zeros((), dtype=torch.float64, requires_grad=True)
        Wj = Wm.clone()
        Wj[j] = Wm[j] * (1 + eps)
        (d,) = torch.autograd.grad(obj.discrepancy(obj.simulate(X, Wj)), eps)
        assert math.isclose(float(d), float(h[j]), rel_tol=1e-8, abs_tol=1e-12)


@pytest.mark.parametrize("mu, wd, nesterov, use_buf", [(0.9, 0.0, False, True), (0.9, 0.05, False, True),
                                                      (0.9, 0.05, True, True), (0.5, 0.05, True, False)])
def test_the_fused_sgd_step_is_autograd_of_sgds_expressions(mu, wd, nesterov, use_buf):
    """_SGDStep over three steps (the first without a momentum buffer) against autograd of the plain expressions,
    float64: the same parameters and buffers to rounding, and the same gradient of a random functional of the last
    step's outputs (of p alone: the last buffer's gradient is None) in p_0 and every g_t."""
    from trainrecon.objective.simulation import _SGDStep

    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gs = [torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    lr = 0.3
    w = [torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(2)]

    def run(fused):
        p, buf = p0, None
        for gt in gs:
            if fused:
                p, buf = _SGDStep.apply(p, buf, gt, (lr, mu, wd, nesterov))
            else:
                d = gt + wd * p
                buf = d if buf is None else mu * buf + d
                p = p - lr * (d + mu * buf if nesterov else buf)
        out = (w[0] * p).sum() + ((w[1] * buf).sum() if use_buf else 0)
        return (p, buf), torch.autograd.grad(out, [p0, *gs])

    (fp, fb), fg = run(True)
    (ap, ab), ag = run(False)
    for a, b in zip((fp, fb, *fg), (ap, ab, *ag)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_the_fused_adam_step_is_autograd_of_adams_expressions():
    """_AdamStep over three steps (the first without moments) against autograd of the plain expressions, float64:
    the same parameters and moments to rounding, and the same gradient of a random functional of the last step's
    outputs in p_0 and every d_t."""
    from trainrecon.objective.simulation import _AdamStep

    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ds = [torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    ds[1].data[0, 0] = 0.0  # a zero gradient entry: v small, s near eps
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-8
    w = [torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3)]

    def run(fused):
        p, m, v = p0, None, None
        for t, d in enumerate(ds):
            c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
            if fused:
                p, m, v = _AdamStep.apply(p, m, v, d, (lr, b1, b2, c1, c2, eps))
            else:
                m = (1 - b1) * d if m is None else b1 * m + (1 - b1) * d
                v = (1 - b2) * d * d if v is None else b2 * v + (1 - b2) * d * d
                p = p - lr * (m / c1) / (torch.sqrt(v / c2 + eps ** 2) + eps)
        out = (w[0] * p).sum() + (w[1] * m).sum() + (w[2] * v).sum()
        return (p, m, v), torch.autograd.grad(out, [p0, *ds])

    (fp, fm, fv), fg = run(True)
    (ap, am, av), ag = run(False)
    for a, b in zip((fp, fm, fv, *fg), (ap, am, av, *ag)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
