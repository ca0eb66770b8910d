"""Any network a user trained: the architecture interface (MLPs and declarative layer lists), float64 dense
oracles parametrised over an MLP and a small CNN, the import routes (state dict + layer list, inferred MLP,
--module, a module object) and their one-line refusals, the threat model and a trainer on a CNN victim."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.func import hessian

from conftest import TINY_TASK
from trainrecon import reconstruct
from trainrecon.attacks import HaimConfig, payload_from_folder
from trainrecon.attacks.haim import Haim
from trainrecon.attacks.normalisation import normalise
from trainrecon.attacks.payload import Payload
from trainrecon.config import to_dict
from trainrecon.errors import TrainreconError
from trainrecon.models.architecture import operator_norm
from trainrecon.models.victim import architecture_from_dict
from trainrecon.models.user_weights import infer_architecture, victim_from_module
from trainrecon.models.mlp import MLPSpec, Surrogate
from trainrecon.models.parameters import flatten, unflatten
from trainrecon.models.sequential import SequentialSpec
from trainrecon.models.stationarity import KKT
from trainrecon.models.victim import Victim, load_victim, save_victim
from trainrecon.objective.candidates import CandidateSet
from trainrecon.refinement.splitting import kink_alignment, splitting_hvp

SHAPE = [1, 6, 6]


def cnn_module(bias_first: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=bias_first), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 2, stride=1, bias=False), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(4, 1, bias=False))


def mlp_module() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 7, bias=True), nn.ReLU(), nn.Linear(7, 5, bias=False), nn.ReLU(),
                         nn.Linear(5, 1, bias=False))


def net(kind: str, seed: int = 0):
    """(module in float64, its Architecture, parameters) for kind 'mlp' (an MLPSpec) or 'cnn' (a layer list)."""
    torch.manual_seed(seed)
    if kind == "mlp":
        mod = mlp_module().double()
        spec = MLPSpec(widths=[36, 7, 5, 1], bias=[True, False, False], input_shape=SHAPE)
        sd = mod.state_dict()
        params = [sd["1.weight"], sd["1.bias"], sd["3.weight"], sd["5.weight"]]
        return mod, spec, [p.clone() for p in params]
    mod = cnn_module(bias_first=True).double()
    w = victim_from_module(mod, SHAPE)
    return mod, w.spec, w.params


KINDS = ["mlp", "cnn"]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_the_module_exact_and_with_the_surrogate(kind):
    mod, spec, params = net(kind)
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    assert torch.allclose(spec.forward(params, x), mod(x), rtol=1e-12, atol=1e-14)
    # the surrogate: every ReLU-family module replaced by softplus(beta z) / beta (leaky: slope z + (1 - slope) sp)
    beta = 4.0
    smooth = nn.Sequential(*[
        (nn.Softplus(beta) if type(m) is nn.ReLU else _LeakySoftplus(m.negative_slope, beta) if type(m) is nn.LeakyReLU else m)
        for m in mod])
    assert torch.allclose(spec.forward(params, x, Surrogate("softplus", beta)), smooth(x), rtol=1e-12, atol=1e-14)
    # the modified ReLU keeps the forward values
    assert torch.allclose(spec.forward(params, x, Surrogate("modified_relu", 30.0)), mod(x), rtol=1e-12, atol=1e-14)


class _LeakySoftplus(nn.Module):
    def __init__(self, slope, beta):
        super().__init__()
        self.slope, self.sp = slope, nn.Softplus(beta)

    def forward(self, z):
        return self.slope * z + (1 - self.slope) * self.sp(z)


@pytest.mark.parametrize("kind", KINDS)
def test_stationarity_residual_against_a_dense_jacobian(kind):
    """theta_target = sum_i lambda_i y_i grad f(x_i) with known lambda >= 0: the residual is 0 and the NNLS multipliers
    are lambda; per-sample gradients against a dense torch.autograd Jacobian of each sample."""
    _, spec, params = net(kind)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, spec.input_dim, generator=g, dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    J = KKT.per_sample_grads(spec, params, x, y)
    flat = flatten(params)
    for i in range(4):
        dense = torch.autograd.functional.jacobian(lambda th: y[i] * spec.forward(unflatten(spec, th), x[i:i + 1])[0, 0], flat)
        assert torch.allclose(J[i], dense, rtol=1e-10, atol=1e-12)
    for chunk in (1, 3):  # computed a block of inputs at a time, into one tensor: the same rows
        assert torch.allclose(KKT.per_sample_grads(spec, params, x, y, chunk=chunk), J, rtol=1e-13, atol=1e-15)
    moved = [t + 0.1 for t in params]  # the average over two points, summed in place
    both = KKT.per_sample_grads(spec, moved, x, y, chunk=3, into=KKT.per_sample_grads(spec, params, x, y, weight=0.5),
                                weight=0.5)
    assert torch.allclose(both, (J + KKT.per_sample_grads(spec, moved, x, y)) / 2, rtol=1e-13, atol=1e-15)
    lam = torch.tensor([0.5, 1.0, 0.2, 2.0], dtype=torch.float64)
    target = unflatten(spec, lam @ J)
    res = _kkt_residual_at(spec, target, params, x, y)
    assert res["kkt_residual"] < 1e-6
    w = torch.tensor(res["lambdas"], dtype=torch.float64)
    assert (w >= 0).all() and torch.allclose(w @ J, lam @ J, rtol=1e-6, atol=1e-8 * float((lam @ J).abs().max()))
    # a target outside the cone of the gradients is not fitted
    other = unflatten(spec, torch.randn(J.shape[1], generator=g, dtype=torch.float64))
    assert _kkt_residual_at(spec, other, params, x, y)["kkt_residual"] > 0.5


def _kkt_residual_at(spec, target, at, x, y):
    """KKT.residual with the gradients at ``at`` and ``target`` as theta (the form's grads_at argument)."""
    return KKT.residual(spec, target, x, y, grads_at=at)


@pytest.mark.parametrize("kind", KINDS)
def test_per_candidate_term_and_splitting_hvp_against_dense_oracles(kind, tmp_path):
    mod, spec, params = net(kind)
    victim = Victim(spec, params, np.zeros(SHAPE))
    method = Haim(Payload.of(victim, disclose_n=False), HaimConfig(m=4, alpha=5.0))
    cands = method.init(4)
    cands = CandidateSet(torch.randn(4, spec.input_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
                         cands.multipliers, cands.labels)
    obj = method.objective(0, cands)
    W = obj.weights(cands.multipliers)
    u = obj.u(cands.x, cands.multipliers)
    h = obj.per_candidate_term(cands.x, W, u)
    sur = method.surrogate(0)
    for j in range(4):
        def phi_j(*th, j=j):
            return cands.labels[j] * spec.forward(list(th), cands.x[j:j + 1], sur)[0, 0]
        th = [p.detach().clone().requires_grad_(True) for p in obj.theta]
        gj = torch.autograd.grad(phi_j(*th), th)
        dense = W[j, 0] * sum((a * b).sum() for a, b in zip(gj, u))
        assert torch.allclose(h[j], dense, rtol=1e-10, atol=1e-14)
    # S_j v = Hess_x h_j(x_j) v against torch.func.hessian of h_j
    V = torch.randn(cands.x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    HV = splitting_hvp(obj, cands.x, W, u, V)
    for j in range(4):
        def hj(xj, j=j):
            return obj.per_candidate_term(xj[None], W[j:j + 1], u, cands.labels[j:j + 1])[0]
        H = hessian(hj)(cands.x[j])
        assert torch.allclose(HV[j], H @ V[j], rtol=1e-8, atol=1e-10 * float(H.abs().max()))
    # kink alignment reads the architecture's first layer (matrix or convolution) against a dense first-layer matrix
    A = torch.func.jacrev(lambda z: obj.first_layer(obj.theta).linear(z[None])[0])(cands.x[0])
    b = obj.first_layer(obj.theta).pre(torch.zeros(1, spec.input_dim, dtype=torch.float64))[0]
    norms = A.norm(dim=1)
    assert torch.allclose(obj.first_layer(obj.theta).row_norms, norms, rtol=1e-12)
    dist = ((A @ cands.x[0] + b) / norms).abs()
    idx = torch.argsort(dist)[:5]
    want = float(((A[idx] @ V[0]) / (norms[idx] * V[0].norm())).abs().max())
    assert kink_alignment(obj, cands.x[0], V[0]) == pytest.approx(want, rel=1e-10)


def test_conv_operator_norm_and_lipschitz_bound_against_dense_matrices():
    _, spec, params = net("cnn")
    w = params[0]
    dense = torch.func.jacrev(lambda z: torch.nn.functional.conv2d(z.reshape(1, *SHAPE), w, None, 1, 1).reshape(-1))(
        torch.zeros(36, dtype=torch.float64))
    exact = float(torch.linalg.matrix_norm(dense, ord=2))
    est = operator_norm(lambda v: torch.nn.functional.conv2d(v, w, None, 1, 1), SHAPE)
    assert est == pytest.approx(exact, rel=1e-9) and est <= exact * (1 + 1e-12)
    reshaped = float(torch.linalg.matrix_norm(w.reshape(3, -1), ord=2))
    assert abs(est - reshaped) > 1e-3 * exact  # the operator norm is not the reshaped kernel's
    # the product of the factors bounds the network's Lipschitz constant: the Jacobian's norm at random points
    factors = spec.lipschitz_factors(params)
    assert len(factors) == 3
    for s in range(5):
        x = torch.randn(36, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        jac = torch.func.jacrev(lambda z: spec.forward(params, z[None])[0])(x)
        assert float(torch.linalg.matrix_norm(jac, ord=2)) <= np.prod(factors) * (1 + 1e-9)
    # scale equivariance: each factor of c theta is c times
    scaled = spec.lipschitz_factors([3.0 * p for p in params])
    assert np.allclose(scaled, 3.0 * np.array(factors), rtol=1e-9)


def test_a_first_layer_is_dense_only_where_each_row_of_its_weight_is_an_image():
    """The MLP (either route, a Flatten before it included) has a dense first layer; a convolution first, or a
    linear layer over part of the input after something else, does not."""
    assert net("mlp")[1].first_layer_dense() and not net("cnn")[1].first_layer_dense()
    assert victim_from_module(mlp_module(), SHAPE).spec.first_layer_dense()
    pooled = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9, 1))  # its rows are not images of the input
    assert not victim_from_module(pooled, SHAPE).spec.first_layer_dense()


def test_homogeneity_and_normalisation_of_a_cnn():
    _, spec, params = net("cnn")  # a bias on the first layer only: homogeneous of degree 3
    assert spec.homogeneity().degree == 3
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    assert torch.allclose(spec.forward([2.0 * p for p in params], x), 8.0 * spec.forward(params, x), rtol=1e-12)
    a, rec_a = normalise(Payload(spec, params))
    b, rec_b = normalise(Payload(spec, [10.0 * p for p in params]))
    assert rec_a["applied"] and rec_a["degree"] == 3
    for p, q in zip(a.params, b.params):
        assert torch.allclose(p, q, rtol=1e-9)
    mod = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 1))  # a bias after the first layer
    w = victim_from_module(mod, SHAPE)
    assert w.spec.homogeneity().degree is None and "layers[3] (linear) has a bias" in w.spec.homogeneity().reason
    _, rec = normalise(Payload(w.spec, w.params))
    assert not rec["applied"] and "layers[3]" in rec["reason"]


