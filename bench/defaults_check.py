"""Benchmark (issue 28 items 4 and 5): the Haim defaults of 2026-12-06 (float32 where an iteration is large, the
per-candidate Adam on x) against the ones before them, away from the n = 100 victim of ``bench/levers.py``.

    python bench/defaults_check.py speed [--out bench/results/defaults_check]   # float32 against float64
    python bench/defaults_check.py small [--n 20 40] [--seeds 0 1 2]              # the four x step / dtype arms

``speed``: seconds per iteration of the Haim attack in float64 and in float32 (40 iterations each, after one
warm-up size) on random 784-w-w-1 victims (the cost does not depend on the weights' values), n = 20, 50, 100 and
m = 2n, w = 100 ... 1000: where ``dtype = "auto"`` should switch (:data:`trainrecon.attacks.haim.FP32_WORK`,
in m * n_params).  Run it alone on the machine: it times.
``small``: MNIST odd/even from the subset shipped with the package, 784-200-200-1, the KKT trainer at its
defaults, n = 20 and 40; Haim for 8000 iterations under SGD at lr 1 and the per-candidate Adam at lr 0.01, each in
float64 and float32, and the Adam in float32 with the total-variation prior at 0.1 (``--arms``), per seed; the
headline with its controls.  What the attacker is given: the weights, the input mean and n.  Both write
OUT/<command>.json and OUT/<command>.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainrecon import HaimConfig, payload_from_folder, reconstruct  # noqa: E402
from trainrecon.data.tasks import TaskConfig  # noqa: E402
from trainrecon.models.mlp import MLPSpec  # noqa: E402
from trainrecon.models.victim import Victim  # noqa: E402
from trainrecon.pipeline import evaluate_run, train_victim  # noqa: E402
from trainrecon.training import TrainConfig  # noqa: E402

#: the x step / dtype / prior arms of ``small``: the defaults before 2026-12-06 (sgd64), those of its morning on
#: these victims (row32: m * n_params >= 5e6, tv 0); row32_tv01 the defaults since its afternoon (the TV prior at 0.1);
#: row32_tv01_deep01 the layers after the first counted a tenth (attack.deep_weight)
ARMS = {"sgd64": {"x_optimiser": "sgd", "lr": 1.0, "dtype": "float64", "tv": 0.0, "deep_weight": 1.0},
        "sgd32": {"x_optimiser": "sgd", "lr": 1.0, "dtype": "float32", "tv": 0.0, "deep_weight": 1.0},
        "row32": {"x_optimiser": "row_adam", "lr": 0.01, "dtype": "float32", "tv": 0.0, "deep_weight": 1.0},
        "row64": {"x_optimiser": "row_adam", "lr": 0.01, "dtype": "float64", "tv": 0.0, "deep_weight": 1.0},
        "row32_tv01": {"x_optimiser": "row_adam", "lr": 0.01, "dtype": "float32", "tv": 0.1, "deep_weight": 1.0},
        "row32_tv01_deep01": {"x_optimiser": "row_adam", "lr": 0.01, "dtype": "float32", "tv": 0.1,
                              "deep_weight": 0.1}}


def speed(a: argparse.Namespace) -> list[dict]:
    rows = []
    for n in a.n:
        for k, w in enumerate([a.widths[0]] + a.widths):  # the first size twice: a warm-up, not reported
            spec = MLPSpec(widths=[784, w, w, 1], bias=[False] * 3, input_shape=[1, 28, 28])
            victim = Victim(spec, spec.init_params([1.4] * 3, 0), np.full(784, 0.13), train_info={"n": n})
            row = {"n": n, "m": 2 * n, "width": w, "work": 2 * n * spec.n_params()}
            for dtype in ("float64", "float32"):
                with tempfile.TemporaryDirectory() as d:
                    cfg = HaimConfig(iterations=a.iterations, m=2 * n, dtype=dtype, autocast="none", compile="none",
                                     log_every=10 ** 6, checkpoint_every=10 ** 6)
                    reconstruct(victim, cfg, Path(d) / "run", log=lambda *x: None)
                    row[dtype] = json.loads((Path(d) / "run" / "loss.json").read_text())["seconds_per_iteration"]
            row["fp32_speedup"] = row["float64"] / row["float32"]
            if k:
                rows.append(row)
                print(json.dumps(row), flush=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in a.n:
        r = [x for x in rows if x["n"] == n]
        ax.plot([x["work"] for x in r], [x["fp32_speedup"] for x in r], "o-", label=f"n = {n}, m = {2 * n}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="m x n_params", ylabel="float64 s/it / float32 s/it", title="Haim: float32 speed-up")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "speed.png", dpi=120)
    return rows


def small(a: argparse.Namespace) -> list[dict]:
    rows = []
    for n in a.n:
        task = TaskConfig(dataset="mnist_mini", task="odd_even", n_per_class=n // 2, centring="pixel")
        victim = a.out / f"victim{n}"
        train_victim(task, TrainConfig(hidden=[200, 200], seed=0), victim, log=lambda *x: None)  # reused when done
        for seed in a.seeds:
            for arm in a.arms:
                out = a.out / f"n{n}_{arm}_s{seed}"
                t0 = time.time()
                reconstruct(payload_from_folder(victim), HaimConfig(iterations=a.iterations, log_every=1000,
                                                                    seed=seed, **ARMS[arm]), out / "run",
                            log=lambda *x: None)
                seconds = time.time() - t0
                head = evaluate_run(victim, [out / "run" / "candidates.npz"], out / "eval",
                                    log=lambda *x: None)["headline"]
                c = head["controls"]
                row = {"n": n, "arm": arm, "seed": seed, "recovered": head["recovered"], "heldout": c["heldout"],
                       "nulls": {k: v for k, v in c.items() if k.startswith("null_")}, "true": c["positive"],
                       "seconds": seconds, "seconds_per_iteration": seconds / a.iterations}
                rows.append(row)
                print(json.dumps(row), flush=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, arm in enumerate(a.arms):
        r = [x for x in rows if x["arm"] == arm]
        ax.scatter([x["n"] + 1.5 * (i - 1.5) for x in r], [x["recovered"] for x in r], label=arm)
    ax.set(xlabel="n (arms side by side)", ylabel="recovered (headline)", title="Haim defaults at small n")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "small.png", dpi=120)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, nargs="+", default=[20, 50, 100])
    s.add_argument("--widths", type=int, nargs="+", default=[100, 200, 300, 500, 1000])
    s.add_argument("--iterations", type=int, default=40)
    m = sub.add_parser("small")
    m.add_argument("--n", type=int, nargs="+", default=[20, 40])
    m.add_argument("--seeds", type=int, nargs="+", default=[0])
    m.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    m.add_argument("--iterations", type=int, default=8000)
    for p in (s, m):
        p.add_argument("--out", type=Path, default=Path("bench/results/defaults_check"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = {"speed": speed, "small": small}[a.cmd](a)
    (a.out / f"{a.cmd}.json").write_text(json.dumps({"command": vars(a) | {"out": str(a.out)}, "rows": rows},
                                                    indent=1))


if __name__ == "__main__":
    main()
