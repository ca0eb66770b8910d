"""Train an MNIST or CIFAR-10 MLP or CNN the way a user would, with plain torch and nothing of trainrecon's: a
victim "trained outside this project" for the benchmarks, saved as its owner would save it (the state dict, the
initial weights, the recipe).

    --net mlp: nn.Sequential(Linear(d, w1), ReLU, Linear(w1, w2), ReLU, Linear(w2, K))
    --net cnn: nn.Sequential(Conv2d(C, c1, k), ReLU, MaxPool2d(2), Conv2d(c1, c2, k), ReLU, MaxPool2d(2), Flatten,
               [Linear, ReLU]*, Linear(., K)) (``--channels c1,c2``, ``--kernel k``, ``--pool max|avg``, ``--fc``
               hidden linear widths; LeNet-style: ``--fc 128 --bias``)

K = 1 for ``--task odd_even`` (MNIST odd vs even) and ``vehicles_animals`` (CIFAR-10), K = 10 for ``multiclass``.
Biases only with ``--bias``.  PyTorch's default init (seeded by ``--seed``), inputs in [0, 1] centred by the
training images' pixel mean, then one of:

* ``--optimizer gd`` (the default, the earlier bench victims): full-batch gradient descent on the logistic loss
  L = mean_i log(1 + exp(-y_i f(x_i))) (``--log-loss``: on log L, the loss-normalised step lr grad L / L);
* ``--optimizer sgd`` / ``adam``: the way people train, ``torch.optim.SGD(lr, momentum, weight_decay)`` or
  ``torch.optim.Adam(lr, weight_decay)`` on mini-batches of ``--batch-size`` (0: full batch) for ``--epochs``
  epochs, each epoch's order ``torch.randperm(n, generator=g)`` with g seeded by ``--data-order-seed``; the loss is
  the mean cross-entropy (K > 1) or logistic loss (K = 1, labels 0/1 as BCEWithLogits).

Writes into OUT: ``model.safetensors`` (the state dict as ``model.state_dict()`` names it, in ``--dtype``),
``init.safetensors`` (the initial state dict, as an owner would keep it), ``recipe.json`` (the recipe as
trainrecon's ``--recipe`` reads it: optimiser and its settings, loss, batch size, epochs, data-order seed; for
``gd`` too), ``mean.npz`` (x: the mean, (C, H, W)), ``train.json`` (settings, final loss and margin, and per tensor
how far training moved it: ||theta_T - theta_0|| / ||theta_T||), ``layers.json`` (the layer list, written by hand
as a user would) and ``factory.py:build`` (the same nn.Sequential), then

    trainrecon import OUT/model.safetensors OUT/victim --module OUT/factory.py:build --input-shape 1,28,28 \
        --mean OUT/mean.npz [--init OUT/init.safetensors --recipe OUT/recipe.json]
    trainrecon import OUT/model.safetensors OUT/layers.json OUT/victim --mean OUT/mean.npz ...

``trainrecon evaluate`` needs the training images, which this script also writes (``OUT/train_images.npz``: x in
[0, 1], y, indices) with 7n test images it never saw (``OUT/heldout_images.npz``): ``--truth`` and ``--heldout``.

    python bench/outside.py --data-dir ../shared/data --out bench/results/outside_n100
    python bench/outside.py --net cnn --n-per-class 10 --lr 0.2 --epochs 100000 --data-dir ../shared/data --out bench/results/outside_cnn
    python bench/outside.py --net cnn --optimizer adam --n-per-class 10 --lr 0.001 --epochs 20000 --data-dir ../shared/data --out bench/results/outside_cnn_adam
    python bench/outside.py --net cnn --fc 64 --n-per-class 10 --lr 0.2 --epochs 50000 --data-dir ../shared/data --out bench/results/outside_cnn_fc
    python bench/outside.py --net mlp --hidden 16,16 --n-per-class 10 --lr 0.2 --epochs 50000 --data-dir ../shared/data --out bench/results/outside_mlp16

and the victims trained as people train them (bench/people.py lists the whole grid), e.g.

    python bench/outside.py --task multiclass --n-per-class 5 --hidden 512,512 --bias --optimizer sgd --lr 0.05 \
        --momentum 0.9 --weight-decay 5e-4 --batch-size 10 --epochs 200 --dtype float32 --data-dir ../shared/data --out OUT

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

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
FILES = {"mnist": ("mnist_subset.npz", "mnist_test.npz"), "cifar10": ("cifar10_subset.npz", "cifar10_test_subset.npz")}
VEHICLES = (0, 1, 8, 9)  # CIFAR-10 airplane, automobile, ship, truck: label +1 (animals -1)


def cnn_source(in_channels: int, channels: list[int], kernel: int, pool: str, bias: bool, n_flat: int, fc: list[int],
               outputs: int) -> str:
    """The factory file's text: one function ``build()`` returning the CNN (the --module route runs it)."""
    p = "MaxPool2d" if pool == "max" else "AvgPool2d"
    c1, c2 = channels
    widths = [n_flat, *fc, outputs]
    head = ", nn.ReLU(), ".join(f"nn.Linear({a}, {b}, bias={bias})" for a, b in zip(widths, widths[1:]))
    return ("import torch.nn as nn\n\n\ndef build():\n    return nn.Sequential(\n"
            f"        nn.Conv2d({in_channels}, {c1}, {kernel}, bias={bias}), nn.ReLU(), nn.{p}(2),\n"
            f"        nn.Conv2d({c1}, {c2}, {kernel}, bias={bias}), nn.ReLU(), nn.{p}(2),\n"
            f"        nn.Flatten(), {head})\n")


