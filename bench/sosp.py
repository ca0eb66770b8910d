"""Benchmark: does the split arm reach an epsilon-second-order stationary point, in a number of rounds that does not
grow with d (issue 17 item 6)?

Polynomial victims (:mod:`poly_common`: exact KKT points, J = 0 at the truth, or ``--trained``), the Haim attack
with the exact power activation and its power-victim defaults on the normalised victim, m0 = ``--m0`` candidates
(default n / 2: fewer candidates than samples, the theory's clean case) from the attack's own init.  Each round:
descend until J stalls (relative decrease below ``--stall`` over ``--window`` iterations, at most ``--segment``
iterations), then record

* ||grad J|| over x and the multipliers, min_j lambda_min(S_j) (batched Lanczos, ``--lanczos`` steps, with its
  largest Ritz residual), J, m,
* whether the epsilon-SOSP holds, ||grad J|| <= eps and min_j lambda_min(S_j) >= -eps, for each ``--eps``;

then the ``split`` arm runs a splitting round (grow mode, eigen directions, every candidate with lambda_min < 0 up
to the cap ``--max-factor`` x m0, a split kept only if the line search lowers J) and the ``plain`` arm does
nothing; ``--rounds`` rounds.  Both epsilons are absolute on the normalised victim's objective (J at x = 0 is
recorded: the scale).  The Lanczos minimum is checked once per d against a dense eigh of every S_j (seed
``--seeds[0]``, first record).  At the end, per-sample recovery (unit |margin|, up to sign, error < 0.1).

    python bench/sosp.py --alpha 3 --d 10 20 50 100 --n 8 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from poly_common import run_grid, copy_set, descend, exact_case, trained_case
from trainrecon.objective.candidates import CandidateSet
from trainrecon.refinement import SplitConfig
from trainrecon.refinement.splitting import second_order_report, splitting_eigenpairs, splitting_hvp, split_round

ARMS = ("split", "plain")


def dense_check(obj, cands: CandidateSet, steps: int) -> dict:
    """min_j lambda_min(S_j) by Lanczos against a dense eigh of every S_j (built from d HVPs)."""
    X, M = cands.x.detach(), cands.multipliers.detach()
    W, u = obj.weights(M).detach(), obj.u(X, M)
    m, d = X.shape
    S = torch.empty(m, d, d, dtype=X.dtype)
    for k in range(d):
        E = torch.zeros_like(X)
        E[:, k] = 1.0
        S[:, :, k] = splitting_hvp(obj, X, W, u, E, cands.labels)
    S = (S + S.transpose(1, 2)) / 2
    dense = torch.linalg.eigvalsh(S)[:, 0]
    mu, _, resid = splitting_eigenpairs(obj, cands, steps)
    return {"d": d, "m": m, "lanczos_steps": min(steps, d), "dense_min": float(dense.min()), "lanczos_min": float(mu.min()),
            "max_abs_diff_per_candidate": float((dense - mu).abs().max()), "max_ritz_residual": float(resid.max())}


def run_arm(case, arm: str, a: argparse.Namespace, check: bool) -> dict:
    attack = case.attack
    cands = attack.init(a.m0 or case.n // 2)
    d = cands.x.shape[1]
    cap = int(a.max_factor * cands.m0)
    steps = min(a.lanczos, d)
    records, total, t0 = [], 0, time.process_time()
    checked = None
    for r in range(a.rounds + 1):
        cands, hist, its = descend(attack, cands, a.segment, a.stall, a.window)
        total += its
        obj = attack.objective(total, cands)
        rep = second_order_report(obj, cands, threshold=min(a.eps), steps=steps, seed=r)
        if check and checked is None:
            checked = dense_check(obj, copy_set(cands), a.lanczos)
        rec = {"round": r, "iterations": total, "segment_iterations": its, "J": rep["loss"], "grad_norm": rep["grad_norm"],
               "grad_norm_x": rep["grad_norm_x"], "grad_norm_multipliers": rep["grad_norm_multipliers"],
               "min_eigenvalue": rep["min_splitting_eigenvalue"], "max_ritz_residual": rep["max_ritz_residual"],
               "m": cands.m, "cpu_seconds": time.process_time() - t0,
               **{f"sosp_{e:g}": bool(rep["grad_norm"] <= e and rep["min_splitting_eigenvalue"] >= -e) for e in a.eps}}
        if arm == "split" and r < a.rounds:
            sc = SplitConfig(enabled=True, per_round=max(1, cap - cands.m), mode="grow", direction="eigen",
                             max_factor=a.max_factor, seed=a.seed_split, lanczos_steps=steps)
            rr = split_round(obj, cands, sc, r)
            cands = rr.cands
            rec.update({"split_tried": len(rr.log), "split_accepted": sum(e["accepted"] for e in rr.log),
                        "m_after_split": cands.m})
        records.append(rec)
        print(f"  {arm:5s} round {r} its {total} J {rec['J']:.3g} |grad| {rec['grad_norm']:.2g} min eig "
              f"{rec['min_eigenvalue']:.2g} m {rec['m']} " + " ".join(f"sosp{e:g}={rec[f'sosp_{e:g}']}" for e in a.eps)
              + (f" split {rec['split_accepted']}/{rec['split_tried']}" if "split_tried" in rec else ""), flush=True)
    err = case.score(cands.x.detach().numpy(), cands.labels.numpy())
    first = {f"first_sosp_round_{e:g}": next((x["round"] for x in records if x[f"sosp_{e:g}"]), None) for e in a.eps}
    first_its = {f"first_sosp_iterations_{e:g}": next((x["iterations"] for x in records if x[f"sosp_{e:g}"]), None)
                 for e in a.eps}
    return {"arm": arm, "m0": records[0]["m"], "records": records, "recovered": int((err < 0.1).sum()),
            "errors": err.tolist(), "m_end": cands.m, "iterations": total, "J_end": records[-1]["J"],
            "cpu_seconds": time.process_time() - t0, "dense_check": checked, **first, **first_its}


def one(alpha: int, d: int, seed: int, a: argparse.Namespace) -> list[dict]:
    override = {"seed": seed}
    case = trained_case(alpha, d, a.n, seed, override=override) if a.trained else exact_case(alpha, d, a.n, seed, override)
    zero = CandidateSet(torch.zeros(2, d, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                        torch.tensor([-1.0, 1.0], dtype=torch.float64))
    head = {"alpha": alpha, "d": d, "n": a.n, "seed": seed, "victim": case.kind, "data_seed": case.data_seed,
            "J_truth": case.loss(case.truth(a.n)), "J_at_zero": case.loss(zero),
            **{f"victim_{k}": v for k, v in case.info.items()}}
    print(f"alpha {alpha} d {d} n {a.n} seed {seed} ({case.kind}): J truth {head['J_truth']:.3g}, J(0) {head['J_at_zero']:.3g}",
          flush=True)
    return [{**head, **run_arm(case, arm, a, check=seed == a.seeds[0])} for arm in ARMS]


def fmt(v) -> str:
    return "-" if v is None else str(v)


def table(rows: list[dict], eps: list[float]) -> str:
    lines = ["| victim | alpha | d | seed | arm | " + " | ".join(f"first ε-SOSP {e:g}: round (its)" for e in eps)
             + " | final |grad J| | final min λ_min | m0 -> m | J end | **recovered** | its |",
             "|---|---|---|---|---|" + "---|" * len(eps) + "---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['victim']} | {r['alpha']} | {r['d']} | {r['seed']} | {r['arm']} | "
                     + " | ".join(f"{fmt(r[f'first_sosp_round_{e:g}'])} ({fmt(r[f'first_sosp_iterations_{e:g}'])})" for e in eps)
                     + f" | {r['records'][-1]['grad_norm']:.2g} | {r['records'][-1]['min_eigenvalue']:.2g} | "
                     f"{r['m0']} -> {r['m_end']} | {r['J_end']:.3g} | **{r['recovered']}/{r['n']}** | {r['iterations']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", nargs="+", type=int, default=[3])
    ap.add_argument("--d", nargs="+", type=int, default=[10, 20, 50, 100])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--m0", type=int, default=0, help="starting candidates (0: n / 2)")
    ap.add_argument("--max-factor", type=float, default=4.0, help="m grows to at most this x m0")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--segment", type=int, default=4000, help="at most this many iterations to each stall")
    ap.add_argument("--stall", type=float, default=1e-3)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--lanczos", type=int, default=20)
    ap.add_argument("--eps", nargs="+", type=float, default=[1e-3, 1e-4])
    ap.add_argument("--seed-split", type=int, default=0)
    ap.add_argument("--trained", action="store_true", help="train-poly victims instead of exact KKT points")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sosp"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, tag = run_grid(a, lambda alpha, d, seed: one(alpha, d, seed, a))
    t = table(rows, a.eps)
    (a.out / f"{tag}.md").write_text(t + "\n")
    print(t)


if __name__ == "__main__":
    main()
