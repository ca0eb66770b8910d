"""``trainrecon identify`` as a function: attack a polynomial victim, then (apart) score it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_npz
from ..config import save_json
from ..data.formats import read_npz
from ..errors import TrainreconError
from ..models.victim import load_victim


def identify_run(
    victim_dir: str | Path, out: str | Path, cfg=None, truth: str | Path | None = None, score: bool = True,
    data_dir: str | Path | None = None, log=print,
) -> dict[str, Any]:
    """``trainrecon identify``: certified reconstruction from a polynomial victim; writes report.json,
    samples.npz (x, y, lambda and the neurons-as-data baseline) and identify.png.  Scoring against the
    training samples (from --truth or rebuilt from train.json) happens after, and apart from, the attack."""
    from ..identifiability.identify import IdentifyConfig, compare_to_truth, identify, poly_from_victim
    from ..identifiability.polynomial import poly_kkt_residual
    from ..identifiability.victims import poly_truth
    from ..reports import identify_plot

    cfg = cfg or IdentifyConfig()
    victim = load_victim(victim_dir)
    net = poly_from_victim(victim)
    t0 = time.time()
    rep = identify(net, cfg, scale_recorded=bool(victim.train_info.get("rescaled_to_unit_margin", False)))
    rep["seconds"] = time.time() - t0
    out = Path(out)
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
            X_true, y_true = read_npz(truth)
            X_true = np.asarray(X_true, dtype=np.float64).reshape(len(X_true), -1)
            if X_true.shape[1] != net.W.shape[1]:
                raise TrainreconError(f"{truth}: samples of dimension {X_true.shape[1]}, the victim takes {net.W.shape[1]}")
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
    save_json(out / "report.json", {"config": cfg, **rep})
    identify_plot(rep, out / "identify.png")
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