def mlp_source(widths: list[int], bias: bool) -> str:
    """The factory file of an MLP: ``build()`` returning nn.Sequential(Linear, ReLU, ..., Linear)."""
    layers = ", nn.ReLU(), ".join(f"nn.Linear({a}, {b}, bias={bias})" for a, b in zip(widths, widths[1:]))
    return f"import torch.nn as nn\n\n\ndef build():\n    return nn.Sequential({layers})\n"


def cnn_layers(shape, channels: list[int], kernel: int, pool: str, bias: bool, fc: list[int], outputs: int) -> dict:
    """The same CNN as trainrecon's declarative layer list (model.json fields, kind 'sequential'), written by hand
    as a user would (not derived by trainrecon from the module), so that bench/imported.py checks the routes
    against each other."""
    conv = [{"type": "conv2d", "channels": c, "kernel": kernel, "bias": bias} for c in channels]
    act = [{"type": "relu"}, {"type": f"{pool}_pool", "kernel": 2}]
    head = []
    for w in fc:
        head += [{"type": "linear", "features": w, "bias": bias}, {"type": "relu"}]
    return {"kind": "sequential", "input_shape": list(shape),
            "layers": [conv[0], *act, conv[1], *act, {"type": "flatten"}, *head,
                       {"type": "linear", "features": outputs, "bias": bias}]}


def mlp_layers(shape, widths: list[int], bias: bool) -> dict:
    layers = []
    for i, w in enumerate(widths[1:]):
        layers.append({"type": "linear", "features": w, "bias": bias})
        if i < len(widths) - 2:
            layers.append({"type": "relu"})
    return {"kind": "sequential", "input_shape": list(shape), "layers": layers}


