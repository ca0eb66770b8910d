"""Evaluation of candidate files against a victim's training set: the only step that sees it.

``EVALUATION_FILES``: everything an evaluation writes into its folder (``trainrecon evaluate`` refuses a folder
holding anything else)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_bytes, write_drawn, write_text
from ..attacks.payload import Payload
from ..audit_report import FINGERPRINT, audit_record, render_report
from ..config import from_dict, load_json, save_json, to_dict
from ..data.formats import read_npz, to_float_nchw
from ..data.tasks import TaskConfig, build_task
from ..errors import TrainreconError
from ..metrics.protocols import check_null_names, headline
from ..metrics.headline import HeadlineRule
from ..metrics.scoring import checked_images, score
from ..models.victim import Victim, load_victim, training_set_size
from ..provenance import OutputFolder, check_sources, refuse_other_record
from ..reconstruction import Reconstruction
from ..refinement.merging import collapse_report
from ..pictures import evidence_plot, l2_curve_plot, pair_grid
from .truth_start import run_record, truth_start_control

EVALUATION_FILES = ("metrics.json", "grid.png", "evidence.png", "l2_curve.png", "report.html", "*.tmp")


def load_truth(
    victim: Victim, data_dir: str | Path | None, truth: str | Path | None, heldout: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Training images, labels, held-out images (the control first, then the pool) and centring mean, for
    evaluation only.  ``truth`` must hold as many images as the victim was trained on (where train.json records
    it), real whole-number labels, and the victim's image shape, as must ``heldout``."""
    shape = tuple(victim.spec.input_shape)
    x_ho_file = None if heldout is None else _images(heldout, shape, "held-out images")
    if truth is not None:
        x_tr = _images(truth, shape, "training images")
        y = read_npz(truth)[1]
        if y is not None and not (y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.isfinite(y).all()
                                                             and np.array_equal(y, np.round(y)))):
            raise TrainreconError(f"{truth}: y has dtype {y.dtype}; labels must be whole real numbers")
        recorded = training_set_size(victim.train_info, "train.json")
        if recorded is not None and len(x_tr) != recorded:
            raise TrainreconError(f"{truth}: {len(x_tr)} images, but the victim was trained on n = {recorded} "
                                  "(train.json); --truth must be exactly its training set")
        mean = victim.mean_chw() if victim.input_mean is not None else x_tr.mean(axis=0)
        return x_tr, y, x_ho_file, mean
    if "task" not in victim.train_info:
        raise TrainreconError("evaluate: the victim's train.json names no task; pass the training set with --truth")
    task = from_dict(TaskConfig, victim.train_info["task"], "train.json.task")
    data = build_task(task, data_dir)
    recorded = victim.train_info.get("train_indices")
    if recorded is not None and list(map(int, recorded)) != data.idx_train.tolist():
        raise TrainreconError("train.json: recorded train_indices differ from the task's selection on this data")
    if data.x_train.shape[1:] != shape:
        raise TrainreconError(f"train.json.task: images of shape {data.x_train.shape[1:]}, but the victim takes {shape}")
    x_ho = data.heldout_all if x_ho_file is None else x_ho_file
    mean = victim.mean_chw() if victim.input_mean is not None else data.mean
    return data.x_train, data.y_train, x_ho, mean


def _images(path: str | Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Raw images in [0, 1] (N >= 1, C, H, W) from an .npz's ``x`` (its layout and uint8 read by
    :func:`~trainrecon.data.formats.to_float_nchw`), checked by the one validator in the victim's image shape."""
    return checked_images(to_float_nchw(read_npz(path)[0], str(path)), what, str(path), shape)


