import numpy as np
import scipy.optimize
import torch

import pytest

from trainrecon.models.stationarity import nnls_gram
from trainrecon.training import TrainConfig, kkt_residual, margins, train_binary
from trainrecon.models.parameters import flatten


def test_nnls_gram_matches_dense_nnls(rng):
    A = rng.normal(size=(40, 6))
    b = rng.normal(size=40)
    lam_ref, r_ref = scipy.optimize.nnls(A, b)
    lam, res2 = nnls_gram(A.T @ A, A.T @ b, float(b @ b))
    assert np.allclose(lam, lam_ref, atol=1e-9)
    assert np.isclose(np.sqrt(res2), r_ref, rtol=1e-8)


class Interrupt(Exception):
    pass


def test_trainer_reaches_kkt_direction_and_resumes(tmp_path, tiny_task):
    x = torch.as_tensor(tiny_task.centred(tiny_task.x_train))
    y = torch.as_tensor(tiny_task.y_train, dtype=torch.float64)
    cfg = TrainConfig(hidden=[16, 16], margin_schedule=[10.0, 100.0], lbfgs_iters=60)
    spec, params, summary = train_binary(cfg, x, y, checkpoint_dir=tmp_path / "a", log=lambda *a: None)
    hist = summary["history"]
    assert summary["final"]["train_accuracy"] == 1.0
    assert hist[-1]["kkt_residual"] < 0.5 * hist[0]["kkt_residual"]
    q = margins(spec, params, x.reshape(len(x), -1), y)
    assert abs(float(q.min()) - 1.0) < 1e-9  # rescaled to unit minimum margin

    def crash_in_stage_two(msg, *a):
        if "Q=10:" in msg:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_binary(cfg, x, y, checkpoint_dir=tmp_path / "b", log=crash_in_stage_two)
    _, resumed, _ = train_binary(cfg, x, y, checkpoint_dir=tmp_path / "b", log=lambda *a: None)
    assert torch.equal(flatten(params), flatten(resumed))


def test_kkt_residual_zero_for_exact_combination():
    """A linear 'network' (one layer, no activation): theta = sum lambda_i y_i x_i gives residual 0."""
    from trainrecon.models.mlp import MLPSpec

    spec = MLPSpec(widths=[5, 1], bias=[False])
    X = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    lam = torch.tensor([0.5, 1.0, 0.0, 2.0], dtype=torch.float64)
    theta = ((lam * y)[:, None] * X).sum(0)[None]
    r = kkt_residual(spec, [theta], X, y)
    assert r["kkt_residual"] < 1e-6  # the Gram form's cancellation floor is ~sqrt(machine eps)
    assert np.allclose(r["lambdas"], lam.numpy(), atol=1e-8)
