"""Benchmark: a bias-free CNN victim against an MLP of about the same parameter count, on the same MNIST images.

Both victims are trained by the KKT trainer (logistic loss toward the max-margin direction, stored at unit
margin) on MNIST odd/even, n = 20 (the same 20 images), and attacked by the Haim KKT attack with its defaults
(only the iteration count is lowered to fit the CPU budget: ``--iterations``); each is evaluated with every
control (held-out, null mean / noise / another subset's mean, true images).  Writes ``OUT/<case>/`` (victim,
reconstruction, metrics.json, grid.png, bench.json with seconds per iteration and peak memory) and prints a
Markdown table.

    python bench/cnn.py --data-dir ../shared/data --iterations 3000
    python bench/cnn.py --data-dir ../shared/data --iterations 3000 --n-per-class 25            # MNIST n = 50
    python bench/cnn.py --data-dir ../shared/data --iterations 3000 --dataset cifar10           # CIFAR-10 n = 20
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from trainrecon.config import save_json
from trainrecon.pipeline import run_experiment
from trainrecon.runtime import resolve_device

CNN = [  # 1x28x28 -> 16x24x24 -> 16x12x12 -> 32x8x8 -> 32x4x4 -> 512 -> 1; 13,712 parameters, no biases
    {"type": "conv2d", "channels": 16, "kernel": 5}, {"type": "relu"}, {"type": "max_pool", "kernel": 2},
    {"type": "conv2d", "channels": 32, "kernel": 5}, {"type": "relu"}, {"type": "max_pool", "kernel": 2},
    {"type": "flatten"}, {"type": "linear", "features": 1},
]
MLP_HIDDEN = [16, 16]  # 784-16-16-1: 12,832 parameters (12,816 weights + 16 first-layer biases)


#: CIFAR-10 (3x32x32): the same CNN has 3x16x25 + 16x32x25 + 32x5x5 = 14,800 parameters; 3072-8-8-1 has 24,656
#: (3072-4-4-1, 12,308, lost 12 of 20 images to dead units in the KKT trainer's fit phase)
MLP_HIDDEN_CIFAR = [8, 8]  # loses 2 of 20 to dead units too, at 0.1 and at 1 x LeCun init (bench/RESULTS.md)


def cases(iterations: int, dataset: str = "mnist", n_per_class: int = 10) -> dict[str, dict]:
    task = {"dataset": dataset, "task": "odd_even" if dataset == "mnist" else "vehicles_animals",
            "n_per_class": n_per_class, "centring": "pixel"}
    attack = {"iterations": iterations, "log_every": 250}
    n = 2 * n_per_class
    mlp = MLP_HIDDEN if dataset == "mnist" else MLP_HIDDEN_CIFAR
    suffix = "" if (dataset, n_per_class) == ("mnist", 10) else f"_{dataset}_n{n}"  # the n = 20 MNIST names as before
    base = "mnist" if not suffix else suffix[1:]
    return {
        f"cnn_haim_{base}" if not suffix else f"cnn_haim{suffix}": {
            "description": f"Haim KKT attack on a bias-free CNN, {dataset} n = {n}",
            "task": task, "trainer": "kkt", "train": {"layers": CNN}, "method": "haim", "attack": attack},
        f"mlp_haim_{base}" if not suffix else f"mlp_haim{suffix}": {
            "description": f"Haim KKT attack on an MLP of about the CNN's size (hidden {mlp}), {dataset} n = {n}",
            "task": task, "trainer": "kkt", "train": {"hidden": mlp}, "method": "haim", "attack": attack},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/cnn", type=Path)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="run one case")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    ap.add_argument("--n-per-class", type=int, default=10)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    rows = []
    for name, exp in cases(a.iterations, a.dataset, a.n_per_class).items():
        if a.only and name != a.only:
            continue
        path = a.out / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(exp, indent=1))
        t0 = time.time()
        row = run_experiment(path, a.out / name, a.data_dir, device)
        row["wall_seconds"] = time.time() - t0
        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        row["torch_threads"] = torch.get_num_threads()
        save_json(a.out / name / "bench.json", row)
        rows.append(row)
    save_json(a.out / "summary.json", {"rows": rows, "_command": "python " + " ".join(sys.argv)})
    sys.path.insert(0, str(Path(__file__).parent))
    from baselines import table

    print(table(rows))


if __name__ == "__main__":
    main()