def read_candidates(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Centred candidates (m, C, H, W) from an .npz's ``x``: the file-input side of
    :func:`~trainrecon.metrics.scoring.checked_images`."""
    return checked_images(read_npz(path)[0], "candidates", str(path), shape)


@dataclass(frozen=True)
class Candidates:
    """Candidates already in memory, to be scored without reading them back: ``x`` centred (m, C, H, W);
    ``path``: the file their run stored them in (named in metrics.json as a candidate file is; its folder is the
    run's); ``origin``: the record of the run that made them (``{"victim", "method", "recorded_in"}``, as
    :func:`trainrecon.provenance.origin` reads it from that file; None for none)."""

    x: np.ndarray
    path: Path
    origin: dict[str, Any] | None = None

    @classmethod
    def of(cls, rec: Reconstruction, path: str | Path) -> "Candidates":
        """An attack's :class:`~trainrecon.reconstruction.Reconstruction`, stored by its run at ``path``."""
        return cls(rec.x.numpy(), Path(path), {"victim": str(rec.victim), "method": str(rec.method),
                                               "recorded_in": str(path)})


def _path(source: str | Path | Candidates) -> Path:
    return source.path if isinstance(source, Candidates) else Path(source)


def _read(source: str | Path | Candidates, shape: tuple[int, ...]) -> np.ndarray:
    """A source's candidates through the one validator: from memory, or read from its file."""
    if isinstance(source, Candidates):
        return checked_images(source.x, "candidates", str(source.path), shape)
    return read_candidates(source, shape)


def evaluate_run(
    victim_dir: str | Path, candidate_files: list[str | Path | Candidates], out: str | Path,
    data_dir: str | Path | None = None, truth: str | Path | None = None, heldout: str | Path | None = None, log=print,
    null_files: dict[str, str | Path | Candidates] | None = None, rule: HeadlineRule = HeadlineRule(),
    runs: list[str | Path] | None = None, extra: dict[str, Any] | None = None,
    allow_cross_victim: bool = False, allow_mixed_methods: bool = False, truth_start: bool = False,
) -> dict[str, Any]:
    """Score the union of candidate files against the victim's training set with :func:`trainrecon.score`
    (the controls of ``metrics/headline.py``, further named null candidate files such as a shadow victim's, the
    per-image exposure and its ROC); write metrics.json, grid.png, evidence.png, l2_curve.png and report.html
    (:mod:`trainrecon.audit_report`).  ``runs``: the attack run folders whose config.json and loss.json the
    report shows (default: the candidate files' folders that hold a loss.json); ``extra``: further entries for
    metrics.json (a union's record).

    Each candidate source is a file (``trainrecon evaluate``, a union) or :class:`Candidates` already in memory
    (a command that has just run the attack: ``run``, ``audit``, the demo, a sweep's trial), scored as they are,
    never read back from the file their run wrote.  Candidate files that record the victim they were made on must name this one, and one method
    (:func:`trainrecon.provenance.check_sources`; ``allow_cross_victim`` / ``allow_mixed_methods`` for deliberate
    experiments, recorded in ``metrics["provenance"]``).  A further null set may not take a built-in control's
    name.  An ``out`` holding the evaluation of other inputs is refused.  ``truth_start`` also runs the attack's
    own positive control (:mod:`.truth_start`: the run's attack started at the training images and at unseen ones,
    as long as the run ran; one attack run folder), into ``metrics["truth_start"]`` and the verdict."""
    check_null_names(list(null_files or {}))  # what can be refused before the folder is made
    if truth_start and len(candidate_files) != 1:
        raise TrainreconError("--truth-start: needs the candidates of one attack run (it reruns that attack)")
    if truth_start:
        run_record(_path(candidate_files[0]).parent)
    victim = load_victim(victim_dir)
    fp = Payload.of(victim).fingerprint()
    known = {str(c.path): c.origin for c in candidate_files if isinstance(c, Candidates)}
    provenance = check_sources([_path(c) for c in candidate_files], fp, str(victim_dir), allow_cross_victim,
                               allow_mixed_methods, known=known)
    with OutputFolder(out, "evaluate", EVALUATION_FILES):
        return _evaluate_run(victim, fp, provenance, candidate_files, Path(out), data_dir, truth, heldout, log,
                             null_files, rule, runs, extra, Path(victim_dir).name, truth_start)


def _resolved(path) -> str | None:
    return None if path is None else str(Path(path).resolve())


def victim_record(victim: Victim, fp: str) -> dict[str, Any]:
    """The victim's fingerprint ``fp`` (:meth:`~trainrecon.attacks.payload.Payload.fingerprint`, computed once by
    the caller) for the report, with its architecture, size, and how it was trained."""
    info = victim.train_info
    spec = victim.spec
    rec: dict[str, Any] = {
        FINGERPRINT: fp,
        "architecture": spec.describe(), "activation": ", ".join(sorted(spec.activations())) or "none",
        "input shape": list(spec.input_shape), "parameters": spec.n_params(),
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


def _evaluate_run(victim: Victim, fp: str, provenance: dict[str, Any], candidate_files, out: Path, data_dir, truth,
                  heldout, log, null_files, rule, runs, extra, title: str, truth_start: bool = False) -> dict[str, Any]:
    t0 = time.time()
    shape = tuple(victim.spec.input_shape)
    sources, null_sources = candidate_files, null_files or {}
    candidate_files = [_path(c) for c in sources]
    null_files = {k: _path(f) for k, f in null_sources.items()}
    provenance["inputs"] = {"victim": fp, "candidates": [_resolved(f) for f in candidate_files],
                            "nulls": {k: _resolved(f) for k, f in null_files.items()},
                            "truth": _resolved(truth), "heldout": _resolved(heldout), "rule": to_dict(rule)}
    refuse_other_record(out / "metrics.json", ("provenance", "inputs"), provenance["inputs"],
                        f"{out}: holds the evaluation of other inputs ({{diff}}); choose a new folder")
    cands = [_read(c, shape) for c in sources]
    nulls = {name: _read(f, shape) for name, f in null_sources.items()}
    x_tr, y_tr, x_ho, mean = load_truth(victim, data_dir, truth, heldout)
    if not (np.isfinite(x_tr).all() and (x_ho is None or np.isfinite(x_ho).all())):
        raise TrainreconError(f"{truth or heldout or 'the task data'}: training or held-out images hold NaN or inf")
    if len(x_tr) == 0:
        raise TrainreconError(f"{truth or 'the task data'}: no training images to evaluate against")
    indices = victim.train_info.get("train_indices") if truth is None else None
    scored = np.concatenate(cands)
    result = score(scored, x_tr, x_ho, mean, y_tr, nulls=nulls, rule=rule, train_indices=indices,
                   runs_unioned=len(cands))
    metrics, pairs = result.metrics, result.pairs
    metrics["candidate_files"] = [Path(f).name for f in candidate_files]
    metrics["null_files"] = {k: Path(f).name for k, f in (null_files or {}).items()}
    metrics["mean_source"] = "victim input_mean" if victim.input_mean is not None else "training-set per-pixel mean"
    metrics["provenance"] = provenance
    # attacker-side: how many distinct candidates were scored (near-copies grouped without the training set)
    metrics["collapse"] = collapse_report(torch.as_tensor(scored))
    metrics.update(extra or {})
    if truth_start:
        metrics["truth_start"] = truth_start_control(victim, Path(candidate_files[0]).parent, x_tr, y_tr, x_ho, mean,
                                                     rule=rule, log=log)
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
    metrics["audit"] = audit_record(metrics, victim_record(victim, fp), records, inputs, timings)
    save_json(out / "metrics.json", metrics)
    p, head = pairs["hungarian"], metrics["headline"]
    recovered = np.zeros(len(p["index"]), bool)
    recovered[head.get("recovered_indices", [])] = True
    grid_title = (f"training image | its one-to-one candidate, {head['similarity'].split(' (')[0]}; "
                  f"green: recovered by the headline rule ({int(recovered.sum())} of {len(recovered)})")
    write_drawn(out / "grid.png", lambda f: pair_grid(p["train"], p["matched"], p["similarities"]["attack"], f,
                                                      grid_title, recovered))
    loo = metrics["protocols"]["loo_greedy"]
    pictures = {"l2_curve": io.BytesIO(), "evidence": io.BytesIO()}
    l2_curve_plot(loo["l2_curve"], loo["l2_curve_control"], pictures["l2_curve"])
    evidence_plot(pairs, metrics, pictures["evidence"])
    pngs = {k: v.getvalue() for k, v in pictures.items()}
    for k, png in pngs.items():
        write_bytes(out / f"{k}.png", png)
    write_text(out / "report.html", render_report(result, histories, title, pngs))
    log(headline_and_collapse(metrics))
    return metrics


def headline_and_collapse(metrics: dict[str, Any]) -> str:
    """The CLI's last line: the headline, then how many distinct candidates were scored (attacker-side)."""
    c = metrics.get("collapse")
    if not c:
        return headline(metrics)
    return (f"{headline(metrics)}; distinct candidates: {c['0.99']['distinct']} of {c['m']} at cosine 0.99, "
            f"{c['0.95']['distinct']} at 0.95 (largest group {c['0.95']['largest']})")
