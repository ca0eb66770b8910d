"""Benchmark: a bias-free CNN victim against an MLP of about the same parameter count, on the same MNIST images.

Both victims are trained by the KKT trainer (logistic loss toward the max-margin direction, stored at unit
margin) on MNIST odd/even, n = 20 (the same 20 images), and attacked by the Haim KKT attack with its defaults
(only the iteration count is lowered to fit the CPU budget: ``--iterations``); each is evaluated with every
control (held-out, null mean / noise / another subset's mean, true images).  Writes ``OUT/<case>/`` (victim,
reconstruction, metrics.json, grid.png, bench.json with seconds per iteration and peak memory) and prints a
Markdown table.

    python bench/cnn.py --data-dir ../shared/data --iterations 3000
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


def cases(iterations: int) -> dict[str, dict]:
    task = {"dataset": "mnist", "task": "odd_even", "n_per_class": 10, "centring": "pixel"}
    attack = {"iterations": iterations, "log_every": 250}
    return {
        "cnn_haim_mnist": {"description": "Haim KKT attack on a bias-free CNN (13,712 parameters), MNIST odd/even n = 20",
                           "task": task, "trainer": "kkt", "train": {"layers": CNN}, "method": "haim", "attack": attack},
        "mlp_haim_mnist": {"description": "Haim KKT attack on a 784-16-16-1 MLP (12,832 parameters), MNIST odd/even n = 20",
                           "task": task, "trainer": "kkt", "train": {"hidden": MLP_HIDDEN}, "method": "haim",
                           "attack": attack},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/cnn", type=Path)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="run one case")
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    rows = []
    for name, exp in cases(a.iterations).items():
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
