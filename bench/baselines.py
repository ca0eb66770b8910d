"""Benchmark: each reconstruction baseline on a small real-data victim, trained and attacked here.

Each experiment file (``bench/cases/*.json``) names the task, the trainer and its config, the method and its
attack config; ``trainrecon run`` runs one.  This script runs several: for each it trains (or reuses) the
victim, runs the attack (resumable), evaluates with the held-out control, and writes into ``OUT/<case>/`` the
victim, reconstruction, metrics.json, grid.png, l2_curve.png and bench.json (seconds per iteration, training
time, victim residual, peak memory).  A summary of all cases goes to ``OUT/summary.json`` and is printed as a
Markdown table.

    python bench/baselines.py --data-dir ../shared/data --out bench/results/baselines bench/cases/*.json
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import torch

from trainrecon.config import load_json, save_json
from trainrecon.pipeline import run_experiment
from trainrecon.runtime import resolve_device


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", type=Path, help="experiment JSON files (bench/cases/*.json)")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/baselines", type=Path)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    rows = []
    for path in a.cases:
        row = run_experiment(path, a.out / path.stem, a.data_dir, device)
        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        row["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        row["torch_threads"] = torch.get_num_threads()
        save_json(a.out / path.stem / "bench.json", row)
        rows.append(row)
    summary_path = a.out / "summary.json"
    old = load_json(summary_path) if summary_path.is_file() else {}
    old.update({r["case"]: r for r in rows})
    save_json(summary_path, {**old, "_command": "python " + " ".join(sys.argv)})
    print(table(rows))


def table(rows: list[dict]) -> str:
    """Markdown: the honest headline with every control, then the field's Haim-protocol counts."""
    lines = ["| case | n | m | s/iter | **recovered** | held-out | nulls (mean/noise/other mean) | shadow | true images "
             "| informative | Haim NN SSIM>0.4 (held-out) | classic>0.4 (held-out) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h = r["headline"]
        c = h["controls"]
        classic = "n/a (8x8)" if r["classic_ssim_gt_0.4"] is None else f"{r['classic_ssim_gt_0.4']} ({r['control_classic_ssim_gt_0.4']})"
        lines.append(
            f"| {r['case']} | {r['n']} | {r['m']} | {r['seconds_per_iteration']:.3f} | **{h['recovered']}** | {c['heldout']} | "
            f"{c['null_mean']}/{c['null_noise']}/{c['null_heldout_mean']} | {c.get('shadow', '-')} | {c['positive']} | "
            f"{'yes' if h['informative'] else 'no'} | {r['ssim_gt_0.4']} ({r['control_ssim_gt_0.4']}) | {classic} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
