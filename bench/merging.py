"""Benchmark: does merging near-duplicate candidates (and re-seeding the freed ones) beat its controls at equal
wall-clock?

For each experiment file (victim + method + attack config, ``bench/cases/*.json``) and seed, these arms attack the
same victim:

* ``merge``: the method with ``attack.merge`` enabled (rounds at 20 %, 30 %, ..., 60 % of the iterations, cosine
  0.95 within a label); its wall-clock T sets the budget of every other arm;
* ``merge_random``: the control for *which* candidates restart: at the same rounds, as many randomly chosen
  candidates start afresh (multipliers dropped, nothing merged);
* ``base``: no refinement, the same m, run until wall-clock T;
* ``base_its``: no refinement, the same m and the same iterations as ``merge`` (a merging round costs one m x m
  Gram matrix, so equal iterations are equal work; wall-clock on a shared machine is not);
* ``base_mbig``: no refinement, started with m + (the candidates the merge arm re-seeded, rounded to the label
  blocks): as many starting points as the merge arm used, from the start, until T;
* ``merge_split``: merging and sample splitting (the bench/splitting.py settings), cut at T.

Each arm is scored with the honest headline (held-out, nulls, true images as candidates) and the collapse count
of its final candidates (``loss.json["collapse"]``, attacker-side: distinct candidates at cosine 0.99 / 0.95).

    python bench/merging.py bench/cases/haim_mnist_pixel_box.json bench/cases/haim_mnist.json \\
        --data-dir ../shared/data --iterations 4000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from trainrecon import reconstruct
from trainrecon.attacks import payload_from_folder
from trainrecon.config import from_dict, load_config, load_json, save_json, to_dict
from trainrecon.pipeline import Experiment, evaluate_run, train_victim
from trainrecon.refinement import MergeConfig, SplitConfig
from trainrecon.runtime import resolve_device

ARMS = ("merge", "merge_random", "base", "base_its", "base_mbig", "merge_split")


def arm_config(attack, arm: str, iterations: int, seed: int, budget: float, m_big: int, merge: dict):
    cfg = dataclasses.replace(attack, iterations=iterations, seed=seed, checkpoint_every=max(1, iterations // 4),
                              split=SplitConfig(), merge=MergeConfig())
    mc = from_dict(MergeConfig, {**merge, "enabled": True, "seed": seed})
    if arm == "merge":
        return dataclasses.replace(cfg, merge=mc)
    if arm == "merge_random":
        return dataclasses.replace(cfg, merge=dataclasses.replace(mc, select="random"), max_seconds=budget)
    if arm == "base_its":
        return cfg
    if arm == "merge_split":
        return dataclasses.replace(cfg, merge=mc, split=SplitConfig(enabled=True, seed=seed), max_seconds=budget)
    # ten times the iterations, cut at the merge arm's wall-clock
    return dataclasses.replace(cfg, iterations=10 * iterations, max_seconds=budget,
                               m=m_big if arm == "base_mbig" else cfg.m)


def run_case(case: Path, out: Path, data_dir, device, seeds, iterations, merge: dict, arms=ARMS) -> list[dict]:
    exp = load_config(Experiment, case)
    train_cfg, attack = exp.configs(str(case))
    victim_dir = out / "victim"
    train_victim(exp.task, train_cfg, victim_dir, data_dir, device, log=lambda *a: None)
    payload = payload_from_folder(victim_dir)
    m0 = attack.m or 2 * (payload.n_train or 0)
    block = payload.spec.n_outputs if payload.spec.n_outputs > 1 else 2
    rows = []
    for seed in seeds:
        budget, m_big = 0.0, m0
        for arm in ("merge",) + tuple(a for a in arms if a != "merge"):
            run = out / f"seed{seed}" / arm
            cfg = arm_config(attack, arm, iterations, seed, budget, m_big, merge)
            t0 = time.time()
            res = reconstruct(payload, cfg, run, device, resume=True, log=lambda *a: None).stats
            wall = time.time() - t0
            if arm == "merge":  # the budget of the other arms: this arm's wall-clock when it first finished
                fixed = out / f"seed{seed}" / "budget.json"
                if not fixed.is_file():
                    save_json(fixed, {"seconds": res["seconds"], "reseeded": res["merging"]["reseeded"]})
                b = load_json(fixed)
                budget = b["seconds"]
                m_big = m0 + -(-b["reseeded"] // block) * block
            metrics = evaluate_run(victim_dir, [run / "candidates.npz"], run / "eval", data_dir=data_dir,
                                   log=lambda *a: None)
            head = metrics["headline"]
            row = {"case": case.stem, "seed": seed, "arm": arm, "m": res["m"], "iterations": res["iterations_done"],
                   "seconds": res["seconds"], "wall": wall,
                   "final_loss": res["final_loss"]["total"] if res["final_loss"] else None,
                   "recovered": head["recovered"], "controls": head["controls"], "informative": head["informative"],
                   "collapse": res["collapse"], "merging": res["merging"], "splitting": res["splitting"]}
            rows.append(row)
            save_json(run / "bench.json", row)
            c = res["collapse"]
            print(f"{case.stem} seed {seed} {arm:12s}: m {row['m']}, {row['iterations']} its, {row['seconds']:.0f} s, "
                  f"loss {row['final_loss']:.4g}, recovered {row['recovered']} (held-out {head['controls']['heldout']}),"
                  f" distinct {c['0.99']['distinct']}/{c['0.95']['distinct']} of {c['m']}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | seed | arm | m | its | s | loss | **recovered** | held-out | nulls max | true | distinct 0.99 "
             "(largest) | distinct 0.95 (largest) | re-seeded | split kept/tried |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, k = r["controls"], r["collapse"]
        nulls = max(v for key, v in c.items() if key.startswith("null") or key == "shadow")
        sp, mg = r["splitting"], r["merging"]
        kept = "-" if not sp else f"{sp['accepted']}/{sp['tried']}"
        lines.append(
            f"| {r['case']} | {r['seed']} | {r['arm']} | {r['m']} | {r['iterations']} | {r['seconds']:.0f} "
            f"| {r['final_loss']:.4g} | **{r['recovered']}** | {c['heldout']} | {nulls} | {c['positive']} "
            f"| {k['0.99']['distinct']} ({k['0.99']['largest']}) | {k['0.95']['distinct']} ({k['0.95']['largest']}) "
            f"| {'-' if not mg else mg['reseeded']} | {kept} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", type=Path)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/merging", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--merge", default="{}", help="JSON object of MergeConfig fields for the merge arms")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms to run (merge always runs)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    merge = json.loads(a.merge)
    device = resolve_device(a.device)
    rows = []
    for case in a.cases:
        rows += run_case(case, a.out / case.stem, a.data_dir, device, a.seeds, a.iterations, merge, tuple(a.arms))
        save_json(a.out / "summary.json", {"rows": rows, "merge": to_dict(from_dict(MergeConfig, merge)),
                                           "_command": "python " + " ".join(sys.argv)})
    print(table(rows))


if __name__ == "__main__":
    main()