def test_a_layer_list_round_trips_and_bad_ones_get_one_line(tmp_path):
    _, spec, _ = net("cnn")
    assert architecture_from_dict(json.loads(json.dumps(to_dict(spec))), "m") == spec
    base = {"kind": "sequential", "input_shape": [1, 6, 6]}
    cases = [
        ([{"type": "conv3d"}], "is not one of"),
        ([{"type": "conv2d", "channels": 2}], "kernel"),
        ([{"type": "conv2d", "channels": 2, "kernel": 3}, {"type": "linear", "features": 1}], "put a flatten layer"),
        ([{"type": "flatten"}, {"type": "linear", "features": 1, "kernel": 3}], "does not apply to a linear layer"),
        ([{"type": "conv2d", "channels": 2, "kernel": 9}, {"type": "flatten"}], "does not fit"),
        ([{"type": "conv2d", "channels": 2, "kernel": 3}], "flat outputs"),
        ([{"type": "flatten"}, {"type": "linear", "features": 1, "chanels": 3}], "unknown field 'chanels'"),
    ]
    for layers, msg in cases:
        with pytest.raises(TrainreconError, match=msg) as e:
            architecture_from_dict({**base, "layers": layers}, "model.json")
        assert "\n" not in str(e.value)
    with pytest.raises(TrainreconError, match="kind"):
        architecture_from_dict({"kind": "resnet"}, "model.json")


