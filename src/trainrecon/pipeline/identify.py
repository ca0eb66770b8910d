"""``trainrecon identify`` as a function: attack a polynomial victim, then (apart) score it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_drawn, write_npz
from ..attacks.payload import Payload
from ..config import save_json, to_dict
from ..data.formats import read_npz
from ..errors import TrainreconError
from ..models.victim import load_victim
from ..provenance import refuse_other_record

#: everything ``identify`` writes into its folder (it refuses a folder holding anything else)
IDENTIFY_FILES = ("report.json", "samples.npz", "identify.png", "*.tmp")


def identify_run(
    victim_dir: str | Path, out: str | Path, cfg=None, truth: str | Path | None = None, score: bool = True,
    data_dir: str | Path | None = None, log=print,
) -> dict[str, Any]:
    """``trainrecon identify``: certified reconstruction from a polynomial victim; writes report.json,
    samples.npz (x, y, lambda and the neurons-as-data baseline) and identify.png.  Scoring against the
    training samples (from --truth or rebuilt from train.json) happens after, and apart from, the attack."""
    # here: identifiability loads scipy, which no other command needs
    from ..identifiability.certified import IdentifyConfig, compare_to_truth, identify, poly_from_victim
    from ..training.polynomial import poly_kkt_residual
    from ..identifiability.power_victims import poly_truth
    from ..pictures import identify_plot

    cfg = cfg or IdentifyConfig()
    victim = load_victim(victim_dir)
    net = poly_from_victim(victim)
    out = Path(out)
    inputs = {"victim": Payload.of(victim).fingerprint(), "config": to_dict(cfg),
              "truth": None if truth is None else str(Path(truth).resolve()), "score": bool(score)}
    given = None if truth is None else _truth(truth, net.W.shape[1], victim.train_info)  # checked before any work
    refuse_other_record(out / "report.json", ("inputs",), inputs,
                        f"{out}: holds the report of another identification ({{diff}}); choose a new folder")
    t0 = time.time()
    rep = identify(net, cfg, scale_recorded=bool(victim.train_info.get("rescaled_to_unit_margin", False)))
    rep["seconds"] = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    samples = rep.pop("samples")
    baseline = rep.pop("baseline")
    arrays = {"baseline": baseline}
    if samples is not None:
        arrays.update({"x": samples["x"], "y": samples["y"], "lambda": samples["lambda"]})
    write_npz(out / "samples.npz", **arrays)
    scores = None
    if truth is not None or (score and "data" in victim.train_info):
        if truth is not None:
            X_true, y_true = given
        else:
            X_true, y_true = poly_truth(victim, data_dir)
        y_true = np.ones(len(X_true)) if y_true is None else np.asarray(y_true, dtype=np.float64)
        lam = np.asarray(poly_kkt_residual(torch.as_tensor(net.a), torch.as_tensor(net.W), torch.as_tensor(X_true),
                                           torch.as_tensor(y_true), net.alpha, net.second_layer_trained)["lambdas"])
        active = lam > 1e-3 * lam.max() if lam.max() > 0 else np.ones(len(lam), bool)
        scores = {"n_train": int(len(X_true)), "n_active": int(active.sum()),
                  "recovered": compare_to_truth(None if samples is None else samples["x"], X_true, active),
                  "neurons_as_data": compare_to_truth(baseline, X_true, active)}
        rep["score"] = scores
    save_json(out / "report.json", {"config": cfg, "inputs": inputs, **rep})
    write_drawn(out / "identify.png", lambda f: identify_plot(rep, f))
    line = (f"{rep['verdict']}: {rep.get('n_recovered', 0)} samples recovered from {rep['significant_neurons']} neurons "
            f"({rep['distinct_directions']} directions, span {rep['neuron_span']}); system rank "
            f"{rep.get('system_rank')}/{rep['system_unknowns']}")
    if rep.get("certificate"):
        line += f"; certificate {rep['certificate'].split(':')[0]}"
    log(line)
    for r in rep["reasons"]:
        log(f"  - {r}")
    if scores is not None:
        rec, base = scores["recovered"], scores["neurons_as_data"]
        log(f"  scored against {scores['n_active']} active training samples: max relative error "
            f"{rec['max_rel_error']:.2e} (neurons as data: {base['max_rel_error']:.2e}), mean 1-|cos| "
            f"{rec['mean_one_minus_cos']:.2e} (neurons as data: {base['mean_one_minus_cos']:.2e})")
    return rep


def _truth(path, d: int, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """--truth samples (n, d) and labels: real, finite, of the victim's dimension and (where train.json records
    it) its number of samples."""
    X, y = read_npz(path)
    for name, a in (("x", X), ("y", y)):
        if a is not None and (a.dtype.kind not in "fiu" or not np.isfinite(a.astype(np.float64)).all()):
            raise TrainreconError(f"{path}: {name} has dtype {a.dtype} or holds NaN or inf; samples and labels must be "
                                  "finite real numbers")
    if X.ndim == 0 or len(X) == 0 or X.size == 0:
        raise TrainreconError(f"{path}: holds no samples")
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if X.shape[1] != d:
        raise TrainreconError(f"{path}: samples of dimension {X.shape[1]}, the victim takes {d}")
    n = (info.get("data") or {}).get("n") if isinstance(info.get("data"), dict) else None
    if isinstance(n, int) and len(X) != n:
        raise TrainreconError(f"{path}: {len(X)} samples, but the victim was made on n = {n} (train.json); --truth must "
                              "be its training set")
    return X, y
