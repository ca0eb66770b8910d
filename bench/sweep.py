"""Benchmark: the defaults alone, the best trial of a sweep, and the union of the top trials (issue 12).

For an experiment file's victim (reused from ``--victims`` or trained here), this script
1. runs the method with its **defaults** (the method's config, only ``iterations`` and ``log_every`` taken from
   the case), evaluated with the honest headline and its controls;
2. runs ``trainrecon sweep`` with ``--score-with-truth`` (research mode: the headline of every trial is logged,
   never used to choose) on the same base, ``--trials`` trials over ``--workers`` processes;
3. evaluates the **best trial** by the attacker-side score and the **union** of the ``--top`` best trials;
4. reports the rank correlation (Spearman) between the attacker-side score and the recovered count over the
   complete trials: whether the score tracks recovery.
Writes ``OUT/<case>/sweep_bench.json`` and ``sweep_bench.png``, with wall-clock for each arm.

    python bench/sweep.py bench/cases/haim_mnist_pixel_box.json --data-dir ../shared/data \\
        --victims bench/results/baselines --out bench/results/sweep --trials 16 --workers 2
"""

from __future__ import annotations

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from trainrecon import reconstruct  # noqa: E402
from trainrecon.attacks import method_named, payload_from_folder  # noqa: E402
from trainrecon.config import save_json  # noqa: E402
from trainrecon.pipeline import evaluate_run  # noqa: E402
from trainrecon.pipeline.sweep import run_sweep, union_runs  # noqa: E402
from trainrecon.sweeps import SweepConfig  # noqa: E402

from common import case_parser, case_victim  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__doc__, "bench/results/sweep")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--top", type=int, default=3)
    a = ap.parse_args(argv)
    exp, _, case_attack, victim, out = case_victim(a)
    iterations = a.iterations or case_attack.iterations
    base = {"iterations": iterations, "log_every": case_attack.log_every}
    quiet = lambda *_: None  # noqa: E731

    t0 = time.time()
    defaults = method_named(exp.method).Config(**base)
    reconstruct(payload_from_folder(victim), defaults, out / "defaults", a.device, resume=True, log=quiet)
    m = evaluate_run(victim, [out / "defaults" / "candidates.npz"], out / "defaults", a.data_dir, log=quiet)
    arms = {"defaults": {"recovered": m["headline"]["recovered"], "controls": m["headline"]["controls"],
                         "wall_seconds": time.time() - t0}}
    print("defaults:", arms["defaults"]["recovered"], flush=True)

    t0 = time.time()
    cfg = SweepConfig(method=exp.method, trials=a.trials, workers=a.workers, score_with_truth=True, base=base)
    res = run_sweep(cfg, victim, out / "sweep", a.device, a.data_dir)
    sweep_wall = time.time() - t0
    done = [t for t in res["trials"] if t["state"] == "COMPLETE"]
    best = res["best"]
    arms["best_trial"] = {"recovered": best["recovered"], "trial": best["trial"], "score": best["score"],
                          "params": best["params"], "wall_seconds": sweep_wall,
                          "most_recovered_by_any_trial": max(t["recovered"] for t in done)}
    t0 = time.time()
    u = union_runs(victim, out / f"union_top{a.top}", sweep=out / "sweep", top=a.top, data_dir=a.data_dir, log=print)
    arms[f"union_top{a.top}"] = {"recovered": u["headline"]["recovered"], "controls": u["headline"]["controls"],
                                 "union": u["union"], "wall_seconds": sweep_wall + time.time() - t0}
    u = union_runs(victim, out / "union_all", sweep=out / "sweep", data_dir=a.data_dir, log=print)
    arms["union_all"] = {"recovered": u["headline"]["recovered"], "controls": u["headline"]["controls"],
                         "union": u["union"], "wall_seconds": sweep_wall + time.time() - t0}
    scores = np.array([t["score"] for t in done])
    recovered = np.array([t["recovered"] for t in done])
    rho, p = spearmanr(scores, recovered) if len(done) > 2 else (float("nan"), float("nan"))
    scored = [t for t in res["trials"] if t["recovered"] is not None and (t["score"] or t["last_reported"]) is not None]
    rho_all, p_all = (spearmanr([t["score"] or t["last_reported"] for t in scored], [t["recovered"] for t in scored])
                      if len(scored) > 2 else (float("nan"), float("nan")))
    result = {"case": a.case.stem, "method": exp.method, "n": m["n"], "arms": arms,
              "sweep": {"states": res["states"], "trials": res["trials"], "study": res["study"]},
              "score_vs_recovered": {"spearman_rho": float(rho), "p_value": float(p), "complete_trials": len(done),
                                     "spearman_rho_with_pruned": float(rho_all), "p_value_with_pruned": float(p_all),
                                     "trials_with_pruned": len(scored),
                                     "note": "score = the candidates' refit residual (lower is better): a negative rho "
                                             "means a lower score goes with more recovered images"},
              "_command": "python " + " ".join(sys.argv)}
    save_json(out / "sweep_bench.json", result)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(arms)
    ax1.bar(names, [arms[k]["recovered"] for k in names], color="tab:blue")
    ax1.set_ylabel(f"recovered of {m['n']} (headline)")
    ax1.set_title(f"{a.case.stem}")
    ax1.tick_params(axis="x", labelsize=8)
    ax2.scatter([t["score"] or t["last_reported"] for t in scored], [t["recovered"] for t in scored],
                c=["tab:blue" if t["state"] == "COMPLETE" else "tab:gray" for t in scored])
    ax2.set_xscale("log")
    ax2.set_xlabel("attacker-side score (refit residual)")
    ax2.set_ylabel("recovered (headline)")
    ax2.set_title(f"trials (grey: pruned): rho = {rho_all:.2f}, complete only {rho:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "sweep_bench.png", dpi=120)
    for k, v in arms.items():
        print(f"| {a.case.stem} | {k} | {v['recovered']} | {v['wall_seconds']:.0f} s |")
    print(f"Spearman(score, recovered) over {len(done)} complete trials: {rho:.2f} (p = {p:.2g}); with the pruned "
          f"ones at their last score, {len(scored)} trials: {rho_all:.2f} (p = {p_all:.2g})")


if __name__ == "__main__":
    main()
