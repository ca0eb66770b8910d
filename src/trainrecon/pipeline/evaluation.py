"""Evaluation of candidate files against a victim's training set: the only step that sees it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import folder_lock
from ..config import from_dict, save_json
from ..data.formats import read_npz, to_float_nchw
from ..data.tasks import TaskConfig, build_task
from ..errors import TrainreconError
from ..metrics.evaluate import evaluate, headline
from ..metrics.headline import HeadlineRule
from ..models.victim import Victim, load_victim
from ..reports import evidence_plot, l2_curve_plot, pair_grid


def load_truth(
    victim: Victim, data_dir: str | Path | None, truth: str | Path | None, heldout: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Training images, labels, held-out images (the control first, then the pool) and centring mean, for
    evaluation only."""
    shape = tuple(victim.spec.input_shape)
    x_ho_file = None if heldout is None else to_float_nchw(read_npz(heldout)[0], str(heldout))
    if truth is not None:
        x, y = read_npz(truth)
        x_tr = to_float_nchw(x, str(truth))
        if x_tr.shape[1:] != shape:
            raise TrainreconError(f"{truth}: images of shape {x_tr.shape[1:]}, but the victim takes {shape}")
        mean = victim.mean_chw() if victim.input_mean is not None else x_tr.mean(axis=0)
        return x_tr, y, x_ho_file, mean
    if "task" not in victim.train_info:
        raise TrainreconError("evaluate: the victim's train.json names no task; pass the training set with --truth")
    task = from_dict(TaskConfig, victim.train_info["task"], "train.json.task")
    data = build_task(task, data_dir)
    recorded = victim.train_info.get("train_indices")
    if recorded is not None and list(map(int, recorded)) != data.idx_train.tolist():
        raise TrainreconError("train.json: recorded train_indices differ from the task's selection on this data")
    x_ho = data.heldout_all if x_ho_file is None else x_ho_file
    mean = victim.mean_chw() if victim.input_mean is not None else data.mean
    return data.x_train, data.y_train, x_ho, mean


def read_candidates(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Centred candidates (m, C, H, W) from an .npz's ``x``, checked for shape and finiteness."""
    x, _ = read_npz(path)
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrainreconError(f"{path}: x is not numeric (dtype {np.asarray(x).dtype})") from None
    if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
        x = x.reshape(-1, *shape)
    if x.shape[1:] != shape or x.shape[0] == 0:
        raise TrainreconError(f"{path}: candidates of shape {x.shape}, the victim takes (m >= 1, {', '.join(map(str, shape))}) (centred space)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())
        raise TrainreconError(f"{path}: {bad} candidate(s) hold NaN or inf")
    return x


def evaluate_run(
    victim_dir: str | Path, candidate_files: list[str | Path], out: str | Path, data_dir: str | Path | None = None,
    truth: str | Path | None = None, heldout: str | Path | None = None, log=print,
    null_files: dict[str, str | Path] | None = None, rule: HeadlineRule = HeadlineRule(),
) -> dict[str, Any]:
    """Score the union of candidate files against the victim's training set, with the controls of
    ``metrics/headline.py`` (and further named null candidate files, e.g. a shadow victim's); write
    metrics.json, grid.png, evidence.png and l2_curve.png."""
    with folder_lock(out):
        return _evaluate_run(victim_dir, candidate_files, Path(out), data_dir, truth, heldout, log, null_files, rule)


def _evaluate_run(victim_dir, candidate_files, out: Path, data_dir, truth, heldout, log, null_files, rule) -> dict[str, Any]:
    victim = load_victim(victim_dir)
    shape = tuple(victim.spec.input_shape)
    cands = [read_candidates(f, shape) for f in candidate_files]
    nulls = {name: read_candidates(f, shape) for name, f in (null_files or {}).items()}
    x_tr, y_tr, x_ho, mean = load_truth(victim, data_dir, truth, heldout)
    if not (np.isfinite(x_tr).all() and (x_ho is None or np.isfinite(x_ho).all())):
        raise TrainreconError(f"{truth or heldout or 'the task data'}: training or held-out images hold NaN or inf")
    if len(x_tr) == 0:
        raise TrainreconError(f"{truth or 'the task data'}: no training images to evaluate against")
    metrics, pairs = evaluate(np.concatenate(cands), x_tr, x_ho, mean, y_tr, runs_unioned=len(cands),
                              extra_nulls=nulls, rule=rule)
    metrics["candidate_files"] = [Path(f).name for f in candidate_files]
    metrics["null_files"] = {k: Path(f).name for k, f in (null_files or {}).items()}
    metrics["mean_source"] = "victim input_mean" if victim.input_mean is not None else "training-set per-pixel mean"
    save_json(out / "metrics.json", metrics)
    p, head = pairs["hungarian"], metrics["headline"]
    recovered = np.zeros(len(p["index"]), bool)
    recovered[head.get("recovered_indices", [])] = True
    pair_grid(p["train"], p["matched"], p["similarities"]["attack"], out / "grid.png",
              f"training image | its one-to-one candidate, {head['similarity'].split(' (')[0]}; "
              f"green: recovered by the headline rule ({int(recovered.sum())} of {len(recovered)})", recovered)
    loo = metrics["protocols"]["loo_greedy"]
    l2_curve_plot(loo["l2_curve"], loo["l2_curve_control"], out / "l2_curve.png")
    evidence_plot(pairs, metrics, out / "evidence.png")
    log(headline(metrics))
    return metrics
