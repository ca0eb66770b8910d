"""Benchmark: the seed paper's setting, splitting on and off, every control, and how near the machine's limit.

The paper (Shen et al. 2026) attacks two-hidden-layer ReLU networks trained to the KKT direction on n = 500
images, MNIST odd/even (784-1000-1000-1) and CIFAR-10 vehicles/animals (3072-1000-1000-1), with m = 1000
candidates for 50k iterations, Haim's KKT objective with and without sample splitting.  This script trains
both victims (trainrecon's KKT trainer, biases off, pixel centring) and runs, per victim and per ``--dtypes``
entry, the two arms:

* ``base``: Haim's attack (bench/cases/haim_mnist_pixel_box.json's settings), splitting off;
* ``split``: the same with sample splitting on (its defaults); both arms get the same iterations.

Each arm is scored in memory with the honest headline and every control (mean, noise and held-out-mean nulls,
the held-out control against the test split, the true images), the papers' continuous measures, and, with
``--truth-start``, the attack's own positive control (the attack rerun from the training images and from unseen
ones).  Speed is reported against the machine: floating-point operations per attack iteration counted by
``torch.utils.flop_counter.FlopCounterMode`` (every matmul and convolution the iteration dispatches), divided
by the measured seconds per iteration, beside a dense matrix multiply's rate on the same device and dtype (the
roofline); peak memory is the process's maximum resident set (CPU) or torch's peak allocation (CUDA).

    python bench/paper_scale.py --data-dir ../shared/data --device cuda            # the paper's setting (GPU)
    python bench/paper_scale.py --data-dir ../shared/data --reduced                # CPU, minutes: n = 20,
                                                                                   # 784-100-100-1, m = 40

Writes ``OUT/paper_scale.json`` (config, one row per victim x dtype x arm) and ``OUT/paper_scale.png``; each
arm's run and evaluation folders lie under ``OUT/<victim>/<dtype>_<arm>/``.  A rerun reuses trained victims and
finished arms.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from trainrecon import reconstruct  # noqa: E402
from trainrecon.attacks import HaimConfig, payload_from_folder  # noqa: E402
from trainrecon.config import from_dict, load_json, save_json  # noqa: E402
from trainrecon.data.tasks import TaskConfig  # noqa: E402
from trainrecon.pipeline import evaluate_run, train_victim  # noqa: E402
from trainrecon.pipeline.evaluation import Candidates  # noqa: E402
from trainrecon.runtime import matmul_seconds, resolve_device  # noqa: E402
from trainrecon.training import TRAINERS  # noqa: E402

#: the paper's setting, and the reduced one that runs on two CPU cores in minutes
SCALES = {
    "paper": {"n_per_class": 250, "hidden": [1000, 1000], "m": 1000, "iterations": 50000},
    "reduced": {"n_per_class": 10, "hidden": [100, 100], "m": 40, "iterations": 1000},
}
TASKS = {"mnist_odd_even": {"dataset": "mnist", "task": "odd_even", "centring": "pixel"},
         "cifar10_vehicles_animals": {"dataset": "cifar10", "task": "vehicles_animals", "centring": "pixel"}}
#: Haim's attack as bench/cases/haim_mnist_pixel_box.json runs it (SGD at lr 1), without the TV prior and with every
#: layer's equation alike: the split and plain arms differ in splitting alone (a split's children would each add a
#: TV term)
ATTACK = {"lr": 1.0, "x_optimiser": "sgd", "lr_lambda": 0.01, "init_scale": 0.001, "lambda_min": 0.1, "alpha": 30.0,
          "box_space": "pixel", "tv": 0.0, "deep_weight": 1.0, "autocast": "none",
          "compile": "none"}


def peak_memory_gib(device: torch.device) -> float:
    """The process's peak memory so far: torch's peak allocation on CUDA, else the maximum resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """The roofline: a dense (size x size) @ (size x size) product's rate, 2 size^3 / seconds, best of ``repeats``."""
    return 2 * size ** 3 / matmul_seconds(device, dtype, size, size, size, repeats) / 1e9


def flops_per_iteration(payload, cfg: HaimConfig, device: torch.device) -> float:
    """Floating-point operations of one attack iteration: the count over 3 iterations minus the count over 1
    (the set-up both share cancels), halved."""
    counts = []
    for its in (1, 3):
        counter = FlopCounterMode(display=False)
        with counter:
            reconstruct(payload, dataclasses.replace(cfg, iterations=its, log_every=its, split=type(cfg.split)()),
                        device=device, log=lambda *_: None)
        counts.append(counter.get_total_flops())
    return (counts[1] - counts[0]) / 2


