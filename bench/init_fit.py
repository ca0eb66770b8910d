"""Benchmark: how well given images fit a victim's KKT equations, with and without forgiving PyTorch's init.

For a folder written by ``bench/outside.py`` (its victim imported into SRC/victim, or ``--victim``), fixes the
candidates x_i at

* the n training images (labels from train_images.npz),
* the first n held-out images (labels from heldout_images.npz),
* each candidate file given (``trainrecon reconstruct``'s candidates.npz, with the labels it gave them),

and fits only the multipliers lambda >= 0 (L-BFGS-B, exact ReLU, the victim normalised as the attack sees it):

    r(c) = min_lambda F_c(theta - sum_i lambda_i y_i grad_theta f(x_i)) / F_c(theta),
    F_c(v) = sum_p sum_k (|v_pk| - c b_p)_+^2,   b_p = 1/sqrt(fan_in_p) (PyTorch's default init),

for c = 0 (the squared distance every attack minimises by default) and c = 1 (``attack.init_tolerance = 1``).
The smaller r, the better those images explain the weights; an objective singles out the training set when
r(training) is far below r(held-out) and below r(the attack's own candidates).  Writes SRC/init_fit.json.

    python bench/init_fit.py bench/results/outside_cnn bench/results/outside_cnn/bench_init_tolerance/haim/candidates.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.optimize
import torch

import trainrecon as tr
from trainrecon.attacks.normalisation import normalise
from trainrecon.models.parameters import unflatten
from trainrecon.models.stationarity import KKT
from trainrecon.objective.weighted_sum import DeadZoneDistance


def relative_fit(J: torch.Tensor, spec, params: list[torch.Tensor], zone: list[float]) -> float:
    """min_{lambda >= 0} F(sum_i lambda_i J_i) / F(0) for the attack's residual F = DeadZoneDistance(params, zone)
    (zone 0: the squared distance), lambda by L-BFGS-B."""
    outer = DeadZoneDistance(params, zone)

    def f(lam):
        lt = torch.tensor(lam, requires_grad=True)
        v = outer.value(unflatten(spec, lt @ J))
        v.backward()
        return float(v), lt.grad.numpy().astype(np.float64)

    res = scipy.optimize.minimize(f, np.zeros(len(J)), jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(J),
                                  options={"maxiter": 5000})
    return outer.relative(float(res.fun))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("candidates", nargs="*", type=Path)
    ap.add_argument("--victim", type=Path, default=None, help="victim folder (default SRC/victim)")
    a = ap.parse_args()
    torch.manual_seed(0)
    victim = tr.load_victim(a.victim or a.source / "victim")
    payload, _ = normalise(tr.Payload.of(victim))
    spec, params = payload.spec, [p.double() for p in payload.params]
    bounds = [b / payload.scale for b in spec.default_init_bounds()]
    mean = np.load(a.source / "mean.npz")["x"]
    shape = (-1, *spec.input_shape)
    train = np.load(a.source / "train_images.npz")
    n = len(train["y"])
    held = np.load(a.source / "heldout_images.npz")
    sets = {"training images": (train["x"] - mean, train["y"]),
            "held-out images": (held["x"][:n] - mean, held["y"][:n])}
    for c in a.candidates:
        d = np.load(c)  # centred, as a run writes them, with the labels the attack gave them
        y = d["y"] if "y" in d.files else np.where(np.arange(len(d["x"])) < len(d["x"]) // 2, -1.0, 1.0)
        sets[str(c)] = (d["x"], y)
    out = {}
    for name, (x, y) in sets.items():
        x = torch.as_tensor(x, dtype=torch.float64).reshape(shape)
        J = KKT.per_sample_grads(spec, params, x, torch.as_tensor(y, dtype=torch.float64)).double()
        out[name] = {"m": len(x), "squared_distance": relative_fit(J, spec, params, [0.0] * len(bounds)),
                     "init_tolerance_1": relative_fit(J, spec, params, bounds)}
        print(f"| {name} | {len(x)} | {out[name]['squared_distance']:.3f} | {out[name]['init_tolerance_1']:.4f} |")
    (a.source / "init_fit.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
