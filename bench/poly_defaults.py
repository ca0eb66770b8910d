"""Benchmark: the split and plain arms **with the library's defaults** on exact-KKT polynomial victims, m < n
(issue 17: how the verdict will be checked).

For each alpha, d, seed: ``trainrecon exact-kkt`` (n Gaussian samples, an exact KKT point of a two-layer x^alpha
network), then ``trainrecon reconstruct --method haim --m M`` with the defaults (which adapt themselves to power
victims, splitting on: ``config.json["adapted"]``), with ``--no-split``, and with the default splitting along
random directions (the control for the eigen direction), for each M in ``--m``; and,
as the control for "more candidates", the plain attack started at the split arm's final m.  Each candidate is
rescaled to unit |margin| and matched up to sign (the KKT term fixes a candidate only up to
(x, lam) -> (c x, lam / c^alpha), and x -> -x when the multiplier penalty is inactive: :mod:`poly_common`);
a training sample is recovered when some candidate is within relative error 0.1.

    python bench/poly_defaults.py --alpha 3 4 --d 20 50 --n 8 --m 2 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from poly_common import errors, to_unit_margin
from trainrecon import reconstruct
from trainrecon.attacks import HaimConfig, Payload
from trainrecon.attacks.haim import POWER_SPLIT
from trainrecon.errors import TrainreconError
from trainrecon.refinement import SplitConfig
from trainrecon.identifiability.polynomial import PolyDataConfig
from trainrecon.identifiability.power_victims import make_exact_victim, poly_truth
from trainrecon.models.victim import load_victim


def score(victim, folder: Path, X: np.ndarray, alpha: int) -> tuple[int, list[float]]:
    c = np.load(folder / "candidates.npz")
    x = c["x"].reshape(len(c["x"]), -1)
    W, a = (p.detach().double().numpy() for p in victim.params)
    err = errors(to_unit_margin(x, c["y"], a.reshape(-1), W, alpha, absolute=True), X, up_to_sign=True)
    return int((err < 0.1).sum()), err.round(3).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", nargs="+", type=int, default=[3, 4])
    ap.add_argument("--d", nargs="+", type=int, default=[20])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--m", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("bench/results/poly_defaults"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for alpha in a.alpha:
        for d in a.d:
            for seed in a.seeds:
                vdir = a.out / f"a{alpha}_d{d}_s{seed}" / "victim"
                try:
                    make_exact_victim(vdir, PolyDataConfig(kind="gaussian", n=a.n, d=d, seed=seed), alpha, seed=seed)
                except TrainreconError as e:  # no exact KKT point for this draw
                    print(f"alpha {alpha} d {d} seed {seed}: {e}")
                    continue
                victim = load_victim(vdir)
                X, _ = poly_truth(victim)
                payload = Payload.of(victim, disclose_n=False)
                for m in a.m:
                    # the defaults turn splitting on for power victims; the plain arm is --no-split
                    arms = {"plain": HaimConfig(m=m, seed=seed, auto_split=False), "split": HaimConfig(m=m, seed=seed),
                            "split_random": HaimConfig(m=m, seed=seed, split=SplitConfig(**{**POWER_SPLIT, "direction": "random"}))}
                    done = {}
                    for arm, cfg in list(arms.items()) + [("plain_final_m", None)]:
                        if cfg is None:  # the plain attack with as many candidates as the split arm ended with
                            cfg = HaimConfig(m=done["split"]["m_end"] + done["split"]["m_end"] % 2, seed=seed, auto_split=False)
                        folder = vdir.parent / f"{arm}_m{m}"
                        t0 = time.process_time()
                        stats = reconstruct(payload, cfg, folder, log=lambda *_: None).stats
                        rec, err = score(victim, folder, X, alpha)
                        done[arm] = row = {"alpha": alpha, "d": d, "n": a.n, "seed": seed, "m": m, "arm": arm,
                                           "m_end": stats["m"], "J": stats["final_loss"]["total"],
                                           "cpu_s": time.process_time() - t0, "recovered": rec, "errors": err}
                        rows.append(row)
                        print(json.dumps({k: v for k, v in row.items() if k != "errors"}), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "rows.json").write_text(json.dumps(rows, indent=1))
    print("\n| alpha | d | m | arm | recovered (of n per seed) | total | J (median) | m end | CPU s (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["alpha"], r["d"], r["m"], r["arm"]) for r in rows}, key=lambda k: (k[0], k[1], k[2], ("plain", "split", "split_random", "plain_final_m").index(k[3])))
    for k in keys:
        rs = [r for r in rows if (r["alpha"], r["d"], r["m"], r["arm"]) == k]
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {', '.join(str(r['recovered']) for r in rs)} | "
              f"**{sum(r['recovered'] for r in rs)}/{a.n * len(rs)}** | {np.median([r['J'] for r in rs]):.3g} | "
              f"{', '.join(str(r['m_end']) for r in rs)} | {np.median([r['cpu_s'] for r in rs]):.1f} |")


if __name__ == "__main__":
    main()
