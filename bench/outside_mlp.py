"""Train an MNIST odd/even MLP the way a user would, with plain torch and nothing of trainrecon's: a victim
"trained outside this project" for the benchmarks.

    nn.Sequential(Linear(784, w1), ReLU, Linear(w1, w2), ReLU, Linear(w2, 1)), PyTorch's default init,
    full-batch gradient descent on the logistic loss L = mean_i log(1 + exp(-y_i f(x_i - mean))) (with
    ``--log-loss``: on log L, the loss-normalised step lr grad L / L, computed in log space),

on the first ``n_per_class`` odd and even training images of MNIST in [0, 1], centred by their pixel mean.
Writes ``model.safetensors`` (the state dict as ``model.state_dict()`` names it), ``mean.npz`` (x: the mean,
(1, 28, 28)) and ``train.json`` (settings, final loss and margin) into OUT; then

    trainrecon import OUT/model.safetensors OUT/victim --mean OUT/mean.npz

makes it a victim folder (its architecture inferred from the state dict), and ``trainrecon evaluate`` needs the
training images, which this script also writes (``OUT/train_images.npz``: x in [0, 1], y, indices) with 14n
test images it never saw (``OUT/heldout_images.npz``): ``--truth`` and ``--heldout``.

    python bench/outside_mlp.py --data-dir ../shared/data --out bench/results/outside_n100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--hidden", default="500,500")
    ap.add_argument("--bias", action="store_true", help="biases on every layer (default: none)")
    ap.add_argument("--epochs", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=0.01, help="step on log L")
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
    x = torch.tensor(x_all[idx], dtype=torch.float64).reshape(len(idx), -1) / 255.0
    y = torch.tensor(np.where(y_all[idx] % 2 == 1, 1.0, -1.0), dtype=torch.float64)
    mean = x.mean(0)
    xc = x - mean
    widths = [784, *map(int, a.hidden.split(",")), 1]
    layers: list[torch.nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1], bias=a.bias))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).double()
    t0 = time.time()
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
            print(f"epoch {epoch}: log-loss {log_loss.item():.4g}, min margin {margin.min().item():.4g}, normalised "
                  f"min margin {margin.min().item() / norm.item() ** (len(widths) - 1):.4g}", flush=True)
    margin = (y * net(xc).squeeze(1)).detach()
    a.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(a.out / "model.safetensors"))
    np.savez_compressed(a.out / "mean.npz", x=mean.reshape(1, 28, 28).numpy())
    np.savez_compressed(a.out / "train_images.npz", x=x.reshape(-1, 1, 28, 28).numpy(), y=y.numpy(), indices=idx)
    t = np.load(a.data_dir / "mnist_test.npz")  # images it never saw: 7n of the test split, odd and even alternating
    t_odd, t_even = np.flatnonzero(t["y"] % 2 == 1)[: 7 * a.n_per_class], np.flatnonzero(t["y"] % 2 == 0)[: 7 * a.n_per_class]
    t_idx = np.stack([t_odd, t_even], 1).reshape(-1)
    np.savez_compressed(a.out / "heldout_images.npz", x=t["x"][t_idx].reshape(-1, 1, 28, 28).astype(np.float64) / 255.0,
                        y=np.where(t["y"][t_idx] % 2 == 1, 1.0, -1.0))
    (a.out / "train.json").write_text(json.dumps({
        "widths": widths, "bias": a.bias, "epochs": a.epochs, "lr": a.lr, "seed": a.seed,
        "final_log_loss": float(log_loss.detach()), "min_margin": float(margin.min()),
        "seconds": time.time() - t0, "indices": idx.tolist()}, indent=1))
    print(f"done in {time.time() - t0:.0f} s: min margin {margin.min().item():.3f}")


if __name__ == "__main__":
    main()
