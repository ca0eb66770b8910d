"""``trainrecon sweep`` and ``trainrecon union``: a hyper-parameter study over local worker processes, and the
merged, de-duplicated candidates of several runs scored with the standard protocols."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_npz
from ..config import save_json, to_dict
from ..errors import Interrupted, TrainreconError
from ..models.victim import load_victim
from ..sweeps.study import SweepConfig, read_trials, summary, work
from .evaluation import evaluate_run, load_truth, read_candidates


def _evaluator(victim: Path, data_dir, truth, heldout):
    """Research mode: the honest headline of a trial folder's candidates (written into that folder)."""

    def evaluate(folder: Path) -> dict[str, Any]:
        m = evaluate_run(victim, [folder / "candidates.npz"], folder, data_dir, truth, heldout, log=lambda *_: None)
        h = m["headline"]
        return {"recovered": h["recovered"], "n": m["n"], "controls": h["controls"]}

    return evaluate


def _worker(cfg: SweepConfig, victim: Path, out: Path, device: str, index: int, threads: int, evaluation) -> None:
    import torch

    torch.set_num_threads(threads)
    evaluate = _evaluator(victim, *evaluation) if cfg.score_with_truth else None
    try:
        work(cfg, victim, out, device, evaluate, worker=index, log=lambda s: print(f"[worker {index}] {s}", flush=True))
    except (TrainreconError, Interrupted) as e:
        print(f"[worker {index}] error: {e}", flush=True)
        raise SystemExit(2 if isinstance(e, TrainreconError) else 130) from None


def run_sweep(cfg: SweepConfig, victim: str | Path, out: str | Path, device: str = "cpu", data_dir=None, truth=None,
              heldout=None, log=print) -> dict[str, Any]:
    """Run (or continue) the sweep with ``cfg.workers`` local processes, then write OUT/sweep.json."""
    victim, out = Path(victim), Path(out)
    v = load_victim(victim)  # clear errors before any worker starts
    if cfg.score_with_truth:
        load_truth(v, data_dir, truth, heldout)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "sweep_config.json", {"victim": str(victim), **to_dict(cfg)})
    evaluation = (data_dir, truth, heldout)
    if cfg.workers == 1:
        evaluate = _evaluator(victim, *evaluation) if cfg.score_with_truth else None
        work(cfg, victim, out, device, evaluate, log=log)
    else:
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(cfg, victim, out, device, i, threads, evaluation))
                 for i in range(cfg.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [i for i, p in enumerate(procs) if p.exitcode]
        if bad:
            log(f"workers {bad} ended with an error (their trials are retried when the sweep is rerun)")
    result = summary(cfg, out, victim)
    s = result["states"]
    best = result["best"]
    log(f"study {result['study']}: {s['COMPLETE']} complete, {s['PRUNED']} pruned, {s['FAIL']} failed (retried: "
        f"{sum(bool(r['retry_of']) for r in result['trials'])}), {s['RUNNING']} running; "
        + (f"best trial {best['trial']} score {best['score']:.4g} ({best['folder']})" if best else "no complete trial")
        + f"; {out / 'sweep.json'}")
    return result


def union_dedupe(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep a candidate unless its NCC (cosine of the centred, flattened images) with an earlier kept one
    exceeds ``threshold``; candidates come best run first.  Returns (kept candidates, kept indices)."""
    flat = x.reshape(len(x), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = flat / np.where(norm > 0, norm, 1)
    keep: list[int] = []
    for i in range(len(x)):
        if norm[i, 0] == 0:
            continue
        if keep and float((unit[keep] @ unit[i]).max()) > threshold:
            continue
        keep.append(i)
    idx = np.asarray(keep, dtype=int)
    return x[idx], idx


def union_runs(victim: str | Path, out: str | Path, runs: list[Path] | None = None, sweep: Path | None = None,
               top: int = 0, dedupe: float = 0.99, data_dir=None, truth=None, heldout=None, log=print) -> dict[str, Any]:
    """Merge the candidates of run folders (``runs``) and/or of a sweep's trials (the ``top`` best complete ones by
    score, all complete ones when ``top`` is 0), best first; drop near-duplicates; evaluate the union with the
    standard protocols and the honest headline.  Writes OUT/union.npz, metrics.json (with ``union``), grid.png and
    report.html (with every merged run's loss curve)."""
    victim, out = Path(victim), Path(out)
    shape = tuple(load_victim(victim, training_record=False).spec.input_shape)
    sources: list[tuple[Path, float | None]] = []
    if sweep is not None:
        done = sorted((t for t in read_trials(sweep) if t.get("state") == "COMPLETE" and t.get("score") is not None),
                      key=lambda t: t["score"])
        if not done:
            raise TrainreconError(f"{sweep}: no complete trial to merge")
        sources += [(t["path"], t["score"]) for t in (done[:top] if top else done)]
    sources += [(Path(r), None) for r in runs or []]
    if not sources:
        raise TrainreconError("union: give run folders, or --sweep with a sweep's output folder")
    parts = []
    for folder, _ in sources:
        f = folder / "candidates.npz" if folder.is_dir() else folder
        parts.append(read_candidates(f, shape))
    x = np.concatenate(parts)
    kept, idx = union_dedupe(x, dedupe)
    out.mkdir(parents=True, exist_ok=True)
    origin = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])[idx]
    write_npz(out / "union.npz", x=kept, run=origin)
    info = {"runs_merged": len(sources), "runs": [str(f) for f, _ in sources],
            "scores": [s for _, s in sources], "candidates_in": int(len(x)), "candidates_kept": int(len(kept)),
            "near_duplicates_removed": int(len(x) - len(kept)), "dedupe_ncc_threshold": dedupe}
    metrics = evaluate_run(victim, [out / "union.npz"], out, data_dir, truth, heldout, log=lambda *_: None,
                           runs=[f for f, _ in sources if f.is_dir()],
                           extra={"union": info, "runs_unioned": len(sources)})
    h = metrics["headline"]
    log(f"union of {len(sources)} runs: {len(kept)} of {len(x)} candidates kept ({len(x) - len(kept)} near-duplicates); "
        f"recovered {h['recovered']} of {metrics['n']} (controls: {h['controls']}); {out / 'metrics.json'}")
    return metrics
