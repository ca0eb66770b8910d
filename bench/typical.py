"""Benchmark: the headline's floor from typical images, candidates that need no attack and no weights.

A candidate set of m images of the task that the victim never saw, drawn at random from its test split (outside
the victim's held-out pool) or its training split (outside its training set), is what an attacker who knows only
the data distribution can produce.  Scored by the headline (``trainrecon.score``) beside the attack's candidates
of the same size, it shows how many training images the rule credits to chance: a training image whose one-to-one
candidate is, by luck, nearer it than any of the N held-out images is.  For m random candidates that happens to
about m / (m + N) of the training images, so at m = 2n and N = 6n to about a quarter.  The held-out control
(the rule with the roles of the training images and n held-out images swapped) sees the same luck.

    python bench/typical.py SOURCE [SOURCE ...] --data-dir ../shared/data --draws 5 [--runs RUN ...]

SOURCE: a folder with ``train_images.npz`` and ``heldout_images.npz`` (the people and levers benches' victims;
the input mean from its ``mean.npz`` where it has one, else the training images' pixel mean);
RUN: a run folder under it (``RUN/candidates.npz``) scored beside, with its m.  MNIST and CIFAR-10 victims (the
image shape says which).  Writes ``typical.json`` (every draw's counts, the command) and ``typical.png`` (the
attack against the typical draws, each with its held-out control) into each SOURCE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from trainrecon import score
from trainrecon.config import save_json


def _as_images(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 HW or HWC arrays as float CHW in [0, 1]."""
    x = x.astype(np.float64) / 255.0
    return (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None]).reshape(len(x), *shape)


def _outside(pool: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Rows of ``pool`` that are none of ``used`` (by their 8-bit pixels)."""
    seen = {bytes(r) for r in np.round(used.reshape(len(used), -1) * 255).astype(np.uint8)}
    keys = np.round(pool.reshape(len(pool), -1) * 255).astype(np.uint8)
    return np.array([i for i, k in enumerate(keys) if bytes(k) not in seen], dtype=np.int64)


def floor_of(source: Path, data_dir: Path, draws: int, runs: list[str]) -> dict:
    train = np.load(source / "train_images.npz")["x"].astype(np.float64)
    heldout = np.load(source / "heldout_images.npz")["x"].astype(np.float64)
    n, shape = len(train), tuple(train.shape[1:])
    # the input mean the attacker is given: the victim's (mean.npz, the people bench), else the training images'
    # pixel mean (the levers victims' pixel centring)
    mean = np.load(source / "mean.npz")["x"].reshape(shape) if (source / "mean.npz").is_file() else train.mean(0)
    stem = "cifar10" if shape[0] == 3 else "mnist"
    splits = {"test": f"{stem}_test_subset.npz" if stem == "cifar10" else "mnist_test.npz",
              "train": f"{stem}_subset.npz"}
    attacks = {}
    for r in runs:
        attacks[r] = np.load(source / r / "candidates.npz")["x"].astype(np.float64)
    m = len(next(iter(attacks.values()))) if attacks else 2 * n
    out: dict = {"source": str(source), "n": n, "m": m, "heldout_pool": len(heldout), "attack": {}, "typical": {}}
    for r, c in attacks.items():
        h = score(c, train, heldout, mean=mean).metrics["headline"]
        out["attack"][r] = {"recovered": h["recovered"], "heldout": h["controls"]["heldout"],
                            "nulls_max": max(v for k, v in h["controls"].items() if k.startswith("null_"))}
        print(f"{source.name} {r}: {h['recovered']} of {n} (held-out {h['controls']['heldout']})", flush=True)
    for split, name in splits.items():
        x = _as_images(np.load(data_dir / name)["x"], shape)
        free = _outside(x, np.concatenate([train, heldout]))
        rng = np.random.default_rng(0)
        rows = []
        for d in range(draws):
            pick = rng.choice(free, size=m, replace=False)
            h = score(x[pick] - mean, train, heldout, mean=mean).metrics["headline"]
            rows.append({"recovered": h["recovered"], "heldout": h["controls"]["heldout"]})
        rec = [r["recovered"] for r in rows]
        ho = [r["heldout"] for r in rows]
        out["typical"][split] = {"draws": rows, "recovered_mean": float(np.mean(rec)),
                                 "heldout_mean": float(np.mean(ho))}
        print(f"{source.name} typical {split}-split images (m = {m}, {draws} draws): recovered {rec} (mean "
              f"{np.mean(rec):.1f}), held-out control {ho} (mean {np.mean(ho):.1f}); m / (m + N) n = "
              f"{m / (m + len(heldout)) * n:.1f}", flush=True)
    return out


def picture(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    labels, rec, ho = [], [], []
    for r, v in result["attack"].items():
        labels.append(f"attack\n{Path(r).parent.name or r}")
        rec.append(v["recovered"])
        ho.append(v["heldout"])
    for split, v in result["typical"].items():
        labels.append(f"typical\n({split} split)")
        rec.append(v["recovered_mean"])
        ho.append(v["heldout_mean"])
    fig = Figure(figsize=(1.6 * len(labels) + 2, 3.2))
    ax = fig.subplots()
    xs = np.arange(len(labels))
    ax.bar(xs - 0.2, rec, 0.4, label="headline recovered")
    ax.bar(xs + 0.2, ho, 0.4, label="held-out control")
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_ylabel(f"of n = {result['n']}")
    ax.set_title(f"{Path(result['source']).name}: m = {result['m']}, held-out pool {result['heldout_pool']}",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--data-dir", default=Path("../shared/data"), type=Path)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--runs", nargs="*", default=[], help="run folders under each source scored beside")
    a = ap.parse_args(argv)
    for s in a.sources:
        for f in ("train_images.npz", "heldout_images.npz"):
            if not (s / f).is_file():
                raise SystemExit(f"{s / f}: file not found (a source needs its training and held-out images)")
        runs = [r for r in a.runs if (s / r / "candidates.npz").is_file()]
        result = floor_of(s, a.data_dir, a.draws, runs)
        result["_command"] = "python " + " ".join(sys.argv)
        save_json(s / "typical.json", result)
        picture(result, s / "typical.png")


if __name__ == "__main__":
    main()
