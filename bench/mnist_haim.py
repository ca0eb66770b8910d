"""Benchmark: Haim KKT attack on a real MNIST odd/even victim.

Trains (or reuses) a victim on the first n/2 even and n/2 odd MNIST training images, runs the attack for a
fixed budget, evaluates with the held-out control, and writes into the results folder:
victim/, reconstruction/, metrics.json, grid.png, l2_curve.png and bench.json (seconds per iteration,
training time, KKT residual, peak memory).

    python bench/mnist_haim.py --data-dir ../shared/data --out bench/results/mnist_haim
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from trainrecon.attacks.haim import HaimConfig
from trainrecon.attacks.runner import reconstruct
from trainrecon.config import save_json
from trainrecon.data.tasks import TaskConfig
from trainrecon.models.victim import load_victim
from trainrecon.pipeline import evaluate_run, train_victim
from trainrecon.runtime import resolve_device
from trainrecon.training import TrainConfig


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/mnist_haim")
    ap.add_argument("--n-per-class", type=int, default=50)
    ap.add_argument("--hidden", default="500,500")
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = Path(a.out)
    device = resolve_device(a.device)
    task = TaskConfig(dataset="mnist", task="odd_even", n_per_class=a.n_per_class, centring="pixel")
    train_cfg = TrainConfig(hidden=[int(v) for v in a.hidden.split(",")], seed=a.seed)
    t0 = time.time()
    if not (out / "victim" / "model.safetensors").is_file():
        train_victim(task, train_cfg, out / "victim", a.data_dir, device)
    train_seconds = time.time() - t0
    victim = load_victim(out / "victim")
    attack = HaimConfig(iterations=a.iterations, dtype=a.dtype, seed=a.seed, log_every=100)
    res = reconstruct(victim, attack, out / "reconstruction", device, resume=True)
    metrics = evaluate_run(out / "victim", [out / "reconstruction" / "candidates.npz"], out, data_dir=a.data_dir)
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    bench = {
        "command": "python " + " ".join(sys.argv),
        "task": f"mnist odd/even, n = {2 * a.n_per_class}, MLP 784-{a.hidden.replace(',', '-')}-1",
        "victim_kkt_residual": victim.train_info["final"]["kkt_residual"],
        "victim_train_seconds": victim.train_info["seconds"],
        "train_wall_seconds_this_run": train_seconds,
        "attack_iterations": res["iterations_done"],
        "seconds_per_iteration": res["seconds_per_iteration"],
        "peak_rss_gib": peak_rss_gib,
        "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "haim_nn": metrics["protocols"]["haim_nn"],
    }
    save_json(out / "bench.json", bench)
    print({k: v for k, v in bench.items() if k != "haim_nn"})


if __name__ == "__main__":
    main()
