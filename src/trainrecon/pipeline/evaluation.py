"""Evaluation of candidate files against a victim's training set: the only step that sees it."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes, write_text
from ..attacks.payload import Payload
from ..audit_report import FINGERPRINT, audit_record, render_report
from ..checkpoint import folder_lock
from ..config import from_dict, load_json, save_json
from ..data.formats import read_npz, to_float_nchw
from ..data.tasks import TaskConfig, build_task
from ..errors import TrainreconError
from ..metrics.evaluate import headline
from ..metrics.headline import HeadlineRule
from ..metrics.scoring import score
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
    runs: list[str | Path] | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the union of candidate files against the victim's training set with :func:`trainrecon.score`
    (the controls of ``metrics/headline.py``, further named null candidate files such as a shadow victim's, the
    per-image exposure and its ROC); write metrics.json, grid.png, evidence.png, l2_curve.png and report.html
    (:mod:`trainrecon.audit_report`).  ``runs``: the attack run folders whose config.json and loss.json the
    report shows (default: the candidate files' folders that hold a loss.json); ``extra``: further entries for
    metrics.json (a union's record)."""
    with folder_lock(out):
        return _evaluate_run(victim_dir, candidate_files, Path(out), data_dir, truth, heldout, log, null_files, rule,
                             runs, extra)


def victim_record(victim: Victim) -> dict[str, Any]:
    """The victim's fingerprint for the report: weights hash, architecture, size, and how it was trained."""
    info = victim.train_info
    spec = victim.spec
    rec: dict[str, Any] = {
        FINGERPRINT: Payload.of(victim, disclose_n=False).fingerprint(),
        "architecture": spec.describe(), "activation": ", ".join(sorted(spec.activations())) or "none",
        "input shape": list(spec.input_shape), "parameters": int(sum(p.numel() for p in victim.params)),
    }
    if "imported_from" in info:
        rec["origin"] = f"imported from {info['imported_from']}"
    if "task" in info:
        rec["origin"] = "trained by trainrecon"
        rec["task"] = info["task"]
        rec["trainer"] = info.get("trainer_kind")
        rec["trainer config"] = info.get("trainer")
    if info.get("train_indices") is not None:
        rec["training images"] = len(info["train_indices"])
    final = info.get("final") or {}
    for key, label in (("kkt_residual", "stationarity residual (the floor for any reconstruction)"),
                       ("train_accuracy", "training accuracy")):
        if final.get(key) is not None:
            rec[label] = final[key]
    return rec


def attack_runs(folders: list[Path]) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """What each attack run folder records for the report (its config.json and loss.json, where present) and
    its loss history."""
    records, histories = [], {}
    for k, folder in enumerate(folders):
        cfg = load_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        loss = load_json(folder / "loss.json") if (folder / "loss.json").is_file() else {}
        cfg, loss = (cfg if isinstance(cfg, dict) else {}), (loss if isinstance(loss, dict) else {})
        name = folder.name if len(folders) == 1 else f"{k}: {folder.name}"
        records.append({"name": name, "folder": str(folder), "method": cfg.get("method"), "m": cfg.get("m"),
                        "payload": cfg.get("payload"), "attack": cfg.get("attack"),
                        "normalisation": cfg.get("normalisation"), "iterations_done": loss.get("iterations_done"),
                        "finished": loss.get("finished"), "seconds": loss.get("seconds"),
                        "seconds_per_iteration": loss.get("seconds_per_iteration"),
                        "refit_residual": loss.get("refit_residual")})
        if isinstance(loss.get("history"), list):
            histories[name] = [h for h in loss["history"] if isinstance(h, dict)]
    return records, histories


def _evaluate_run(victim_dir, candidate_files, out: Path, data_dir, truth, heldout, log, null_files, rule, runs,
                  extra) -> dict[str, Any]:
    t0 = time.time()
    victim = load_victim(victim_dir)
    shape = tuple(victim.spec.input_shape)
    cands = [read_candidates(f, shape) for f in candidate_files]
    nulls = {name: read_candidates(f, shape) for name, f in (null_files or {}).items()}
    x_tr, y_tr, x_ho, mean = load_truth(victim, data_dir, truth, heldout)
    if not (np.isfinite(x_tr).all() and (x_ho is None or np.isfinite(x_ho).all())):
        raise TrainreconError(f"{truth or heldout or 'the task data'}: training or held-out images hold NaN or inf")
    if len(x_tr) == 0:
        raise TrainreconError(f"{truth or 'the task data'}: no training images to evaluate against")
    indices = victim.train_info.get("train_indices") if truth is None else None
    result = score(np.concatenate(cands), x_tr, x_ho, mean, y_tr, nulls=nulls, rule=rule, train_indices=indices,
                   runs_unioned=len(cands))
    metrics, pairs = result.metrics, result.pairs
    metrics["candidate_files"] = [Path(f).name for f in candidate_files]
    metrics["null_files"] = {k: Path(f).name for k, f in (null_files or {}).items()}
    metrics["mean_source"] = "victim input_mean" if victim.input_mean is not None else "training-set per-pixel mean"
    metrics.update(extra or {})
    folders = [Path(r) for r in runs] if runs is not None else \
        [Path(f).parent for f in candidate_files if (Path(f).parent / "loss.json").is_file()]
    records, histories = attack_runs(folders)
    timings = {"victim training": victim.train_info.get("seconds"),
               **{f"attack {r['name']}": r["seconds"] for r in records if r.get("seconds") is not None},
               "evaluation": time.time() - t0}
    inputs = {"candidate files": [str(f) for f in candidate_files], "null files": metrics["null_files"],
              "training images": str(truth) if truth is not None else "the victim's task (train.json)",
              "held-out images": str(heldout) if heldout is not None else ("the task's test split" if truth is None else "none"),
              "centring mean": metrics["mean_source"], "headline rule": {"threshold": rule.threshold, "null_seed": rule.null_seed}}
    metrics["audit"] = audit_record(metrics, victim_record(victim), records, inputs, timings)
    save_json(out / "metrics.json", metrics)
    p, head = pairs["hungarian"], metrics["headline"]
    recovered = np.zeros(len(p["index"]), bool)
    recovered[head.get("recovered_indices", [])] = True
    pair_grid(p["train"], p["matched"], p["similarities"]["attack"], out / "grid.png",
              f"training image | its one-to-one candidate, {head['similarity'].split(' (')[0]}; "
              f"green: recovered by the headline rule ({int(recovered.sum())} of {len(recovered)})", recovered)
    loo = metrics["protocols"]["loo_greedy"]
    pictures = {"l2_curve": io.BytesIO(), "evidence": io.BytesIO()}
    l2_curve_plot(loo["l2_curve"], loo["l2_curve_control"], pictures["l2_curve"])
    evidence_plot(pairs, metrics, pictures["evidence"])
    pngs = {k: v.getvalue() for k, v in pictures.items()}
    for k, png in pngs.items():
        write_bytes(out / f"{k}.png", png)
    write_text(out / "report.html", render_report(result, histories, Path(victim_dir).name, pngs))
    log(headline(metrics))
    return metrics
