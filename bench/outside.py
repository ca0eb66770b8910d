"""Train an MNIST odd/even MLP or CNN the way a user would, with plain torch and nothing of trainrecon's: a
victim "trained outside this project" for the benchmarks.

    --net mlp: nn.Sequential(Linear(784, w1), ReLU, Linear(w1, w2), ReLU, Linear(w2, 1))
    --net cnn: nn.Sequential(Conv2d(1, c1, k), ReLU, MaxPool2d(2), Conv2d(c1, c2, k), ReLU, MaxPool2d(2), Flatten,
               [Linear, ReLU]*, Linear(., 1)) (``--channels c1,c2``, ``--kernel k``, ``--pool max|avg``, ``--fc``
               hidden linear widths; no biases unless --bias)

PyTorch's default init, full-batch gradient descent on the logistic loss L = mean_i log(1 + exp(-y_i f(x_i -
mean))) (with ``--log-loss``: on log L, the loss-normalised step lr grad L / L, computed in log space; with
``--optimizer adam``: torch.optim.Adam at lr instead of plain GD),

on the first ``n_per_class`` odd and even training images of MNIST in [0, 1], centred by their pixel mean.
Writes ``model.safetensors`` (the state dict as ``model.state_dict()`` names it), ``init.safetensors`` (its
initial weights, for analysis: no attack here is given them), ``mean.npz`` (x: the mean,
(1, 28, 28)) and ``train.json`` (settings, final loss and margin, and per tensor how far training moved it:
||theta_T - theta_0|| / ||theta_T||) into OUT; then

    trainrecon import OUT/model.safetensors OUT/victim --mean OUT/mean.npz

makes an MLP a victim folder (its architecture inferred from the state dict).  A CNN's state dict does not
say its strides and paddings: the script writes its layer list (``OUT/layers.json``) and a module factory
(``OUT/factory.py:build``, the same nn.Sequential), for the two other routes

    trainrecon import OUT/model.safetensors OUT/layers.json OUT/victim --mean OUT/mean.npz
    trainrecon import OUT/model.safetensors OUT/victim_module --module OUT/factory.py:build --input-shape 1,28,28 --mean OUT/mean.npz

and ``trainrecon evaluate`` needs the
training images, which this script also writes (``OUT/train_images.npz``: x in [0, 1], y, indices) with 14n
test images it never saw (``OUT/heldout_images.npz``): ``--truth`` and ``--heldout``.

    python bench/outside.py --data-dir ../shared/data --out bench/results/outside_n100
    python bench/outside.py --net cnn --n-per-class 10 --lr 0.2 --epochs 100000 --data-dir ../shared/data --out bench/results/outside_cnn
    python bench/outside.py --net cnn --optimizer adam --n-per-class 10 --lr 0.001 --epochs 20000 --data-dir ../shared/data --out bench/results/outside_cnn_adam
    python bench/outside.py --net cnn --fc 64 --n-per-class 10 --lr 0.2 --epochs 50000 --data-dir ../shared/data --out bench/results/outside_cnn_fc
    python bench/outside.py --net mlp --hidden 16,16 --n-per-class 10 --lr 0.2 --epochs 50000 --data-dir ../shared/data --out bench/results/outside_mlp16

(``--log-loss`` at lr 0.01 diverges on the CNN: its loss-normalised steps grow with the weights.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def cnn_source(channels: list[int], kernel: int, pool: str, bias: bool, n_flat: int, fc: list[int]) -> str:
    """The factory file's text: one function ``build()`` returning the CNN (the --module route runs it)."""
    p = "MaxPool2d" if pool == "max" else "AvgPool2d"
    c1, c2 = channels
    widths = [n_flat, *fc, 1]
    head = ", nn.ReLU(), ".join(f"nn.Linear({a}, {b}, bias={bias})" for a, b in zip(widths, widths[1:]))
    return ("import torch.nn as nn\n\n\ndef build():\n    return nn.Sequential(\n"
            f"        nn.Conv2d(1, {c1}, {kernel}, bias={bias}), nn.ReLU(), nn.{p}(2),\n"
            f"        nn.Conv2d({c1}, {c2}, {kernel}, bias={bias}), nn.ReLU(), nn.{p}(2),\n"
            f"        nn.Flatten(), {head})\n")


