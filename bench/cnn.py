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
    python bench/cnn.py --data-dir ../shared/data --iterations 3000 --method buzaglo-multiclass  # and the others

``--method``: haim (binary KKT victims), buzaglo-multiclass (MNIST 10-way, 2 per class, multiclass KKT victims),
buzaglo-regression (MSE + weight decay victims, the regression trainer), loo-ntk (NTK victims, the NTK trainer,
the kernel at theta_0); each on the CNN (its last layer as wide as the victim's outputs) and on the MLP partner.
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


MLP_HIDDEN_MULTICLASS = [24, 24]  # 784-24-24-10: 19,656 parameters (with the first layer's biases)
#: CIFAR-10 (3x32x32): the same CNN has 3x16x25 + 16x32x25 + 32x5x5 = 14,800 parameters; 3072-8-8-1 has 24,656
#: (3072-4-4-1, 12,308, lost 12 of 20 images to dead units in the KKT trainer's fit phase)
MLP_HIDDEN_CIFAR = [8, 8]  # loses 2 of 20 to dead units too, at 0.1 and at 1 x LeCun init (bench/RESULTS.md)


#: per method: the trainer, the task's kind, the victim's outputs and the attack's own fields
METHOD_CASES = {
    "haim": ("kkt", None, 1, {}),
    "buzaglo-multiclass": ("kkt", "multiclass", 10, {}),
    "buzaglo-regression": ("regression", None, 1, {"box_space": "centred"}),
    "loo-ntk": ("ntk", None, 1, {"kernel_at": "init"}),
}


def cases(iterations: int, dataset: str = "mnist", n_per_class: int = 10, method: str = "haim") -> dict[str, dict]:
    trainer, kind, outputs, fields = METHOD_CASES[method]
    task = {"dataset": dataset, "task": kind or ("odd_even" if dataset == "mnist" else "vehicles_animals"),
            "n_per_class": n_per_class if kind is None else 2, "centring": "pixel"}
    attack = {"iterations": iterations, "log_every": 250, **fields}
    n = 2 * n_per_class if kind is None else 20
    mlp = MLP_HIDDEN if dataset == "mnist" else MLP_HIDDEN_CIFAR
    if outputs == 10:  # the CNN with 10 outputs has 18,320 parameters; 784-16-16-10 lost 4 images to dead units
        mlp = MLP_HIDDEN_MULTICLASS
    cnn = [*CNN[:-1], {"type": "linear", "features": outputs}]
    short = {"buzaglo-multiclass": "buzaglo_multiclass", "buzaglo-regression": "buzaglo_regression",
             "loo-ntk": "loo"}.get(method, method)
    # the first cases' names as they were: MNIST n = 20 under Haim is "..._haim_mnist"
    suffix = "_mnist" if (method, dataset, n) == ("haim", "mnist", 20) else f"_{dataset}_n{n}"
    common = {"task": task, "trainer": trainer, "method": method, "attack": attack, "truth_start": True}
    return {
        f"cnn_{short}{suffix}": {"description": f"{method} attack on a bias-free CNN, {dataset} n = {n}",
                                 "train": {"layers": cnn}, **common},
        f"mlp_{short}{suffix}": {"description": f"{method} attack on an MLP of about the CNN's size (hidden {mlp}), "
                                                f"{dataset} n = {n}", "train": {"hidden": mlp}, **common},
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
    ap.add_argument("--method", default="haim", choices=list(METHOD_CASES))
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    rows = []
    for name, exp in cases(a.iterations, a.dataset, a.n_per_class, a.method).items():
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
    for r in rows:  # the attack's own positive control (pipeline/truth_start.py)
        ts = r.get("truth_start") or {}
        print(f"{r['case']}: truth-start keeps {ts.get('kept')} of {ts.get('n')} after {ts.get('iterations')} iterations")


if __name__ == "__main__":
    main()