def pick(y: np.ndarray, task: str, n_per_class: int, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of the first n_per_class images of each class, sorted: labels +-1 (odd/even, vehicles/
    animals) or the class 0..9 (multiclass)."""
    if task == "multiclass":
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in range(10)]))
        return idx, y[idx].astype(np.int64)
    pos = np.isin(y, VEHICLES) if dataset == "cifar10" else (y % 2 == 1)
    idx = np.sort(np.concatenate([np.flatnonzero(pos)[:n_per_class], np.flatnonzero(~pos)[:n_per_class]]))
    return idx, np.where(pos[idx], 1.0, -1.0)


def heldout(y: np.ndarray, task: str, count: int, dataset: str) -> np.ndarray:
    """``count`` test indices, the classes interleaved (odd and even, or 0..9 in turn)."""
    if task == "multiclass":
        per = -(-count // 10)
        return np.stack([np.flatnonzero(y == c)[:per] for c in range(10)], 1).reshape(-1)[:count]
    pos = np.isin(y, VEHICLES) if dataset == "cifar10" else (y % 2 == 1)
    half = -(-count // 2)
    return np.stack([np.flatnonzero(pos)[:half], np.flatnonzero(~pos)[:half]], 1).reshape(-1)[:count]


def images(x: np.ndarray, dataset: str) -> np.ndarray:
    """uint8 images as float64 (N, C, H, W) in [0, 1]."""
    x = x.astype(np.float64) / 255.0
    return x.transpose(0, 3, 1, 2) if dataset == "cifar10" else x[:, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    ap.add_argument("--task", default="odd_even", choices=["odd_even", "vehicles_animals", "multiclass"])
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--net", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--hidden", default="500,500", help="MLP widths")
    ap.add_argument("--channels", default="16,32", help="CNN channels of its two convolutions")
    ap.add_argument("--kernel", type=int, default=5, help="CNN kernel size")
    ap.add_argument("--pool", default="max", choices=["max", "avg"])
    ap.add_argument("--fc", default="", help="CNN: widths of hidden linear layers after flatten (default none)")
    ap.add_argument("--bias", action="store_true", help="biases on every layer (default: none)")
    ap.add_argument("--epochs", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--optimizer", default="gd", choices=["gd", "sgd", "adam"],
                    help="gd: full-batch GD on the logistic loss (the earlier victims); sgd, adam: torch.optim on "
                         "mini-batches")
    ap.add_argument("--momentum", type=float, default=0.0, help="sgd")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="sgd, adam (torch's L2 weight_decay)")
    ap.add_argument("--batch-size", type=int, default=0, help="sgd, adam: 0 is the full batch")
    ap.add_argument("--data-order-seed", type=int, default=None, help="sgd, adam: seed of the batch order (default --seed)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="what the network is trained in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=2000)
    ap.add_argument("--log-loss", action="store_true", help="gd: descend log L (loss-normalised steps) instead of L")
    a = ap.parse_args()
    if (a.task == "vehicles_animals") != (a.dataset == "cifar10") and a.task != "multiclass":
        ap.error("--task: odd_even is MNIST's, vehicles_animals CIFAR-10's")
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    torch.manual_seed(a.seed)
    train_file, test_file = FILES[a.dataset]
    d = np.load(a.data_dir / train_file)
    idx, labels = pick(d["y"], a.task, a.n_per_class, a.dataset)
    shape = SHAPES[a.dataset]
    outputs = 10 if a.task == "multiclass" else 1
    x = torch.tensor(images(d["x"][idx], a.dataset))
    mean = x.mean(0)
    xc = (x - mean).to(dtype)
    if a.net == "mlp":
        widths = [int(np.prod(shape)), *map(int, a.hidden.split(",")), outputs]
        source = mlp_source(widths, a.bias)
        arch = {"widths": widths}
        layer_list = mlp_layers(shape, widths, a.bias)
        depth = len(widths) - 1
        xc = xc.reshape(len(idx), -1)
    else:
        channels = [int(c) for c in a.channels.split(",")]
        side = ((shape[1] - a.kernel + 1) // 2 - a.kernel + 1) // 2
        fc = [int(w) for w in a.fc.split(",") if w]
        source = cnn_source(shape[0], channels, a.kernel, a.pool, a.bias, channels[1] * side * side, fc, outputs)
        arch = {"channels": channels, "kernel": a.kernel, "pool": a.pool, "fc": fc}
        layer_list = cnn_layers(shape, channels, a.kernel, a.pool, a.bias, fc, outputs)
        depth = 3 + len(fc)
    scope: dict = {}
    exec(compile(source, "factory.py", "exec"), scope)  # the very module the factory file builds
    net = scope["build"]().to(dtype)
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    n = len(idx)
    t0 = time.time()
    if a.optimizer == "gd":
        if outputs != 1:
            ap.error("--optimizer gd trains the logistic loss of a binary task; use sgd or adam for multiclass")
        y = torch.tensor(labels, dtype=dtype)
        for epoch in range(a.epochs):
            margin = y * net(xc).squeeze(1)
            log_l = torch.where(margin > 30, -margin, torch.log(torch.nn.functional.softplus(-margin.clamp(max=30))))
            log_loss = torch.logsumexp(log_l, 0) - np.log(len(margin))
            net.zero_grad()
            (log_loss if a.log_loss else log_loss.exp()).backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= a.lr * p.grad
            if epoch % a.log_every == 0:
                norm = torch.sqrt(sum((p ** 2).sum() for p in net.parameters()))
                print(f"epoch {epoch}: log-loss {log_loss.item():.4g}, min margin {margin.min().item():.4g}, "
                      f"normalised min margin {margin.min().item() / norm.item() ** depth:.4g}", flush=True)
        final_loss = float(log_loss.detach().exp())
        recipe = {"optimizer": "sgd", "lr": a.lr, "loss": "logistic", "batch_size": 0, "epochs": a.epochs}
        if a.log_loss:
            recipe = None  # loss-normalised steps have no torch.optim equivalent
    else:
        if outputs == 1:
            target = torch.tensor((labels > 0).astype(np.float64), dtype=dtype)
            loss_fn = lambda out, t: torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), t)  # noqa: E731
        else:
            target = torch.tensor(labels)
            loss_fn = torch.nn.functional.cross_entropy
        if a.optimizer == "sgd":
            opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=a.lr, weight_decay=a.weight_decay)
        order_seed = a.seed if a.data_order_seed is None else a.data_order_seed
        g = torch.Generator().manual_seed(order_seed)
        bs = a.batch_size or n
        for epoch in range(a.epochs):
            perm = torch.randperm(n, generator=g)
            for k in range(0, n, bs):
                b = perm[k: k + bs]
                opt.zero_grad()
                loss_fn(net(xc[b]), target[b]).backward()
                opt.step()
            if epoch % a.log_every == 0 or epoch == a.epochs - 1:
                with torch.no_grad():
                    out = net(xc)
                    full = loss_fn(out, target)
                    acc = ((out.squeeze(1) > 0).float() == target).float().mean() if outputs == 1 else \
                        (out.argmax(1) == target).float().mean()
                print(f"epoch {epoch}: loss {full.item():.4g}, train accuracy {acc.item():.3f}", flush=True)
        final_loss = float(full)
        recipe = {"optimizer": a.optimizer, "lr": a.lr, "loss": "logistic" if outputs == 1 else "cross_entropy",
                  "batch_size": a.batch_size, "epochs": a.epochs, "weight_decay": a.weight_decay,
                  "data_order_seed": order_seed}
        if a.optimizer == "sgd":
            recipe["momentum"] = a.momentum
    with torch.no_grad():
        out = net(xc)
        if outputs == 1:
            margin = torch.tensor(labels, dtype=dtype) * out.squeeze(1)
        else:
            lab = torch.tensor(labels)
            own = out.gather(1, lab[:, None]).squeeze(1)
            margin = own - out.scatter(1, lab[:, None], -torch.inf).max(1).values
    a.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(a.out / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in init.items()}, str(a.out / "init.safetensors"))
    if recipe is not None:
        (a.out / "recipe.json").write_text(json.dumps(recipe, indent=1))
    moved = {k: float((v - init[k]).norm() / v.norm()) for k, v in net.state_dict().items()}
    (a.out / "factory.py").write_text(source)
    (a.out / "layers.json").write_text(json.dumps(layer_list, indent=1))
    np.savez_compressed(a.out / "mean.npz", x=mean.reshape(shape).numpy())
    np.savez_compressed(a.out / "train_images.npz", x=x.reshape(-1, *shape).numpy(), y=labels, indices=idx)
    t = np.load(a.data_dir / test_file)  # images it never saw: 7n of the test split, the classes interleaved
    t_idx = heldout(t["y"], a.task, 7 * n, a.dataset)
    t_lab = t["y"][t_idx] if a.task == "multiclass" else \
        np.where(np.isin(t["y"][t_idx], VEHICLES) if a.dataset == "cifar10" else t["y"][t_idx] % 2 == 1, 1.0, -1.0)
    np.savez_compressed(a.out / "heldout_images.npz", x=images(t["x"][t_idx], a.dataset), y=t_lab)
    (a.out / "train.json").write_text(json.dumps({
        "net": a.net, **arch, "dataset": a.dataset, "task": a.task, "bias": a.bias, "epochs": a.epochs, "lr": a.lr,
        "optimizer": a.optimizer, "momentum": a.momentum, "weight_decay": a.weight_decay, "batch_size": a.batch_size,
        "dtype": a.dtype, "seed": a.seed, "moved": moved, "final_loss": final_loss,
        "min_margin": float(margin.min()), "seconds": time.time() - t0, "indices": idx.tolist()}, indent=1))
    print(f"done in {time.time() - t0:.0f} s: min margin {margin.min().item():.3f}, n = {n}")


if __name__ == "__main__":
    main()