def cnn_layers(channels: list[int], kernel: int, pool: str, bias: bool, fc: list[int]) -> dict:
    """The same CNN as trainrecon's declarative layer list (model.json fields, kind 'sequential'), written by hand
    as a user would (not derived by trainrecon from the module), so that bench/imported.py checks the routes
    against each other."""
    conv = [{"type": "conv2d", "channels": c, "kernel": kernel, "bias": bias} for c in channels]
    act = [{"type": "relu"}, {"type": f"{pool}_pool", "kernel": 2}]
    head = []
    for w in fc:
        head += [{"type": "linear", "features": w, "bias": bias}, {"type": "relu"}]
    return {"kind": "sequential", "input_shape": [1, 28, 28],
            "layers": [conv[0], *act, conv[1], *act, {"type": "flatten"}, *head,
                       {"type": "linear", "features": 1, "bias": bias}]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--net", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--hidden", default="500,500", help="MLP widths")
    ap.add_argument("--channels", default="16,32", help="CNN channels of its two convolutions")
    ap.add_argument("--kernel", type=int, default=5, help="CNN kernel size")
    ap.add_argument("--pool", default="max", choices=["max", "avg"])
    ap.add_argument("--fc", default="", help="CNN: widths of hidden linear layers after flatten (default none)")
    ap.add_argument("--bias", action="store_true", help="biases on every layer (default: none)")
    ap.add_argument("--epochs", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=0.01, help="step on log L")
    ap.add_argument("--optimizer", default="gd", choices=["gd", "adam"], help="full-batch GD, or torch.optim.Adam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=2000)
    ap.add_argument("--log-loss", action="store_true", help="descend log L (loss-normalised steps) instead of L")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    d = np.load(a.data_dir / "mnist_subset.npz")
    x_all, y_all = d["x"], d["y"]
    odd = np.flatnonzero(y_all % 2 == 1)[: a.n_per_class]
    even = np.flatnonzero(y_all % 2 == 0)[: a.n_per_class]
    idx = np.sort(np.concatenate([odd, even]))
    shape = (len(idx), -1) if a.net == "mlp" else (len(idx), 1, 28, 28)
    x = torch.tensor(x_all[idx], dtype=torch.float64).reshape(shape) / 255.0
    y = torch.tensor(np.where(y_all[idx] % 2 == 1, 1.0, -1.0), dtype=torch.float64)
    mean = x.mean(0)
    xc = x - mean
    if a.net == "mlp":
        widths = [784, *map(int, a.hidden.split(",")), 1]
        layers: list[torch.nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(torch.nn.Linear(widths[i], widths[i + 1], bias=a.bias))
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        net = torch.nn.Sequential(*layers).double()
        depth, arch = len(widths) - 1, {"widths": widths}
    else:
        channels = [int(c) for c in a.channels.split(",")]
        side = ((28 - a.kernel + 1) // 2 - a.kernel + 1) // 2
        fc = [int(w) for w in a.fc.split(",") if w]
        source = cnn_source(channels, a.kernel, a.pool, a.bias, channels[1] * side * side, fc)
        scope: dict = {}
        exec(compile(source, "factory.py", "exec"), scope)  # the very module the factory file builds
        net = scope["build"]().double()
        depth, arch = 3 + len(fc), {"channels": channels, "kernel": a.kernel, "pool": a.pool, "fc": fc}
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    adam = torch.optim.Adam(net.parameters(), lr=a.lr) if a.optimizer == "adam" else None
    t0 = time.time()
    for epoch in range(a.epochs):
        margin = y * net(xc).squeeze(1)
        log_l = torch.where(margin > 30, -margin, torch.log(torch.nn.functional.softplus(-margin.clamp(max=30))))
        log_loss = torch.logsumexp(log_l, 0) - np.log(len(margin))
        net.zero_grad()
        (log_loss if a.log_loss else log_loss.exp()).backward()
        if adam is not None:
            adam.step()
        else:
            with torch.no_grad():
                for p in net.parameters():
                    p -= a.lr * p.grad
        if epoch % a.log_every == 0:
            norm = torch.sqrt(sum((p ** 2).sum() for p in net.parameters()))
            print(f"epoch {epoch}: log-loss {log_loss.item():.4g}, min margin {margin.min().item():.4g}, normalised "
                  f"min margin {margin.min().item() / norm.item() ** depth:.4g}", flush=True)
    margin = (y * net(xc).squeeze(1)).detach()
    a.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(a.out / "model.safetensors"))
    save_file(init, str(a.out / "init.safetensors"))  # theta_0: for analysis only (the attacker is not given it)
    moved = {k: float((v - init[k]).norm() / v.norm()) for k, v in net.state_dict().items()}
    if a.net == "cnn":
        (a.out / "factory.py").write_text(source)
        (a.out / "layers.json").write_text(json.dumps(cnn_layers(channels, a.kernel, a.pool, a.bias, fc), indent=1))
    np.savez_compressed(a.out / "mean.npz", x=mean.reshape(1, 28, 28).numpy())
    np.savez_compressed(a.out / "train_images.npz", x=x.reshape(-1, 1, 28, 28).numpy(), y=y.numpy(), indices=idx)
    t = np.load(a.data_dir / "mnist_test.npz")  # images it never saw: 7n of the test split, odd and even alternating
    t_odd, t_even = np.flatnonzero(t["y"] % 2 == 1)[: 7 * a.n_per_class], np.flatnonzero(t["y"] % 2 == 0)[: 7 * a.n_per_class]
    t_idx = np.stack([t_odd, t_even], 1).reshape(-1)
    np.savez_compressed(a.out / "heldout_images.npz", x=t["x"][t_idx].reshape(-1, 1, 28, 28).astype(np.float64) / 255.0,
                        y=np.where(t["y"][t_idx] % 2 == 1, 1.0, -1.0))
    (a.out / "train.json").write_text(json.dumps({
        "net": a.net, **arch, "bias": a.bias, "epochs": a.epochs, "lr": a.lr, "optimizer": a.optimizer, "seed": a.seed,
        "moved": moved, "final_log_loss": float(log_loss.detach()), "min_margin": float(margin.min()),
        "seconds": time.time() - t0, "indices": idx.tolist()}, indent=1))
    print(f"done in {time.time() - t0:.0f} s: min margin {margin.min().item():.3f}")


if __name__ == "__main__":
    main()