def run_arm(victim: Path, folder: Path, cfg: HaimConfig, device: torch.device, data_dir, truth_start: bool) -> dict:
    """One arm: the attack (resumed where it stopped), then every control, in memory."""
    payload = payload_from_folder(victim)
    t0 = time.time()
    rec = reconstruct(payload, cfg, folder / "run", device, resume=True, log=lambda *_: None)
    wall = time.time() - t0
    metrics = evaluate_run(victim, [Candidates.of(rec, folder / "run" / "candidates.npz")], folder / "eval",
                           data_dir, log=lambda *_: None, truth_start=truth_start)
    head = metrics["headline"]
    measures = {f"{r['protocol']} {r['measure']}": r for r in metrics["paper_measures"]}
    return {"recovered": head["recovered"], "n": metrics["n"], "m_final": rec.m, "controls": head["controls"],
            "informative": head["informative"], "auc": ((metrics.get("exposure") or {}).get("roc") or {}).get("auc"),
            "paper_measures": measures, "truth_start": metrics.get("truth_start"),
            "iterations_done": rec.stats["iterations_done"], "seconds_per_iteration": rec.stats["seconds_per_iteration"],
            "attack_wall_seconds": wall, "splitting": rec.stats.get("splitting")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/paper_scale[_reduced]")
    ap.add_argument("--reduced", action="store_true", help="n = 20, 784-100-100-1, m = 40, 1000 iterations (CPU)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    ap.add_argument("--arms", nargs="+", default=["base", "split"], choices=["base", "split"])
    ap.add_argument("--iterations", type=int, default=0, help="attack iterations (default: the scale's)")
    ap.add_argument("--truth-start", action="store_true", help="also the attack's own positive control (x3 time)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    scale = SCALES["reduced" if a.reduced else "paper"]
    iterations = a.iterations or scale["iterations"]
    out = a.out or Path("bench/results/paper_scale" + ("_reduced" if a.reduced else ""))
    device = resolve_device(a.device)
    config = {"scale": "reduced" if a.reduced else "paper", **scale, "iterations": iterations, "tasks": a.tasks,
              "dtypes": a.dtypes, "arms": a.arms, "truth_start": a.truth_start, "device": str(device),
              "seed": a.seed, "attack": ATTACK, "command": " ".join(sys.argv)}
    save_json(out / "config.json", config)
    roofline = {d: matmul_gflops(device, getattr(torch, d), 4096 if device.type == "cuda" else 1024)
                for d in a.dtypes}
    rows = []
    for name in a.tasks:
        task = from_dict(TaskConfig, {**TASKS[name], "n_per_class": scale["n_per_class"]}, f"{name}.task")
        train = from_dict(TRAINERS["kkt"].config, {"hidden": scale["hidden"], "seed": a.seed}, f"{name}.train")
        victim = out / name / "victim"
        if not (victim / "model.safetensors").is_file():
            train_victim(task, train, victim, a.data_dir, device)
        residual = load_json(victim / "train.json")["final"].get("kkt_residual")
        for dtype in a.dtypes:
            base = from_dict(HaimConfig, {**ATTACK, "m": scale["m"], "iterations": iterations, "seed": a.seed,
                                          "dtype": dtype, "log_every": max(1, iterations // 20),
                                          "checkpoint_every": max(1, iterations // 10)}, "attack")
            flops = flops_per_iteration(payload_from_folder(victim), base, device)
            for arm in a.arms:
                cfg = base if arm == "base" else dataclasses.replace(base, split=dataclasses.replace(base.split, enabled=True))
                folder = out / name / f"{dtype}_{arm}"
                done = folder / "row.json"
                if done.is_file():
                    rows.append(load_json(done))
                    continue
                row = {"victim": name, "dtype": dtype, "arm": arm, "victim_kkt_residual": residual,
                       **run_arm(victim, folder, cfg, device, a.data_dir, a.truth_start)}
                row["flops_per_iteration"] = flops
                row["achieved_gflops"] = flops / row["seconds_per_iteration"] / 1e9
                row["matmul_gflops"] = roofline[dtype]
                row["share_of_roofline"] = row["achieved_gflops"] / roofline[dtype]
                row["peak_memory_gib"] = peak_memory_gib(device)
                save_json(done, row)
                rows.append(row)
                print(f"{name} {dtype} {arm}: {row['recovered']} of {row['n']} (held-out {row['controls']['heldout']}, "
                      f"true {row['controls']['positive']}), {row['seconds_per_iteration'] * 1e3:.1f} ms/it, "
                      f"{row['achieved_gflops']:.1f} GFLOP/s of {roofline[dtype]:.1f} (matmul)", flush=True)
    save_json(out / "paper_scale.json", {"config": config, "roofline_gflops": roofline, "rows": rows})
    plot(rows, out / "paper_scale.png")
    print(f"wrote {out / 'paper_scale.json'} and {out / 'paper_scale.png'}")


def plot(rows: list[dict], path: Path) -> None:
    """Recovered images per arm beside the largest negative control and the held-out control; the share of the
    matmul roofline each arm's iteration reaches."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{r['victim'].split('_')[0]}\n{r['dtype']}\n{r['arm']}" for r in rows]
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["recovered"] or 0 for r in rows], 0.4, label="recovered (headline)")
    ax.bar(xs + 0.2, [max(v for k, v in r["controls"].items() if k != "positive")
                      for r in rows], 0.4, label="largest negative / held-out control")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylabel("training images")
    ax.legend(fontsize=8)
    bx.bar(xs, [100 * r["share_of_roofline"] for r in rows])
    bx.set_xticks(xs, labels, fontsize=7)
    bx.set_ylabel("% of a dense matmul's GFLOP/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
