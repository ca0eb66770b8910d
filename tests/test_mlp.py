import torch
from torch.func import grad, hessian

from trainrecon.models.mlp import MLPSpec, Surrogate

from trainrecon.models.parameters import forward, init_params


def test_forward_matches_nn_sequential():
    spec = MLPSpec(widths=[5, 7, 3, 1], bias=[True, False, True])
    params = init_params(spec, [1.0, 1.0, 1.0], seed=1)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3, bias=False), torch.nn.ReLU(), torch.nn.Linear(3, 1)
    ).double()
    sd = dict(zip(spec.param_names(), params))
    net.load_state_dict({k.replace("layers.1", "2").replace("layers.2", "4").replace("layers.0", "0"): v for k, v in sd.items()})
    x = torch.randn(4, 5, dtype=torch.float64)
    assert torch.allclose(forward(spec, params, x), net(x))


def test_modified_relu_value_derivatives_against_oracle():
    """Forward = relu; d/dz = sigmoid(alpha z); d2/dz2 = alpha s (1 - s): checked with torch.func.hessian."""
    spec = MLPSpec(widths=[3, 4, 1], bias=[True, False])
    params = init_params(spec, [3.0, 3.0], seed=0)
    alpha = 7.0
    sur = Surrogate("modified_relu", alpha)
    x = torch.tensor([0.1291, 2.1339, -0.9635], dtype=torch.float64)  # alpha z reaches 87: past torch's softplus
    # threshold of 20, where the second derivative once came out as 0 instead of alpha s (1 - s)

    def f(xx):
        return forward(spec, params, xx[None], sur)[0, 0]

    W1, b1, W2 = params
    z = W1 @ x + b1
    s = torch.sigmoid(alpha * z)
    assert torch.allclose(f(x), W2[0] @ torch.relu(z))
    assert torch.allclose(grad(f)(x), W1.T @ (W2[0] * s))
    dense_h = W1.T @ torch.diag(W2[0] * alpha * s * (1 - s)) @ W1
    assert torch.allclose(hessian(f)(x), dense_h, atol=1e-12)
