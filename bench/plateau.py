"""Benchmark (issue 28 item 3): where the plateau comes from -- which training images an attack recovers, and what
its other candidates are.  Evaluation only: it reads the training set.

    python bench/plateau.py bench/results/levers [--arms defaults solve500 ...]

For each arm's run (SOURCE/bench_<arm>/weights_haim/{run,eval}, as ``bench/levers.py`` and ``bench/people.py``
write them) it relates each training image's recovery under the headline (eval/metrics.json's exposure) to

* its multiplier lambda_i in the victim's own KKT equations (NNLS on the training set, exact ReLU:
  :meth:`trainrecon.models.stationarity.StationarityForm.residual`),
* its margin y_i f(x_i),
* its distance to its class mean and to its nearest other training image (pixel space),

as recovery rates per quartile of each; says what the held-out control's hits are (``heldout_hits``: held-out
images that the true training images also pass for, the control's floor, and each hit's candidate's nearest
training image); and decomposes every candidate as a non-negative blend of the
training images, x_j + mean ~ sum_i c_ij x_i (scipy NNLS), with the blend's relative residual and its effective
number of images (sum c)^2 / sum c^2, for the candidates matched to recovered images and for the others (in
pixel space, candidate + mean against the raw training images: centred by their own mean, the training images
sum to about zero and a blend would not be unique).  It
writes SOURCE/plateau_<arm>.json and SOURCE/plateau_<arm>.png.

``--public FILE.npz`` (key ``x``, raw images in [0, 1] or uint8; e.g. ``../shared/data/mnist_test.npz``) adds a
probe of an image prior from public data: the candidates projected onto the top k principal directions of the
last ``--public-count`` public images that are not in the held-out pool (centred by the victim's mean), clipped
to the pixel box, then scored by the same headline, for each k of ``--ranks`` (the JSON's ``subspace``): does
cleaning the candidates of what public digits do not contain lift more of them over the rule?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.optimize
import torch
from matplotlib.figure import Figure  # a bare figure: no backend is set for the process

from trainrecon.metrics.headline import heldout_control, recovered_mask, shown
from trainrecon.metrics.protocols import evaluate
from trainrecon.metrics.ssim import ssim_cross, ssim_kind
from trainrecon.models.stationarity import KKT
from trainrecon.models.victim import load_victim

FEATURES = ("multiplier", "margin", "class_mean_distance", "nearest_neighbour_distance")


def image_features(victim, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per training image: its KKT multiplier (NNLS, exact activation), margin, distance to its class mean and to
    its nearest other training image."""
    xc = torch.as_tensor(x - victim.input_mean.reshape(1, *x.shape[1:]), dtype=torch.float64).reshape(len(x), -1)
    labels = torch.as_tensor(y, dtype=torch.float64)
    params = [p.double() for p in victim.params]
    lam = np.asarray(KKT.residual(victim.spec, params, xc, labels)["lambdas"])
    with torch.no_grad():
        margin = (victim.spec.forward(params, xc).reshape(-1) * labels).numpy()
    flat = x.reshape(len(x), -1)
    class_mean = {c: flat[y == c].mean(0) for c in np.unique(y)}
    to_mean = np.array([np.linalg.norm(f - class_mean[c]) for f, c in zip(flat, y)])
    d = np.linalg.norm(flat[:, None] - flat[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return {"multiplier": lam, "margin": margin, "class_mean_distance": to_mean,
            "nearest_neighbour_distance": d.min(1)}


def by_quartile(feature: np.ndarray, recovered: np.ndarray) -> list[dict]:
    """Recovery rate in each quartile of ``feature`` (Q1 the smallest values)."""
    order = np.argsort(feature, kind="stable")
    out = []
    for q, idx in enumerate(np.array_split(order, 4)):
        out.append({"quartile": q + 1, "low": float(feature[idx].min()), "high": float(feature[idx].max()),
                    "images": len(idx), "recovered": int(recovered[idx].sum())})
    return out


def blends(cands: np.ndarray, train: np.ndarray) -> list[dict]:
    """Each candidate image (pixel space) as a non-negative blend of the training images: its relative residual,
    effective number of images and top image."""
    A = train.reshape(len(train), -1).T
    out = []
    for xj in cands.reshape(len(cands), -1):
        c, rnorm = scipy.optimize.nnls(A, xj, maxiter=50 * A.shape[1])
        norm = float(np.linalg.norm(xj))
        total, sq = float(c.sum()), float((c ** 2).sum())
        out.append({"residual": rnorm / norm if norm > 0 else 0.0,
                    "effective_images": total ** 2 / sq if sq > 0 else 0.0,
                    "top": int(c.argmax()) if total > 0 else -1,
                    "top_share": float(c.max() / total) if total > 0 else 0.0})
    return out


def arm_folder(source: Path, arm: str, key: str) -> Path:
    """The arm's run folder: SOURCE/bench_<arm>/<key>, or SOURCE/bench/<key> for people.py's untagged defaults."""
    bench = source / f"bench_{arm}"
    return (bench if bench.is_dir() or arm != "defaults" else source / "bench") / key


def analyse(source: Path, arm: str, key: str = "weights_haim") -> dict:
    folder = arm_folder(source, arm, key)
    victim = load_victim(source / "victim", training_record=False)
    tr = np.load(source / "train_images.npz")
    x, y = tr["x"], tr["y"]
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    recovered = np.zeros(len(x), bool)
    matched = {}
    for e in metrics["exposure"]["images"]:
        recovered[e["position"]] = bool(e["recovered"])
        matched[e["candidate"]] = bool(e["recovered"])
    feats = image_features(victim, x, y)
    cands = np.load(folder / "run" / "candidates.npz")["x"]
    parts = blends(cands + victim.input_mean.reshape(1, *x.shape[1:]), x)  # in pixel space (centred images sum to ~0)
    for j, b in enumerate(parts):
        b["matched_to_recovered"] = matched.get(j, False)
    rec_b = [b for b in parts if b["matched_to_recovered"]]
    other = [b for b in parts if not b["matched_to_recovered"]]

    def summary(bs):
        if not bs:
            return None
        return {"candidates": len(bs), "median_residual": float(np.median([b["residual"] for b in bs])),
                "median_effective_images": float(np.median([b["effective_images"] for b in bs])),
                "distinct_top_images": len({b["top"] for b in bs})}

    return {"arm": arm, "n": len(x), "m": len(cands), "recovered": int(recovered.sum()),
            "heldout_hits": heldout_hits(victim, x, np.load(source / "heldout_images.npz")["x"], cands, metrics),
            "by_quartile": {f: by_quartile(feats[f], recovered) for f in FEATURES},
            "blends": {"matched_to_recovered": summary(rec_b), "others": summary(other)},
            "per_image": {f: feats[f].tolist() for f in FEATURES} | {"recovered": recovered.tolist()},
            "per_candidate": parts}


def heldout_hits(victim, x: np.ndarray, pool: np.ndarray, cands: np.ndarray, metrics: dict) -> dict:
    """What the held-out control's "recovered" images are: for each held-out control image h that the attack's
    candidates pass for (the headline's rule with the roles swapped, ``heldout_control``), the matched candidate's
    nearest training image by SSIM and whether that candidate recovers it in the headline (from ``metrics``'
    exposure)."""
    tr, ho = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(pool, dtype=torch.float64)
    mean = torch.as_tensor(victim.mean_chw(), dtype=torch.float64).reshape(1, *x.shape[1:])
    cand = torch.as_tensor(cands, dtype=torch.float64)
    kind, tau = ssim_kind(tr.shape), metrics["headline"]["threshold"]
    control, control_pool = heldout_control(tr, ho)
    attack = recovered_mask(control, cand, mean, control_pool, kind, tau)
    recovers = {e["candidate"]: e["position"] for e in metrics["exposure"]["images"] if e["recovered"]}
    hits = []
    for h in np.flatnonzero(attack["recovered"]):
        c = int(attack["index"][h])
        to_train = ssim_cross(shown(cand[c:c + 1], mean), tr, kind)[0]
        hits.append({"heldout": int(h), "candidate": c, "similarity": float(attack["similarity"][h]),
                     "nearest_train": int(to_train.argmax()), "nearest_train_similarity": float(to_train.max()),
                     "recovers_train": recovers.get(c)})
    return {"heldout": len(hits), "hits": hits}


def subspace_probe(source: Path, arm: str, key: str, public: Path, count: int, ranks: list[int]) -> dict:
    """{k: the headline's count and controls} for the arm's candidates projected onto the top k principal
    directions of public images (k = 0: unprojected), each clipped to the pixel box [-mean, 1 - mean]."""
    folder = arm_folder(source, arm, key)
    mean = load_victim(source / "victim", training_record=False).mean_chw().reshape(1, -1)
    cands = np.load(folder / "run" / "candidates.npz")["x"]
    train, pool = np.load(source / "train_images.npz")["x"], np.load(source / "heldout_images.npz")["x"]
    raw = np.load(public)["x"]
    pub = (raw.astype(np.float64) / 255 if raw.dtype == np.uint8 else raw.astype(np.float64)).reshape(len(raw), -1)
    held = {h.astype(np.float32).tobytes() for h in pool.reshape(len(pool), -1)}
    pub = np.array([p for p in pub if p.astype(np.float32).tobytes() not in held])[-count:]
    basis = np.linalg.svd(pub - mean, full_matrices=False)[2]
    out = {"public": str(public), "public_images": len(pub), "ranks": {}}
    for k in ranks:
        flat = cands.reshape(len(cands), -1)
        flat = flat @ basis[:k].T @ basis[:k] if k else flat
        head = evaluate(np.clip(flat, -mean, 1 - mean).reshape(cands.shape), train, pool,
                        mean.reshape(cands.shape[1:]))[0]["headline"]
        out["ranks"][str(k)] = {"recovered": head["recovered"], "controls": head["controls"]}
    return out


def picture(result: dict, path: Path) -> None:
    fig = Figure(figsize=(4 * len(FEATURES), 3))
    for k, f in enumerate(FEATURES):
        ax = fig.add_subplot(1, len(FEATURES), k + 1)
        qs = result["by_quartile"][f]
        ax.bar([q["quartile"] for q in qs], [q["recovered"] / q["images"] for q in qs])
        ax.set_xticks([1, 2, 3, 4])
        ax.set_xlabel(f"quartile of {f.replace('_', ' ')}")
        ax.set_ylim(0, 1)
        if k == 0:
            ax.set_ylabel("share recovered")
    fig.suptitle(f"{result['arm']}: {result['recovered']} of {result['n']} recovered")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("--arms", nargs="+", default=["defaults"])
    ap.add_argument("--key", default="weights_haim", help="the run's folder in each arm (LEVEL_METHOD)")
    ap.add_argument("--public", type=Path, default=None, help="public images (npz, key x) for the subspace probe")
    ap.add_argument("--public-count", type=int, default=5000)
    ap.add_argument("--ranks", nargs="+", type=int, default=[0, 50, 100, 200])
    a = ap.parse_args()
    for arm in a.arms:
        result = analyse(a.source, arm, a.key)
        if a.public is not None:
            result["subspace"] = subspace_probe(a.source, arm, a.key, a.public, a.public_count, a.ranks)
        (a.source / f"plateau_{arm}.json").write_text(json.dumps(result, indent=1))
        picture(result, a.source / f"plateau_{arm}.png")
        lines = [f"{arm}: {result['recovered']} of {result['n']}"]
        for f in FEATURES:
            lines.append(f"  {f}: " + ", ".join(f"Q{q['quartile']} {q['recovered']}/{q['images']}"
                                                for q in result["by_quartile"][f]))
        for k, s in result["blends"].items():
            if s:
                lines.append(f"  candidates {k}: {s['candidates']}, median blend residual {s['median_residual']:.2f}, "
                             f"median effective images {s['median_effective_images']:.1f}, "
                             f"{s['distinct_top_images']} distinct top images")
        hh = result["heldout_hits"]
        lines.append(f"  held-out control: {hh['heldout']}; " + ", ".join(
                         f"h{h['heldout']}: candidate's nearest training image {h['nearest_train']} at "
                         f"{h['nearest_train_similarity']:.2f}" + (" (recovered)" if h["recovers_train"] is not None
                                                                  else "") for h in hh["hits"]))
        for k, r in result.get("subspace", {}).get("ranks", {}).items():
            lines.append(f"  projected onto {k} public principal directions (0: not): {r['recovered']} recovered, "
                         f"controls {r['controls']}")
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