def _save_sd(path, module):
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainrecon", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    def make():
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(3, 4, 2, stride=1, bias=False), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
                             nn.Flatten(), nn.Linear(4, 1, bias=False))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, bias=False)
            self.fc = nn.Linear(32, 1, bias=False)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    def functional():
        return Net()

    def batchnorm():
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 1))
''')


@pytest.mark.slow
def test_every_import_route_gives_the_same_victim_and_candidates(tmp_path):
    """A bias-free CNN's nn.Sequential state dict (safetensors) with its layer list, through --module, and as the
    module object from Python: one victim, one set of candidates; the attack sees only the payload."""
    torch.manual_seed(0)
    mod = cnn_module().double()
    with torch.no_grad():  # weights a float32 module cannot hold (a victim trained in float64, bench/outside.py)
        for p in mod.parameters():
            p.add_(1e-9 * torch.randn_like(p))
    _save_sd(tmp_path / "w.safetensors", mod)
    (tmp_path / "arch.json").write_text(json.dumps({"kind": "sequential", "input_shape": SHAPE, "layers": [  # by hand
        {"type": "conv2d", "channels": 3, "kernel": 3, "padding": 1}, {"type": "relu"}, {"type": "max_pool", "kernel": 2},
        {"type": "conv2d", "channels": 4, "kernel": 2}, {"type": "leaky_relu", "slope": 0.1}, {"type": "avg_pool", "kernel": 2},
        {"type": "flatten"}, {"type": "linear", "features": 1}]}))
    (tmp_path / "user.py").write_text(FACTORY)
    r1 = _cli("import", tmp_path / "w.safetensors", tmp_path / "arch.json", tmp_path / "v_list")
    r2 = _cli("import", tmp_path / "w.safetensors", tmp_path / "v_mod", "--module", f"{tmp_path / 'user.py'}:make",
              "--input-shape", "1,6,6")
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    w = victim_from_module(mod, SHAPE)
    assert w.spec == architecture_from_dict(json.loads((tmp_path / "arch.json").read_text()), "arch.json")
    save_victim(tmp_path / "v_py", w.spec, w.params, None, {})
    victims = [load_victim(tmp_path / n) for n in ("v_list", "v_mod", "v_py")]
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    for v in victims:
        assert v.spec == victims[0].spec
        assert all(torch.equal(a, b) for a, b in zip(v.params, victims[0].params))
        assert v.spec.param_names() == ["0.weight", "3.weight", "7.weight"]  # nn.Sequential's names, unchanged
        assert torch.allclose(v.spec.forward(v.params, x), mod(x), rtol=1e-12)
    cands = []
    for n in ("v_list", "v_mod", "v_py"):
        payload = payload_from_folder(tmp_path / n, disclose_n=False)
        res = reconstruct(payload, HaimConfig(m=6, iterations=20, checkpoint_every=20), tmp_path / f"r_{n}",
                          log=lambda *a: None)
        assert res.finished
        cands.append(np.load(tmp_path / f"r_{n}" / "candidates.npz")["x"])
    assert cands[0].shape == (6, *SHAPE)
    assert np.array_equal(cands[0], cands[1]) and np.array_equal(cands[0], cands[2])
    # the module object attacked in memory, with no folder at all (n not disclosed: m given)
    in_memory = reconstruct(w, HaimConfig(m=6, iterations=20, checkpoint_every=20), log=lambda *a: None)
    assert np.array_equal(in_memory.x.numpy(), cands[0])


@pytest.mark.slow
def test_module_refusals_are_one_line(tmp_path):
    (tmp_path / "user.py").write_text(FACTORY)
    torch.manual_seed(0)
    _save_sd(tmp_path / "w.safetensors", cnn_module())
    ns: dict = {}
    exec(FACTORY, ns)
    _save_sd(tmp_path / "f.safetensors", ns["functional"]())
    _save_sd(tmp_path / "bn.safetensors", ns["batchnorm"]())
    _save_sd(tmp_path / "other.safetensors", mlp_module())
    cases = [
        (["f.safetensors", "--module", "user.py:functional"], "activation applied as a function"),
        (["bn.safetensors", "--module", "user.py:batchnorm"], "layer '1' (BatchNorm2d) has no declarative form"),
        (["other.safetensors", "--module", "user.py:make"], "does not match the module's state dict (missing '0.weight'"),
        (["w.safetensors", "--module", "user.py:nothing"], "defines no function 'nothing'"),
        (["w.safetensors", "--module", "user.py:make"], "--input-shape"),
    ]
    for i, (args, msg) in enumerate(cases):
        extra = ["--input-shape", "1,6,6"] if msg != "--input-shape" else []
        r = _cli("import", args[0], f"out{i}", *args[1:], *extra, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # from Python: the same refusals
    with pytest.raises(TrainreconError, match="activation applied as a function"):
        victim_from_module(ns["functional"](), SHAPE)


@pytest.mark.slow
def test_state_dict_imports_infer_an_mlp_and_refuse_what_they_cannot(tmp_path):
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 6, bias=False), nn.ReLU(),
                        nn.Linear(6, 1, bias=False)).double()
    _save_sd(tmp_path / "mlp.safetensors", mod)
    r = _cli("import", tmp_path / "mlp.safetensors", tmp_path / "v")
    assert r.returncode == 0, r.stderr
    v = load_victim(tmp_path / "v")
    assert v.spec.input_shape == [1, 8, 8] and v.spec.param_names() == ["0.weight", "0.bias", "2.weight", "4.weight"]
    x = torch.randn(3, 64, dtype=torch.float64)
    assert torch.allclose(v.spec.forward(v.params, x), mod(x), rtol=1e-12)
    assert v.spec.homogeneity().degree == 3
    assert "ReLU assumed" in v.train_info["architecture_inferred"]
    # an MLP under trainrecon's own names layers.{i} infers as an MLPSpec
    sd = {f"layers.{i}.weight": p for i, p in enumerate([mod[0].weight, mod[2].weight, mod[4].weight])}
    spec, _, _ = infer_architecture(sd, "w", [1, 8, 8])
    assert isinstance(spec, MLPSpec) and spec.widths == [64, 12, 6, 1]
    # refusals, one line each
    torch.manual_seed(0)
    _save_sd(tmp_path / "cnn.safetensors", cnn_module())
    bad = {"0.weight": torch.randn(5, 64), "2.weight": torch.randn(1, 4)}
    save_file(bad, str(tmp_path / "chain.safetensors"))
    (tmp_path / "arch.json").write_text(json.dumps({"kind": "sequential", "input_shape": [1, 6, 6], "layers": [
        {"type": "conv2d", "channels": 5, "kernel": 3}, {"type": "flatten"}, {"type": "linear", "features": 1}]}))
    cases = [
        (["cnn.safetensors", "out1"], "convolution kernel"),
        (["chain.safetensors", "out2"], "takes 4 inputs but the layer before it gives 5"),
        (["cnn.safetensors", "arch.json", "out3"], "tensor '0.weight' has shape (3, 1, 3, 3), model.json implies (5, 1, 3, 3)"),
        (["mlp.safetensors", "arch.json", "out4"], "model.json implies"),
    ]
    for args, msg in cases:
        r = _cli("import", *args, cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_kkt_trainer_trains_a_cnn_from_a_layer_list(tmp_path):
    from trainrecon.data.tasks import build_task
    from trainrecon.training import TrainConfig, train_binary

    layers = [{"type": "conv2d", "channels": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
              {"type": "max_pool", "kernel": 2}, {"type": "flatten"}, {"type": "linear", "features": 1}]
    cfg = TrainConfig(layers=layers, margin_schedule=[10.0], lbfgs_iters=40, seed=0)
    assert cfg.init_scale == [0.1, 0.1]
    data = build_task(TINY_TASK)
    x = torch.as_tensor(data.centred(data.x_train))
    y = torch.as_tensor(data.y_train, dtype=torch.float64)
    spec, params, summary = train_binary(cfg, x, y, log=lambda *a: None)
    assert isinstance(spec, SequentialSpec) and spec.param_names() == ["0.weight", "4.weight"]
    assert summary["final"]["train_accuracy"] == 1.0
    assert min(float(q) for q in (y * spec.forward(params, x)[:, 0])) == pytest.approx(1.0, rel=1e-6)
    assert summary["final"]["kkt_residual"] < 0.9
    with pytest.raises(TrainreconError, match="gives 3 outputs"):
        TrainConfig(layers=[{"type": "flatten"}, {"type": "linear", "features": 3}]).spec([1, 8, 8], 1)
    with pytest.raises(TrainreconError, match="train.layers\\[0\\].channels"):
        TrainConfig(layers=[{"type": "conv2d", "kernel": 3}])


def test_softplus_victims_import_run_exactly_and_are_not_homogeneous():
    """A smooth softplus network (Loo's smooth-victim setting): nn.Softplus converts to a softplus layer, the
    layer list's forward equals the module's in float64 under every surrogate (nothing to swap: it is smooth),
    and the scale normalisation says why it does not apply; an MLP spec with activation softplus agrees."""
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Flatten(), nn.Linear(36, 5, bias=False), nn.Softplus(), nn.Linear(5, 1, bias=False)).double()
    w = victim_from_module(mod, SHAPE)
    assert "softplus" in w.spec.activations()
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    want = mod(x)
    for sur in (Surrogate("exact"), Surrogate("modified_relu", 30.0), Surrogate("softplus", 5.0)):
        assert torch.allclose(w.spec.forward(w.params, x, sur), want, rtol=1e-12, atol=1e-14)
    mlp = MLPSpec([36, 5, 1], [False, False], activation="softplus", input_shape=SHAPE)
    assert torch.allclose(mlp.forward([p.detach() for p in mod.parameters() if p.ndim == 2], x), want, rtol=1e-12)
    assert w.spec.homogeneity().degree is None and "softplus" in w.spec.homogeneity().reason
    assert mlp.homogeneity().degree is None
    with pytest.raises(TrainreconError, match="beta=1"):
        victim_from_module(nn.Sequential(nn.Flatten(), nn.Linear(36, 1), nn.Softplus(beta=2.0)), SHAPE)
