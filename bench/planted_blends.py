"""Benchmark: planted blends on exact KKT points of two-layer polynomial networks (issue 17 item 2).

An exact KKT point (``trainrecon exact-kkt``: f(x) = sum_k a_k (w_k . x)^alpha with theta = sum_i lam_i y_i
grad_theta f(x_i), every margin 1) has a known training set, so the KKT objective J of the Haim attack is 0 at
the truth.  Start from the true samples and multipliers with k same-label pairs (i, j) merged into their midpoint
(x_i + x_j) / 2 with the summed multiplier (m = n - k candidates), descend with the attack's own optimiser (exact
power activation, its defaults for power victims, the normalised victim) until the loss stalls (relative decrease below ``--stall`` over
``--window`` iterations), then, from that same snapshot, with the same number of further iterations:

* ``continue``: no split;
* ``eigen``: one splitting round (:func:`trainrecon.refinement.splitting.split_round`: candidates ranked by
  lambda_min(S_j), k splits along the eigenvectors, eps by the line search on J, kept only if J decreases);
* ``random``: the same round along random directions (the control);
* ``oracle``: each blend split along the true difference (x_i - x_j), eps = c |x_i - x_j| / 2 with c the stalled
  candidate's scale along the midpoint (where the theory's split would have to land).

Scored by the per-sample relative error min_c ||c - x_t|| / ||x_t|| of the 2k merged samples (and of the n - 2k
others), and the count below 0.1, after each candidate is rescaled to unit margin y f(c) = 1 (the KKT term alone
leaves a candidate's scale free: (x, lam) -> (c x, lam / c^alpha) gives the same gradient sum); the raw errors are
in the JSON too.

    python bench/planted_blends.py --alpha 3 4 --d 10 20 --n 8 --k 2 --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from poly_common import copy_set, descend, errors, exact_case, to_unit_margin
from trainrecon.config import save_json
from trainrecon.objective.candidates import CandidateSet
from trainrecon.refinement import SplitConfig
from trainrecon.refinement.splitting import split_round

ARMS = ("continue", "eigen", "random", "oracle")
OVERRIDE: dict = {}  # --attack: HaimConfig fields over the power defaults


def one(alpha: int, d: int, n: int, k: int, seed: int, iterations: int, stall: float, window: int) -> list[dict]:
    case = exact_case(alpha, d, n, seed, OVERRIDE)
    X, y, lam, attack, data_seed = case.X, case.y, case.lam, case.attack, case.data_seed
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(np.flatnonzero(y > 0)), rng.permutation(np.flatnonzero(y < 0))
    pairs = [(int(pos[2 * q]), int(pos[2 * q + 1])) if q % 2 == 0 else (int(neg[2 * (q // 2)]), int(neg[2 * (q // 2) + 1]))
             for q in range(k)]
    merged_idx = [i for pr in pairs for i in pr]
    rest = [i for i in range(n) if i not in merged_idx]
    m0 = n - k
    xs = [X[i] for i in rest] + [(X[i] + X[j]) / 2 for i, j in pairs]
    ms = [lam[i] for i in rest] + [lam[i] + lam[j] for i, j in pairs]
    ys = [y[i] for i in rest] + [y[i] for i, _ in pairs]
    # Haim's weights are M / m0: the true multipliers are m0 lam
    truth_cands = CandidateSet(torch.as_tensor(X), torch.as_tensor(lam * m0), torch.as_tensor(y), m0=m0)
    j_truth = attack.objective(0, truth_cands).value_and_grad(truth_cands.x, truth_cands.multipliers)[0]["total"]
    start = CandidateSet(torch.as_tensor(np.stack(xs)), torch.as_tensor(np.array(ms) * m0), torch.as_tensor(np.array(ys)))
    j_start = attack.objective(0, start).value_and_grad(start.x, start.multipliers)[0]["total"]
    t0 = time.time()
    stalled, hist, its = descend(attack, start, iterations, stall, window)
    t_stall = time.time() - t0
    xs_ = to_unit_margin(stalled.x.detach().numpy(), stalled.labels.numpy(), case.a, case.W, alpha)
    mids = np.stack([(X[i] + X[j]) / 2 for i, j in pairs])
    stall_info = {"others_error_at_stall": errors(xs_[: len(rest)], X[rest]).tolist(),
                  "blend_to_midpoint_error_at_stall": errors(xs_[len(rest):], mids).tolist()}
    rows = []
    for arm in ARMS:
        c = copy_set(stalled)
        t1 = time.time()
        info = {}
        if arm in ("eigen", "random"):
            sc = SplitConfig(enabled=True, per_round=k, direction=arm, mode="grow", max_factor=2.0, seed=seed,
                             lanczos_steps=min(20, d))
            r = split_round(attack.objective(its, c), c, sc, 0)
            c = r.cands
            info = {"accepted": sum(e["accepted"] for e in r.log), "tried": len(r.log)}
        elif arm == "oracle":
            for q, (i, j) in enumerate(pairs):
                pos_q = len(rest) + q
                diff = torch.as_tensor(X[i] - X[j])
                # around the stalled candidate, which may have moved from the midpoint along the free scale
                # (x, lam) -> (c x, lam / c^alpha): the half-difference is scaled by the same c
                mid = torch.as_tensor((X[i] + X[j]) / 2)
                scale = float(c.x[pos_q] @ mid) / float(mid @ mid)
                c = c.split(pos_q, diff / diff.norm(), abs(scale) * float(diff.norm()) / 2)
        j_split = attack.objective(its, c).value_and_grad(c.x, c.multipliers)[0]["total"]
        c, h2, its2 = descend(attack, c, iterations, 0.0, window)
        xe = c.x.detach().numpy()
        raw = errors(xe, X)
        err = errors(to_unit_margin(xe, c.labels.numpy(), case.a, case.W, alpha), X)
        rows.append({"alpha": alpha, "d": d, "n": n, "k": k, "seed": seed, "data_seed": data_seed, "arm": arm, "m_end": c.m,
                     "J_truth": j_truth, "J_start": j_start, "J_stall": hist[-1], "stall_iterations": its,
                     "J_after_split": j_split, "J_end": h2[-1], "seconds": time.time() - t1, "stall_seconds": t_stall,
                     "merged_errors": err[merged_idx].tolist(), "other_errors": err[rest].tolist(),
                     "merged_errors_raw": raw[merged_idx].tolist(), "other_errors_raw": raw[rest].tolist(),
                     "merged_recovered": int((err[merged_idx] < 0.1).sum()),
                     "other_recovered": int((err[rest] < 0.1).sum()), **stall_info, **info})
        r_ = rows[-1]
        print(f"alpha {alpha} d {d} seed {seed} {arm:8s}: J truth {j_truth:.2g} start {j_start:.3g} stall {hist[-1]:.3g} "
              f"({its} its) split {j_split:.3g} end {h2[-1]:.3g}; merged recovered {r_['merged_recovered']}/{2 * k} "
              f"(errors {np.round(err[merged_idx], 3).tolist()}), others {r_['other_recovered']}/{n - 2 * k} "
              f"{info}; at the stall: others {np.round(stall_info['others_error_at_stall'], 3).tolist()}, blends to "
              f"midpoints {np.round(stall_info['blend_to_midpoint_error_at_stall'], 3).tolist()}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| alpha | d | seed | arm | J stall (its) | J after split | J end | splits kept/tried | **merged recovered** "
             "(rel. errors) | others recovered | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = f"{r['accepted']}/{r['tried']}" if "tried" in r else "-"
        lines.append(f"| {r['alpha']} | {r['d']} | {r['seed']} | {r['arm']} | {r['J_stall']:.3g} ({r['stall_iterations']}) "
                     f"| {r['J_after_split']:.3g} | {r['J_end']:.3g} | {kept} | **{r['merged_recovered']}/{2 * r['k']}** "
                     f"({', '.join(f'{e:.2f}' for e in r['merged_errors'])}) | {r['other_recovered']}/{r['n'] - 2 * r['k']} "
                     f"| {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", nargs="+", type=int, default=[3, 4])
    ap.add_argument("--d", nargs="+", type=int, default=[10, 20])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--iterations", type=int, default=4000, help="cap of the descent to the stall, and of each arm's continuation")
    ap.add_argument("--stall", type=float, default=1e-3)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("bench/results/planted_blends"))
    ap.add_argument("--attack", default="{}", help="JSON of HaimConfig fields over the power-victim defaults")
    a = ap.parse_args(argv)
    import json

    OVERRIDE.update(json.loads(a.attack))
    torch.set_num_threads(1)
    rows = []
    for alpha in a.alpha:
        for d in a.d:
            for seed in a.seeds:
                rows += one(alpha, d, a.n, a.k, seed, a.iterations, a.stall, a.window)
                save_json(a.out / "summary.json", {"rows": rows, "_command": "python " + " ".join(sys.argv)})
    print(table(rows))


if __name__ == "__main__":
    main()
