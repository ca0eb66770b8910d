"""Benchmark: can a trivial candidate set reach the headline?  The evidence behind the headline rule.

For each finished experiment folder (``bench/results/baselines/<case>``: a victim and its reconstruction) this
scores, under every protocol, the attack's candidates beside candidate sets that need no attack or are
perfect: the input mean (zeros in centred space), Gaussian noise at the attack's scale, the mean of another
subset of the same distribution (the task's next images), the held-out images themselves (a perfect
reconstruction of the wrong images) and the true training images.  A protocol earns its place when the true
images score near n and every trivial set near 0; the field's protocols are shown beside the headline.

    python bench/controls.py --data-dir ../shared/data bench/results/baselines/*/
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from trainrecon.config import from_dict, save_json
from trainrecon.data.tasks import TaskConfig, build_task
from trainrecon.metrics.protocols import evaluate
from trainrecon.models.victim import load_victim
from trainrecon.pipeline import load_truth


def candidate_sets(folder: Path, data_dir) -> tuple[dict[str, np.ndarray], tuple]:
    victim = load_victim(folder / "victim")
    x_tr, y_tr, x_ho, mean = load_truth(victim, data_dir, None, None)
    n = len(x_tr)
    attack = np.load(folder / "reconstruction" / "candidates.npz")["x"]
    m = len(attack)
    task = from_dict(TaskConfig, victim.train_info["task"], "train.json.task")
    other = build_task(dataclasses.replace(task, skip_per_class=task.skip_per_class + task.n_per_class), data_dir)
    rng = np.random.default_rng(0)
    reps = -(-m // n)
    sets = {
        "attack": attack,
        "zeros (input mean)": np.zeros_like(attack),
        "noise": rng.normal(size=attack.shape) * attack.std(),
        "another subset's mean": np.broadcast_to(other.x_train.mean(0) - mean, attack.shape).copy(),
        "held-out images": np.concatenate([x_ho[:n]] * reps)[:m] - mean,
        "true images": np.concatenate([x_tr] * reps)[:m] - mean,
    }
    return sets, (x_tr, x_ho, mean)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/controls", type=Path)
    a = ap.parse_args(argv)
    rows = []
    for folder in a.folders:
        if not (folder / "reconstruction" / "candidates.npz").is_file():
            continue
        sets, (x_tr, x_ho, mean) = candidate_sets(folder, a.data_dir)
        for name, cands in sets.items():
            metrics, _ = evaluate(cands, x_tr, x_ho, mean)
            h = metrics["headline"]
            p = metrics["protocols"]
            rows.append({"case": folder.name, "set": name, "n": metrics["n"], "recovered": h["recovered"],
                         "heldout_control": h["controls"]["heldout"], "similarity": h["similarity"],
                         "informative": h["informative"],
                         "haim_nn_paper_gt_0.4": p["haim_nn"]["ssim_paper"]["count_gt_0.4"],
                         "haim_nn_paper_gt_0.4_heldout": p["haim_nn"]["control"]["ssim_paper"]["count_gt_0.4"],
                         "hungarian_classic_gt_0.5": p["hungarian"]["ssim_classic"].get("count_gt_0.5"),
                         "hungarian_classic_gt_0.5_heldout": p["hungarian"]["control"]["ssim_classic"].get("count_gt_0.5")})
            r = rows[-1]
            print(f"{r['case']:40s} {name:24s} headline {r['recovered']:3d} (held-out {r['heldout_control']:2d}) | "
                  f"Haim NN paper>0.4 {r['haim_nn_paper_gt_0.4']:3d} ({r['haim_nn_paper_gt_0.4_heldout']:3d}) | "
                  f"one-to-one classic>0.5 {r['hungarian_classic_gt_0.5']} ({r['hungarian_classic_gt_0.5_heldout']})",
                  flush=True)
    save_json(a.out / "controls.json", {"rows": rows, "_command": "python " + " ".join(sys.argv)})


if __name__ == "__main__":
    main()
