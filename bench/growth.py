"""Benchmark: growing the candidate set from m < n by sample splitting (issue 17 item 3).

Polynomial victims (:mod:`poly_common`: exact KKT points, J = 0 at the truth, or ``--trained`` networks from
``train-poly``'s trainer), the Haim attack with the exact power activation and its power-victim defaults.  For
each start m0 (``--m0-fractions`` of n) and final size (``--final-factors`` x n):

* ``split_grow``: m0 candidates from the attack's own init; whenever J stalls (relative decrease below
  ``--stall`` over ``--window`` iterations; at the latest ``--gap`` iterations after the previous round) and
  m < final, a splitting round (:func:`split_round`, grow mode, eigen directions, line search on J, a split
  kept only if J decreases) splits up to min(m, final - m) candidates; ``--iterations`` in all;
* ``random_split``: the same along random directions (the control for the eigen direction), continued past
  ``--iterations`` until it has used the split arm's CPU time;
* ``fresh``: the same m0 and, at the iterations where ``split_grow`` split, as many freshly drawn candidates as
  it added (the method's own draw, :meth:`Method.draw`; labels those of the split parents; zero momentum);
* ``final_m``: the final m from the start (the attack's init), plain descent.

Equal budget: every arm but ``split_grow`` runs until it has used the split arm's CPU time (``time.process_time``
of this single-threaded process: the fair measure of wall-clock on a machine shared with other jobs; wall
seconds are recorded too), and its iteration count is recorded.  Scored by the per-sample relative error after
rescaling every candidate to unit |margin|, up to sign (:meth:`PolyCase.score`), recovered = error < 0.1
(``recovered_signed``: planted_blends' rule, unit margin where y f(x) > 0 and no sign flip), and the final J.

    python bench/growth.py --alpha 3 4 --d 20 50 --n 8 --seeds 0 1 2 --iterations 15000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from poly_common import run_grid, step, PolyCase, descend, exact_case, trained_case
from trainrecon.objective.candidates import CandidateSet
from trainrecon.refinement import SplitConfig
from trainrecon.refinement.splitting import split_round

ARMS = ("split_grow", "random_split", "fresh", "final_m")


def add_fresh(case: PolyCase, cands: CandidateSet, labels: torch.Tensor, g: torch.Generator) -> CandidateSet:
    """``cands`` with len(labels) new candidates from the method's draw (x ~ init_scale N(0, 1), lam ~ U(0, 1)),
    the existing candidates' optimiser state kept, the new ones' zero, m0 (the weight normalisation) unchanged."""
    X, M = case.attack.draw(len(labels), g)
    new = CandidateSet(X.to(cands.x), M.to(cands.x), labels.clone())
    both = CandidateSet.concat([cands, new])

    def grow(state):
        return {k: torch.cat([v, torch.zeros((len(labels), *v.shape[1:]), dtype=v.dtype)]) if v.ndim and v.shape[0] == cands.m
                else v.clone() for k, v in state.items()}

    both.state_x, both.state_m, both.m0 = grow(cands.state_x), grow(cands.state_m), cands.m0
    return both


def run_arm(case: PolyCase, arm: str, m0: int, final: int, a: argparse.Namespace, seed: int,
            budget: float | None = None, events: list[dict] | None = None) -> tuple[CandidateSet, dict]:
    """One arm; the split arms run ``a.iterations`` and return their round log, the others run for ``budget`` CPU
    seconds (``fresh`` adding candidates at the split arm's ``events``)."""
    attack = case.attack
    cands = attack.init(final if arm == "final_m" else m0)
    opt_x, opt_m = attack.optimisers()
    d = cands.x.shape[1]
    g = torch.Generator().manual_seed(10_000 + seed)
    pending = list(events or []) if arm == "fresh" else []
    log: list[dict] = []
    hist: list[float] = []
    last = 0
    c0, w0 = time.process_time(), time.time()
    it = 0
    while True:
        if arm in ("split_grow", "random_split"):
            if it >= a.iterations and (budget is None or time.process_time() - c0 >= budget):
                break  # random_split: if its rounds cost less, it gets the rest of the budget
            stalled = it - last > a.window and hist[-a.window - 1] - hist[-1] < a.stall * hist[-a.window - 1]
            if cands.m < final and len(log) < a.max_rounds and it - last >= a.window and (stalled or it - last >= a.gap):
                sc = SplitConfig(enabled=True, per_round=min(cands.m, final - cands.m), mode="grow",
                                 direction="eigen" if arm == "split_grow" else "random", max_factor=final / cands.m0,
                                 seed=seed, lanczos_steps=min(20, d))
                m_before = cands.m
                r = split_round(attack.objective(it, cands), cands, sc, len(log))
                cands = r.cands
                added = cands.labels[m_before:].clone()
                log.append({"iteration": it, "stalled": bool(stalled), "tried": len(r.log),
                            "accepted": sum(e["accepted"] for e in r.log), "m": cands.m, "labels": added.tolist(),
                            "J_before": hist[-1], "seconds": r.seconds,
                            "min_eigenvalue": min((e["eigenvalue"] for e in r.log), default=float("nan"))})
                last = it
        else:
            if time.process_time() - c0 >= budget:
                break
            while pending and pending[0]["iteration"] <= it:
                ev = pending.pop(0)
                if ev["labels"]:
                    cands = add_fresh(case, cands, torch.as_tensor(ev["labels"], dtype=cands.x.dtype), g)
                log.append({"iteration": it, "added": len(ev["labels"]), "m": cands.m})
        hist.append(step(attack, cands, it, opt_x, opt_m))
        if not np.isfinite(hist[-1]):
            break
        it += 1
    cpu, wall = time.process_time() - c0, time.time() - w0
    J = case.loss(cands, it)
    err = case.score(cands.x.detach().numpy(), cands.labels.numpy())
    signed = case.score(cands.x.detach().numpy(), cands.labels.numpy(), signed=True)
    return cands, {"arm": arm, "m0": m0, "m_final_target": final, "m_end": cands.m, "iterations": it,
                   "cpu_seconds": cpu, "wall_seconds": wall, "J_end": J, "recovered": int((err < 0.1).sum()),
                   "errors": err.tolist(), "rounds": log,
                   "recovered_signed": int((signed < 0.1).sum()), "errors_signed": signed.tolist(),
                   "splits_accepted": sum(e.get("accepted", 0) for e in log),
                   "splits_tried": sum(e.get("tried", 0) for e in log)}


def one(alpha: int, d: int, n: int, seed: int, a: argparse.Namespace) -> list[dict]:
    override = {"seed": seed}
    case = trained_case(alpha, d, n, seed, override=override) if a.trained else exact_case(alpha, d, n, seed, override)
    j_truth = case.loss(case.truth(n))
    zero = CandidateSet(torch.zeros(2, d, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                        torch.tensor([-1.0, 1.0], dtype=torch.float64))
    head = {"alpha": alpha, "d": d, "n": n, "seed": seed, "victim": case.kind, "data_seed": case.data_seed,
            "J_truth": j_truth, "J_at_zero": case.loss(zero), **{f"victim_{k}": v for k, v in case.info.items()}}
    warm = case.attack.init(4)  # the first HVP / autograd calls of a process are slow: not in the split arm's budget
    split_round(case.attack.objective(0, warm), warm, SplitConfig(enabled=True, per_round=2, lanczos_steps=min(20, d)), 0)
    descend(case.attack, warm, 50)
    rows: list[dict] = []
    for factor in a.final_factors:
        final = int(round(factor * n))
        budgets = []
        for frac in a.m0_fractions:
            m0 = int(round(frac * n))
            m0 += m0 % 2  # the Haim attack's labels come in halves
            _, sg = run_arm(case, "split_grow", m0, final, a, seed)
            budgets.append(sg["cpu_seconds"])
            _, rs = run_arm(case, "random_split", m0, final, a, seed, budget=sg["cpu_seconds"])
            _, fr = run_arm(case, "fresh", m0, final, a, seed, budget=sg["cpu_seconds"], events=sg["rounds"])
            for r in (sg, rs, fr):
                rows.append({**head, **r, "budget_cpu_seconds": sg["cpu_seconds"]})
                report(rows[-1])
        _, fm = run_arm(case, "final_m", final, final, a, seed, budget=max(budgets))
        rows.append({**head, **fm, "m0": final, "budget_cpu_seconds": max(budgets)})
        report(rows[-1])
    return rows


def report(r: dict) -> None:
    rounds = ", ".join(f"{e['iteration']}:{e.get('accepted', e.get('added'))}" for e in r["rounds"])
    print(f"alpha {r['alpha']} d {r['d']} n {r['n']} seed {r['seed']} {r['arm']:12s} m {r['m0']}->{r['m_end']} "
          f"(target {r['m_final_target']}) its {r['iterations']} cpu {r['cpu_seconds']:.1f}s J {r['J_end']:.3g} "
          f"recovered {r['recovered']}/{r['n']} (median err {np.median(r['errors']):.2f}) rounds [{rounds}]", flush=True)


def table(rows: list[dict]) -> str:
    """Per (victim, alpha, d, m0 -> final, arm): recovered per seed, their sum, median final J, iterations, m."""
    keys: dict = {}
    for r in rows:
        keys.setdefault((r["victim"], r["alpha"], r["d"], r["n"], r["m0"], r["m_final_target"], r["arm"]), []).append(r)
    lines = ["| victim | alpha | d | n | m0 -> target | arm | m end (per seed) | its (per seed) | splits kept/tried | "
             "**recovered** (per seed) | sum | median J end |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (v, al, d, n, m0, fin, arm), rs in keys.items():
        rec = [x["recovered"] for x in rs]
        kept = f"{sum(x['splits_accepted'] for x in rs)}/{sum(x['splits_tried'] for x in rs)}" if "split" in arm else "-"
        lines.append(f"| {v} | {al} | {d} | {n} | {m0} -> {fin} | {arm} | {', '.join(str(x['m_end']) for x in rs)} | "
                     f"{', '.join(str(x['iterations']) for x in rs)} | {kept} | **{', '.join(map(str, rec))}** | "
                     f"{sum(rec)}/{n * len(rs)} | {np.median([x['J_end'] for x in rs]):.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", nargs="+", type=int, default=[3])
    ap.add_argument("--d", nargs="+", type=int, default=[20])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--m0-fractions", nargs="+", type=float, default=[0.25, 0.5])
    ap.add_argument("--final-factors", nargs="+", type=float, default=[1.0, 2.0])
    ap.add_argument("--iterations", type=int, default=10000, help="the split arm's iterations (its CPU time is the budget)")
    ap.add_argument("--stall", type=float, default=1e-2)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--gap", type=int, default=1000, help="a round at the latest this many iterations after the last")
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument("--trained", action="store_true", help="train-poly victims instead of exact KKT points")
    ap.add_argument("--out", type=Path, default=Path("bench/results/growth"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, tag = run_grid(a, lambda alpha, d, seed: one(alpha, d, a.n, seed, a))
    t = table(rows)
    (a.out / f"{tag}.md").write_text(t + "\n")
    print(t)


if __name__ == "__main__":
    main()
