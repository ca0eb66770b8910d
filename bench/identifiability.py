"""Benchmark: certified recovery from two-layer polynomial networks across regimes.

Three tables, written to OUT/results.json, OUT/table.md and OUT/error_vs_residual.png:
1. exact KKT points (alpha 3 and 4, non-orthogonal Gaussian directions): verdict and error;
2. an exact point perturbed by noise on theta: KKT residual against recovery error;
3. networks trained by normalised GD, varying one factor at a time around a base setting (alpha, d, n, width,
   training length, fixed second layer, init scale, real digits-PCA data): verdicts, neuron directions and
   errors, with the neurons-as-data baseline.

    python bench/identifiability.py --out bench/results/identifiability
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainrecon.config import save_json  # noqa: E402
from trainrecon.errors import TrainreconError  # noqa: E402
from trainrecon.identifiability import (IdentifyConfig, PolyDataConfig, PolyNet, PolyTrainConfig,  # noqa: E402
                                        build_exact_kkt, compare_to_truth, identify, make_poly_data, train_polynomial)
from trainrecon.training.polynomial import poly_kkt_residual  # noqa: E402


def score(rep, X, active=None):
    rec = compare_to_truth(rep["samples"]["x"] if rep["samples"] else None, X, active)
    base = compare_to_truth(rep["baseline"], X, active)
    return rec, base


def exact_rows(seeds):
    rows = []
    for alpha, n, d in [(3, 3, 10), (3, 4, 20), (3, 5, 10), (4, 2, 10), (4, 3, 20), (4, 4, 15)]:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            V = rng.normal(size=(n, d)) + 0.5
            y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
            try:
                p = build_exact_kkt(V, y, alpha, seed=seed)
            except TrainreconError:
                rows.append({"alpha": alpha, "n": n, "d": d, "seed": seed, "verdict": "no exact point built"})
                continue
            t0 = time.time()
            rep = identify(PolyNet(p.a, p.W, alpha), IdentifyConfig(), scale_recorded=True)
            rec, base = score(rep, p.X)
            rows.append({"alpha": alpha, "n": n, "d": d, "seed": seed, "neurons": len(p.a),
                         "distinct_directions": rep["distinct_directions"], "span": rep["neuron_span"],
                         "system_rank": rep.get("system_rank"), "unknowns": rep["system_unknowns"],
                         "gram_rank": rep.get("gram_rank"), "gram_needed": rep.get("gram_needed"),
                         "verdict": rep["verdict"], "certificate": (rep.get("certificate") or "").split(":")[0],
                         "max_rel_error": rec["max_rel_error"], "baseline_max_rel_error": base["max_rel_error"],
                         "seconds": time.time() - t0})
    return rows


def perturbed_rows():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(4, 12)) + 0.5
    y = np.where(np.arange(4) % 2 == 0, 1.0, -1.0)
    p = build_exact_kkt(V, y, 3)
    nW, na = rng.normal(size=p.W.shape), rng.normal(size=p.a.shape)
    rows = []
    for eps in (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2):
        W = p.W + eps * np.linalg.norm(p.W) * nW / np.linalg.norm(nW)
        a = p.a + eps * np.linalg.norm(p.a) * na / np.linalg.norm(na)
        res = poly_kkt_residual(*map(torch.as_tensor, (a, W, p.X, p.y)), 3)["kkt_residual"]
        for polish in (False, True):
            rep = identify(PolyNet(a, W, 3), IdentifyConfig(polish=polish), scale_recorded=True)
            rec, base = score(rep, p.X)
            rows.append({"noise": eps, "polish": polish, "kkt_residual": res, "verdict": rep["verdict"],
                         "max_rel_error": rec["max_rel_error"], "baseline_max_rel_error": base["max_rel_error"]})
    return rows


BASE = {"alpha": 4, "d": 20, "n": 3, "width": 50, "steps": 5000, "train_second_layer": True, "init_scale": 0.3,
        "data": "sphere"}
VARIATIONS = [("base", {}), ("alpha", {"alpha": 3}), ("d", {"d": 10}), ("d", {"d": 50}), ("n", {"n": 2}),
              ("n", {"n": 5}), ("n", {"n": 8}), ("width", {"width": 10}), ("width", {"width": 200}),
              ("steps", {"steps": 500}), ("steps", {"steps": 20000}), ("second layer", {"train_second_layer": False}),
              ("init", {"init_scale": 1.0}), ("init", {"init_scale": 3.0}),
              ("real data", {"data": "digits", "d": 10, "alpha": 3}),
              ("real data", {"data": "digits", "d": 10, "alpha": 3, "n": 5})]


def trained_rows(seeds, data_dir):
    rows = []
    for factor, change in VARIATIONS:
        s = {**BASE, **change}
        for seed in seeds:
            X, y = make_poly_data(PolyDataConfig(s["data"], s["n"], s["d"], seed), data_dir)
            cfg = PolyTrainConfig(alpha=s["alpha"], width=s["width"], train_second_layer=s["train_second_layer"],
                                  init_scale=s["init_scale"], steps=s["steps"], seed=seed)
            t0 = time.time()
            a, W, summ = train_polynomial(cfg, torch.as_tensor(X), torch.as_tensor(y), log=lambda *a: None)
            net = PolyNet(a.numpy(), W.numpy(), s["alpha"], s["train_second_layer"])
            rep = identify(net, IdentifyConfig(), scale_recorded=True)
            lam = np.asarray(summ["lambdas"])
            active = lam > 1e-3 * lam.max()
            rec, base = score(rep, X, active)
            rows.append({"factor": factor, **{k: s[k] for k in ("alpha", "d", "n", "width", "steps",
                                                                    "train_second_layer", "init_scale", "data")},
                         "seed": seed, "kkt_residual": summ["kkt_residual"], "n_active": int(active.sum()),
                         "margin_spread": summ["margin_spread"], "distinct_directions": rep["distinct_directions"],
                         "span": rep["neuron_span"], "system_rank": rep.get("system_rank"),
                         "unknowns": rep["system_unknowns"], "verdict": rep["verdict"],
                         "recovered_cos_ge_0.99": rec["recovered_cos_ge_0.99"],
                         "baseline_cos_ge_0.99": base["recovered_cos_ge_0.99"],
                         "mean_one_minus_cos": rec["mean_one_minus_cos"],
                         "baseline_mean_one_minus_cos": base["mean_one_minus_cos"],
                         "max_rel_error": rec["max_rel_error"], "seconds": time.time() - t0})
    return rows


def markdown(rows, cols):
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:.2g}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/identifiability"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(a.seeds))
    t0 = time.time()
    exact = exact_rows(seeds)
    pert = perturbed_rows()
    trained = trained_rows(seeds, a.data_dir)
    save_json(a.out / "results.json", {"exact": exact, "perturbed": pert, "trained": trained,
                                       "base_setting": BASE, "seconds": time.time() - t0})
    md = ["## Exact KKT points", markdown(exact, ["alpha", "n", "d", "seed", "neurons", "distinct_directions", "span",
                                                 "system_rank", "unknowns", "gram_rank", "gram_needed", "verdict",
                                                 "certificate", "max_rel_error",
                                                 "baseline_max_rel_error"]),
          "", "## Exact point (alpha 3, n 4, d 12) with noise on theta",
          markdown(pert, ["noise", "polish", "kkt_residual", "verdict", "max_rel_error", "baseline_max_rel_error"]),
          "", "## Trained by normalised GD (one factor varied from the base setting)",
          markdown(trained, ["factor", "alpha", "d", "n", "width", "steps", "train_second_layer", "init_scale", "data",
                             "seed", "kkt_residual", "n_active", "distinct_directions", "span", "verdict",
                             "recovered_cos_ge_0.99", "baseline_cos_ge_0.99", "max_rel_error"])]
    (a.out / "table.md").write_text("\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for polish, mk in ((False, "o"), (True, "s")):
        pts = [(r["kkt_residual"], r["max_rel_error"]) for r in pert if r["polish"] == polish and r["noise"] > 0]
        ax.loglog(*zip(*pts), mk + "-", label=f"perturbed exact point{' (polished)' if polish else ''}")
    tr = [(r["kkt_residual"], r["max_rel_error"]) for r in trained if r["kkt_residual"] > 0]
    ax.loglog(*zip(*tr), "x", label="trained networks")
    ax.set_xlabel("KKT residual of the network")
    ax.set_ylabel("max relative error of recovery")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out / "error_vs_residual.png", dpi=110)
    print("\n".join(md))


if __name__ == "__main__":
    main()
