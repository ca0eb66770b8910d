"""attack.init_tolerance: the dead-zone residual for victims trained from PyTorch's default initialisation."""

import math

import pytest
import torch
from torch import nn

from trainrecon.attacks import HaimConfig
from trainrecon.attacks.haim import Haim
from trainrecon.attacks.loo import LooConfig, LooNTK
from trainrecon.attacks.normalisation import normalise
from trainrecon.attacks.payload import Payload
from trainrecon.errors import TrainreconError
from trainrecon.models.activations import EXACT
from trainrecon.models.user_weights import victim_from_module
from trainrecon.models.mlp import MLPSpec
from trainrecon.objective.candidates import CandidateSet
from trainrecon.objective.weighted_sum import DeadZoneDistance, SquaredDistance

SHAPE = [1, 6, 6]


def cnn_module() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=True), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 2, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(16, 1, bias=False))


def test_default_init_bounds_are_pytorchs():
    """1/sqrt(fan_in) with fan_in as torch.nn.init computes it, for a conv net's weights and biases and an MLP's."""
    torch.manual_seed(0)
    mod = cnn_module().double()
    w = victim_from_module(mod, SHAPE)
    weights = {n: p for n, p in mod.named_parameters()}
    want = []
    for name in w.spec.param_names():
        layer = name.rpartition(".")[0]
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weights[f"{layer}.weight"])
        want.append(1 / math.sqrt(fan_in))
    assert w.spec.default_init_bounds() == pytest.approx(want, rel=1e-12)
    for name, p, b in zip(w.spec.param_names(), w.params, want):  # the module's own init lies within them
        assert p.abs().max() <= b, name
    mlp = MLPSpec(widths=[36, 7, 1], bias=[True, False], input_shape=SHAPE)
    assert mlp.default_init_bounds() == pytest.approx([1 / 6, 1 / 6, 1 / math.sqrt(7)], rel=1e-12)


def test_dead_zone_value_and_gradient_against_autograd():
    g = torch.Generator().manual_seed(1)
    target = [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    s = [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    dz = DeadZoneDistance(target, [0.7, 0.2])
    leaves = [t.clone().requires_grad_(True) for t in s]
    want = sum(torch.relu((t - x).abs() - b).pow(2).sum() for t, x, b in zip(target, leaves, [0.7, 0.2]))
    want.backward()
    assert float(dz.value(s)) == pytest.approx(float(want), rel=1e-13)
    for got, leaf in zip(dz.grad(s), leaves):
        assert torch.allclose(got, leaf.grad, rtol=1e-12, atol=1e-14)
    assert float(dz.value(s)) < float(SquaredDistance(target).value(s))
    zero = DeadZoneDistance(target, [0.0, 0.0])  # no tolerance is the squared distance
    assert float(zero.value(s)) == pytest.approx(float(SquaredDistance(target).value(s)), rel=1e-13)
    assert dz.relative(float(dz.value(s))) == pytest.approx(float(dz.value(s) / dz.value([0 * t for t in target])))
    with pytest.raises(ValueError):
        DeadZoneDistance(target, [0.1])


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_the_attack_objective_with_a_tolerance_against_an_oracle_and_finite_differences(gamma):
    """The attack's stationarity term with init_tolerance c is sum_p gamma_p (|theta_p - s_p| - c b_p)_+^2 (b_p from
    torch's fan-in, s from the objective's own weighted sum, gamma_p = 1 on the first layer and ``deep_weight``
    gamma after it), and its gradients in x and lambda are that function's (with the exact activation: Haim's
    modified ReLU is by design not the derivative of its forward pass)."""
    torch.manual_seed(0)
    mod = cnn_module().double()
    w = victim_from_module(mod, SHAPE)
    params = [10 * p for p in w.params]  # grown by training: most of each weight lies outside the zone
    x = torch.randn(4, 36, dtype=torch.float64) * 0.5
    M = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    cfg = HaimConfig(m=4, normalise="none", box_space="centred", box=10.0, lambda_min=0.0, init_tolerance=3.0, tv=0.0,
                     deep_weight=gamma)
    attack = Haim(Payload(w.spec, params), cfg)
    cands = CandidateSet(x, M, attack.labels(4))
    values, gx, gm = attack.objective(0, cands, EXACT).value_and_grad(x, M)
    fan = {n: nn.init._calculate_fan_in_and_fan_out(p)[0] for n, p in mod.named_parameters() if n.endswith("weight")}
    bounds = [3.0 / math.sqrt(fan[n.rpartition(".")[0] + ".weight"]) for n in w.spec.param_names()]

    def excess(x, M):  # |theta - s| - c b per parameter tensor, s the objective's weighted sum
        s = attack.objective(0, cands, EXACT).feature_sum(x, attack.weights(M, 4))
        return [(t - si).abs() - b for t, si, b in zip(params, s, bounds)]

    first = 2  # the first convolution's weight and bias
    weights = [1.0] * first + [gamma] * (len(params) - first)

    def stationarity(x, M):
        return float(sum(g * torch.relu(e).pow(2).sum() for g, e in zip(weights, excess(x, M))))

    base = stationarity(x, M)
    inside = sum(int((e <= 0).sum()) for e in excess(x, M))
    assert 0 < inside < sum(p.numel() for p in params)  # some weights inside the zone, some outside
    assert values["stationarity"] == pytest.approx(base, rel=1e-12)
    h = 1e-6
    for j in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[j] = h
        fd = (stationarity(x, M + e) - stationarity(x, M - e)) / (2 * h)
        assert float(gm[j]) == pytest.approx(fd, rel=1e-5, abs=1e-9)
    v = torch.randn(4, 36, dtype=torch.float64)
    fd = (stationarity(x + h * v, M) - stationarity(x - h * v, M)) / (2 * h)
    assert float((gx * v).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-9)
    plain = Haim(Payload(w.spec, params), HaimConfig(**{**cfg.__dict__, "init_tolerance": 0.0}))
    assert plain.objective(0, cands, EXACT).value_and_grad(x, M)[0]["stationarity"] > values["stationarity"]


def test_the_tolerance_follows_the_attackers_normalisation():
    torch.manual_seed(0)
    w = victim_from_module(cnn_module().double(), SHAPE)
    params = [10 * p for p in w.params]  # grown by training: most of each weight lies outside the zone
    attacked, record = normalise(Payload(w.spec, params))
    kappa = record["kappa"]
    assert attacked.scale == pytest.approx(kappa)
    method = Haim(attacked, HaimConfig(m=4, init_tolerance=0.5, deep_weight=1.0))
    assert isinstance(method.outer, DeadZoneDistance)
    assert method.outer.tolerance == pytest.approx([0.5 * b / kappa for b in w.spec.default_init_bounds()], rel=1e-12)
    assert type(Haim(attacked, HaimConfig(m=4, deep_weight=1.0)).outer) is SquaredDistance


def test_refusals_are_one_line():
    torch.manual_seed(0)
    w = victim_from_module(cnn_module().double(), SHAPE)
    with pytest.raises(TrainreconError, match="attack.init_tolerance: must be >= 0"):
        HaimConfig(init_tolerance=-1.0)
    with pytest.raises(TrainreconError, match="within 2.0 x PyTorch's init bound"):  # the fresh init lies inside
        Haim(Payload(w.spec, w.params), HaimConfig(m=4, init_tolerance=2.0, normalise="none"))
    ntk = Payload(w.spec, w.params, init_params=[0.5 * p for p in w.params])
    with pytest.raises(TrainreconError, match="NTK form's target"):
        LooNTK(ntk, LooConfig(m=4, init_tolerance=1.0, dtype="float64"))
