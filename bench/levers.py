"""Benchmark (issue 28 item 4): levers against the plateau at n = 100, each at equal CPU time against the defaults,
with the truth-start control beside every arm.

    python bench/levers.py prepare --data-dir ../shared/data --out bench/results/levers
    python bench/levers.py prepare --data-dir ../shared/data --out bench/results/levers2 --second
    python bench/levers.py attack bench/results/levers [--arms defaults solve500 ...] [--minutes 5] [--jobs 2]
    python bench/people.py table bench/results/levers/..   # the rows, as Markdown

``prepare`` trains the paper-width victim of ``bench/cases/haim_mnist_n100_pixel_box.json`` (MNIST odd/even,
n = 100, MLP 784-500-500-1, pixel centring, the KKT trainer) into OUT/victim and writes, for evaluation only, its
training images (train_images.npz) and every image its task holds out (heldout_images.npz: the held-out control
and the comparison pool) as ``bench/people.py``'s victims have them; ``--second``: the same case on the next 50
images of each class, trained with seed 1 (the second victim).  ``attack`` runs ``bench/people.py attack``
once per arm of :data:`ARMS` (attack config fields over the Haim defaults, at the weights level) under the same
wall-clock budget, ``--jobs`` arms at a time (one torch thread each), the truth-start control on every arm; each
arm's row is OUT/bench_<arm>/weights_haim.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from trainrecon.config import load_config
from trainrecon.pipeline import Experiment, train_victim
from trainrecon.data.tasks import build_task

HERE = Path(__file__).resolve().parent
CASE = HERE / "cases" / "haim_mnist_n100_pixel_box.json"
#: the Haim defaults until 2026-12-06: SGD with momentum at lr 1 on x, float64
SGD64 = {"x_optimiser": "sgd", "lr": 1.0, "dtype": "float64"}
#: the arms: name -> attack config fields (the Haim defaults otherwise, but tv 0 unless the arm sets it: :func:`attack`)
ARMS = {
    # the float64 SGD arms are the defaults as they were until 2026-12-06; the defaults now (dtype "auto", float32
    # here: m * n_params = 1.3e8; x_optimiser "row_adam", lr 0.01) are the arm "fp32_row_adam"
    "defaults": {**SGD64},
    "solve100": {**SGD64, "solve_multipliers_every": 100},
    "solve500": {**SGD64, "solve_multipliers_every": 500},
    "solve2000": {**SGD64, "solve_multipliers_every": 2000},
    "seed1": {**SGD64, "seed": 1},  # item 3: a second run of the float64 defaults, to union with the first
    "seed2": {**SGD64, "seed": 2},
    "row_adam": {"dtype": "float64", "x_optimiser": "row_adam", "lr": 0.01},  # item 4: per-candidate Adam on x
    "fp32": {**SGD64, "dtype": "float32"},  # items 3 and 5: fp32 against fp64 at equal wall-clock, paired seeds
    "fp32_seed1": {**SGD64, "dtype": "float32", "seed": 1},
    "fp32_seed2": {**SGD64, "dtype": "float32", "seed": 2},
    "fp32_row_adam": {"dtype": "float32", "x_optimiser": "row_adam", "lr": 0.01},
    "fp32_row_adam_seed1": {"dtype": "float32", "x_optimiser": "row_adam", "lr": 0.01, "seed": 1},
    "fp32_row_adam_seed2": {"dtype": "float32", "x_optimiser": "row_adam", "lr": 0.01, "seed": 2},
    "fp32_alpha_cont": {**SGD64, "dtype": "float32", "alpha_start": 3.0},  # item 4: alpha 3 -> 30 over 2000 its
    "m100": {"m": 100},  # item 3: recovery against m at equal CPU, under the defaults of 2026-12-06 (m = 200)
    "m400": {"m": 400},
    "lr003": {"lr": 0.003},  # the per-candidate Adam's step around its default 0.01
    "lr03": {"lr": 0.03},
    "cos01": {"lr_final": 0.1},  # a cosine decay of the step to a tenth, then to a hundredth, over the budget
    "cos001": {"lr_final": 0.01},
    # SGD with a larger step, each candidate's step capped at about the per-candidate Adam's (0.01 per pixel x 28):
    # far candidates move as under the Adam, near-stationary ones (a start at the truth) as under SGD
    "cap4": {"x_optimiser": "sgd", "lr": 4.0, "max_step": 0.3},
    "cap16": {"x_optimiser": "sgd", "lr": 16.0, "max_step": 0.3},
    # a sharper surrogate (alpha 30 by default): nearer the exact ReLU derivative, so nearer the equations the
    # training set satisfies; does it hold the training images longer (the ceiling)?
    "alpha100": {"alpha": 100.0},
    "alpha300": {"alpha": 300.0},
    # a total-variation prior on the candidates (attack.tv; Haim's default 0.1 since these arms won): a prior that
    # changes where the descent goes, not one that only cleans its end; does it hold the training images and steer?
    "tv001": {"tv": 0.01},
    "tv01": {"tv": 0.1},
    "tv03": {"tv": 0.3},
    "tv005": {"tv": 0.05},
    "tv02": {"tv": 0.2},
    "tv01_seed1": {"tv": 0.1, "seed": 1},
    "tv01_seed2": {"tv": 0.1, "seed": 2},
    # issue 28 item 4: the first layer's equation (linear in the candidates) counted 10 times the rest
    "deep01": {"tv": 0.1, "deep_weight": 0.1},
    "deep01_seed1": {"tv": 0.1, "deep_weight": 0.1, "seed": 1},
    "deep01_seed2": {"tv": 0.1, "deep_weight": 0.1, "seed": 2},
    # item 3: recovery against m under the defaults of 2026-12-06 evening (no collapse left at cosine 0.99)
    "deep01_m150": {"tv": 0.1, "deep_weight": 0.1, "m": 150},
    "deep01_m300": {"tv": 0.1, "deep_weight": 0.1, "m": 300},
    # a late decay: the step constant for 90 % of the budget, then a cosine to a tenth (a polish within the budget)
    "late01": {"tv": 0.1, "deep_weight": 0.1, "lr_final": 0.1, "lr_decay_start": 0.9},
    "late01_seed1": {"tv": 0.1, "deep_weight": 0.1, "lr_final": 0.1, "lr_decay_start": 0.9, "seed": 1},
    "late01_seed2": {"tv": 0.1, "deep_weight": 0.1, "lr_final": 0.1, "lr_decay_start": 0.9, "seed": 2},
    "deep01_seed1_again": {"tv": 0.1, "deep_weight": 0.1, "seed": 1},  # the defaults' seed 1, beside late01_seed2
    # the defaults since 2026-12-07: the network's products in bfloat16 where the device makes them fast
    "bf16": {"tv": 0.1, "deep_weight": 0.1, "autocast": "auto"},
    "bf16_seed1": {"tv": 0.1, "deep_weight": 0.1, "autocast": "auto", "seed": 1},
    "bf16_seed2": {"tv": 0.1, "deep_weight": 0.1, "autocast": "auto", "seed": 2},
    # the defaults since 2026-12-07 (afternoon): the objective's pass compiled into one graph where it pays
    "comp": {"tv": 0.1, "deep_weight": 0.1, "autocast": "auto", "compile": "auto"},
    "comp_seed1": {"tv": 0.1, "deep_weight": 0.1, "autocast": "auto", "compile": "auto", "seed": 1},
    "comp_seed2": {"tv": 0.1, "deep_weight": 0.1, "autocast": "auto", "compile": "auto", "seed": 2},
}


def prepare(a: argparse.Namespace) -> None:
    exp = load_config(Experiment, CASE)
    train_cfg, _ = exp.configs(str(CASE))
    task = exp.task
    if a.second:  # the second victim: the next 50 images of each class, training seed 1
        task, train_cfg = replace(task, skip_per_class=50), replace(train_cfg, seed=1)
    train_victim(task, train_cfg, a.out / "victim", a.data_dir)  # reuses a finished folder of this config
    data = build_task(task, a.data_dir)
    np.savez_compressed(a.out / "train_images.npz", x=data.x_train, y=data.y_train)
    np.savez_compressed(a.out / "heldout_images.npz", x=data.heldout_all)
    print(f"{a.out}: victim, {data.n} training images, {len(data.heldout_all)} held-out images")


def attack(a: argparse.Namespace) -> None:
    unknown = [arm for arm in a.arms if arm not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown {unknown} (known: {', '.join(ARMS)})")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    for arm in a.arms:
        cfg = a.source / "arms" / f"{arm}.json"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        # the budget ends every arm; an arm that names no tv runs without the prior, one that names no
        # deep_weight with every layer alike, one that names no autocast in float32 throughout and one that names
        # no compile with the eager passes, as every arm did before they became Haim's defaults (2026-12-06, 07)
        cfg.write_text(json.dumps({"iterations": 10 ** 6, "tv": 0.0, "deep_weight": 1.0, "autocast": "none",
                                   "compile": "none", **ARMS[arm]}))
        cmd = [sys.executable, str(HERE / "people.py"), "attack", str(a.source), "--given", "weights", "--method",
               "haim", "--minutes", str(a.minutes), "--config", str(cfg), "--tag", arm,
               *(["--truth-start"] if a.truth_start else [])]
        running.append(subprocess.Popen(cmd, env=env))
        while len([p for p in running if p.poll() is None]) >= a.jobs:  # a free slot as soon as any arm ends
            time.sleep(5)
    for p in running:
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("bench/results/levers"))
    p.add_argument("--second", action="store_true", help="the second victim (bench/results/levers2 in RESULTS.md)")
    k = sub.add_parser("attack")
    k.add_argument("source", type=Path)
    k.add_argument("--arms", nargs="+", default=list(ARMS))
    k.add_argument("--minutes", type=float, default=5.0)
    k.add_argument("--jobs", type=int, default=2)
    k.add_argument("--no-truth-start", dest="truth_start", action="store_false")
    a = ap.parse_args()
    {"prepare": prepare, "attack": attack}[a.cmd](a)


if __name__ == "__main__":
    main()
