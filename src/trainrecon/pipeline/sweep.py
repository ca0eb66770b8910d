"""``trainrecon sweep`` and ``trainrecon union``: a hyper-parameter study over local worker processes, and the
merged, de-duplicated candidates of several runs scored with the standard protocols."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_npz
from ..attacks.payload import payload_from_folder
from ..attacks.plan import plan_run
from ..provenance import OutputFolder, belongs, check_sources, origin, refuse_other_record
from ..reconstruction import Reconstruction
from ..config import load_json, save_json, to_dict
from ..errors import Interrupted, TrainreconError
from ..metrics.matching import ncc_similarity
from ..models.victim import load_victim
from ..runtime import StopRequest
from ..sweeps.study import SweepConfig, load_study, read_trials, search_ranges, study_name, summary, work
from .evaluation import EVALUATION_FILES, Candidates, evaluate_run, load_truth, read_candidates

#: everything a sweep writes into its folder, and a union into its own (each refuses a folder holding more)
SWEEP_FILES = ("sweep_config.json", "sweep.json", "study.journal", "study.journal.lock", "trials", "*.tmp")
UNION_FILES = ("union.npz", *EVALUATION_FILES)


def _evaluator(victim: Path, data_dir, truth, heldout):
    """Research mode: the honest headline of a trial folder's candidates (written into that folder)."""

    def evaluate(folder: Path, rec: Reconstruction) -> dict[str, Any]:
        m = evaluate_run(victim, [Candidates.of(rec, folder / "candidates.npz")], folder, data_dir, truth, heldout,
                         log=lambda *_: None)
        h = m["headline"]
        return {"recovered": h["recovered"], "n": m["n"], "controls": h["controls"]}

    return evaluate


def _worker(cfg: SweepConfig, victim: Path, out: Path, device: str, index: int, threads: int, evaluation) -> None:
    """One local worker process.  It ignores Ctrl-C (the sweep process receives it and stops its workers with
    SIGTERM); on SIGTERM the running trial saves its checkpoint and the worker ends quietly (exit 130)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # already ignored since the start (inherited), kept so
        torch.set_num_threads(threads)
        evaluate = _evaluator(victim, *evaluation) if cfg.score_with_truth else None
        with StopRequest(signals=(signal.SIGTERM,)) as stop:
            work(cfg, victim, out, device, evaluate, worker=index, stop=stop,
                 log=lambda s: print(f"[worker {index}] {s}", flush=True))
    except (Interrupted, KeyboardInterrupt):
        raise SystemExit(130) from None  # the sweep process prints the one line saying how to continue
    except TrainreconError as e:
        print(f"[worker {index}] error: {e}", flush=True)
        raise SystemExit(2) from None


def sweep_identity(cfg: SweepConfig, victim_fingerprint: str) -> dict[str, Any]:
    """What makes a sweep folder this sweep's: the victim (fingerprint), the method, the study and its storage."""
    return {"victim": victim_fingerprint, "method": cfg.method, "study": study_name(cfg, victim_fingerprint),
            "storage": cfg.storage or "journal file"}


def check_sweep_folder(out: Path, identity: dict[str, Any]) -> None:
    """Refuse a sweep folder holding another sweep (another victim, method, study or storage, by its
    sweep_config.json) or trials made on another victim or with another method (by their config.json: the rule of
    :func:`trainrecon.provenance.belongs`)."""
    OutputFolder(out, "sweep", SWEEP_FILES).claim()
    refuse_other_record(out / "sweep_config.json", ("identity",), identity,
                        f"{out}: holds another sweep ({{diff}}); choose another folder for this one")
    for config in sorted((out / "trials").glob("*/config.json")) if (out / "trials").is_dir() else []:
        diff = belongs(origin(config.parent), identity["victim"], identity["method"])
        if diff:
            raise TrainreconError(f"{config.parent}: a trial of another sweep ({diff}); choose another folder for this one")


def run_sweep(cfg: SweepConfig, victim: str | Path, out: str | Path, device: str = "cpu", data_dir=None, truth=None,
              heldout=None, log=print) -> dict[str, Any]:
    """Run (or continue) the sweep with ``cfg.workers`` local processes, then write OUT/sweep.json.

    Before the first trial, as ``reconstruct`` does (:func:`trainrecon.attacks.plan.plan_run`): the method
    against the victim, m, and the memory of ``cfg.workers`` trials at once; and OUT must be this sweep's folder
    (:func:`check_sweep_folder`).  Ctrl-C or SIGTERM stops every worker (each running trial saves its
    checkpoint) and raises :class:`Interrupted` with one line saying how to continue."""
    victim, out = Path(victim), Path(out)
    v = load_victim(victim)  # clear errors before any worker starts
    payload = payload_from_folder(victim)
    cores = os.cpu_count() or 1
    if cfg.workers > 4 * cores:
        raise TrainreconError(f"sweep.workers: {cfg.workers} local worker processes on {cores} CPU cores; use at most "
                              f"{4 * cores} (several machines join one study with --storage)")
    search_ranges(cfg, payload, plan_run(payload, cfg.base_config(), device, copies=cfg.workers))
    if cfg.score_with_truth:
        load_truth(v, data_dir, truth, heldout)
    identity = sweep_identity(cfg, payload.fingerprint())
    check_sweep_folder(out, identity)
    if cfg.storage or (out / "study.journal").is_file():  # another sweep's study: refused before a byte is written
        load_study(cfg, out, payload.fingerprint())
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "sweep_config.json", {"victim": str(victim), "identity": identity, **to_dict(cfg)})
    evaluation = (data_dir, truth, heldout)
    again = f"rerun the same command to continue ({out})"
    if cfg.workers == 1:
        evaluate = _evaluator(victim, *evaluation) if cfg.score_with_truth else None
        try:
            with StopRequest() as stop:
                work(cfg, victim, out, device, evaluate, log=log, stop=stop)
        except (Interrupted, KeyboardInterrupt) as e:
            why = str(e).split(":")[0] if isinstance(e, Interrupted) else "SIGINT"
            raise Interrupted(f"{why}: the sweep stopped; finished trials are kept and the interrupted one resumes "
                              f"from its checkpoint: {again}") from None
    else:
        stopped = _run_workers(cfg, victim, out, device, evaluation, log)
        if stopped:
            raise Interrupted(f"{stopped}: the sweep stopped its {cfg.workers} workers; finished trials are kept and "
                              f"interrupted ones resume from their checkpoints: {again}")
    result = summary(cfg, out, victim)
    s = result["states"]
    best = result["best"]
    failed = [r for r in result["trials"] if r["state"] == "FAIL" and r["error"]]
    log(f"study {result['study']}: {s['COMPLETE']} complete, {s['PRUNED']} pruned, {s['FAIL']} failed (retried: "
        f"{sum(bool(r['retry_of']) for r in result['trials'])}), {s['RUNNING']} running; "
        + "".join(f"trial {r['trial']} failed: {r['error']}; " for r in failed)
        + (f"best trial {best['trial']} score {best['score']:.4g} ({best['folder']})" if best else "no complete trial")
        + f"; {out / 'sweep.json'}")
    return result


def _run_workers(cfg: SweepConfig, victim: Path, out: Path, device: str, evaluation, log=print) -> str | None:
    """Start ``cfg.workers`` processes and wait for them.  Ctrl-C or SIGTERM (to this process) is passed on to
    every worker as SIGTERM, again every 2 s until all have ended (each saves its trial's checkpoint); a second
    Ctrl-C kills them at once (their trials are retried on the next run).  Returns the signal's name, or None."""
    threads = max(1, (os.cpu_count() or 1) // cfg.workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(cfg, victim, out, device, i, threads, evaluation))
             for i in range(cfg.workers)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers inherit it: Ctrl-C is ours to pass on
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"  # no multi-line warning after a kill
    sys.warnoptions.append(quiet)  # read by the helper processes multiprocessing starts now
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
        with contextlib.suppress(ValueError):
            sys.warnoptions.remove(quiet)
    sent = 0.0
    with StopRequest() as stop:
        try:
            while any(p.is_alive() for p in procs):
                if stop.requested and time.time() - sent > 2:
                    for p in procs:
                        if p.is_alive():
                            os.kill(p.pid, signal.SIGTERM)
                    sent = time.time()
                for p in procs:
                    p.join(timeout=0.2)
        except KeyboardInterrupt:  # a second Ctrl-C: now
            for p in procs:
                if p.is_alive():
                    p.kill()
            for p in procs:
                p.join()
            return "SIGINT"
    if stop.requested:
        return stop.requested
    bad = [i for i, p in enumerate(procs) if p.exitcode]
    if bad:
        log(f"workers {bad} ended with an error (their trials are retried when the sweep is rerun)")
    return None


def union_dedupe(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep a candidate unless its NCC (:func:`trainrecon.metrics.matching.ncc_similarity`) with an earlier kept
    one exceeds ``threshold``; constant images are dropped; candidates come best run first.  Returns (kept
    candidates, kept indices)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    flat = t.reshape(len(x), -1).numpy()
    constant = np.linalg.norm(flat - flat.mean(axis=1, keepdims=True), axis=1) == 0
    keep: list[int] = []
    for i in range(len(x)):
        if constant[i]:
            continue
        if keep and float(ncc_similarity(t[keep], t[i : i + 1]).max()) > threshold:
            continue
        keep.append(i)
    idx = np.asarray(keep, dtype=int)
    return x[idx], idx


def union_runs(victim: str | Path, out: str | Path, runs: list[Path] | None = None, sweep: Path | None = None,
               top: int = 0, dedupe: float = 0.99, data_dir=None, truth=None, heldout=None, log=print,
               allow_cross_victim: bool = False, allow_mixed_methods: bool = False) -> dict[str, Any]:
    """Merge the candidates of run folders (``runs``) and/or of a sweep's trials (the ``top`` best complete ones by
    score, all complete ones when ``top`` is 0), best first; drop near-duplicates; evaluate the union with the
    standard protocols and the honest headline.  Writes OUT/union.npz, metrics.json (with ``union``), grid.png and
    report.html (with every merged run's loss curve).

    Every run merged must have been made on this victim, and all with one method (the rule of
    :func:`trainrecon.provenance.check_sources`; ``allow_cross_victim`` / ``allow_mixed_methods`` for deliberate
    experiments, recorded in ``metrics["union"]["provenance"]``).  OUT must be empty or this union's own folder
    (the same victim, runs, sweep, top and dedupe)."""
    victim, out = Path(victim), Path(out)
    folder = OutputFolder(out, "union", UNION_FILES).claim()
    return _union_runs(victim, folder, runs, sweep, top, dedupe, data_dir, truth, heldout, log, allow_cross_victim,
                       allow_mixed_methods)


def _union_runs(victim: Path, folder: OutputFolder, runs, sweep, top, dedupe, data_dir, truth, heldout, log,
                allow_cross_victim, allow_mixed_methods) -> dict[str, Any]:
    out = folder.path
    payload = payload_from_folder(victim)
    shape, fp = tuple(payload.spec.input_shape), payload.fingerprint()
    request = {"victim": fp, "runs": [str(Path(r).resolve()) for r in runs or []],
               "sweep": None if sweep is None else str(Path(sweep).resolve()), "top": top, "dedupe": dedupe,
               "allow_cross_victim": allow_cross_victim, "allow_mixed_methods": allow_mixed_methods}
    refuse_other_record(out / "metrics.json", ("union", "request"), request,
                        f"{out}: holds another union ({{diff}}); choose a new folder")
    sources: list[tuple[Path, float | None]] = []
    if sweep is not None:
        record = load_json(Path(sweep) / "sweep_config.json") if (Path(sweep) / "sweep_config.json").is_file() else None
        identity = record.get("identity") if isinstance(record, dict) else None
        diff = belongs(identity if isinstance(identity, dict) else None, fp)
        if diff and not allow_cross_victim:
            raise TrainreconError(f"{sweep}: a sweep of another victim ({diff}, sweep_config.json), not of {victim}; "
                                  "results of different victims do not belong together (--allow-cross-victim for a "
                                  "deliberate cross-victim experiment)")
        done = sorted((t for t in read_trials(sweep) if t.get("state") == "COMPLETE" and t.get("score") is not None),
                      key=lambda t: t["score"])
        if not done:
            raise TrainreconError(f"{sweep}: no complete trial to merge")
        sources += [(t["path"], t["score"]) for t in (done[:top] if top else done)]
    sources += [(Path(r), None) for r in runs or []]
    if not sources:
        raise TrainreconError("union: give run folders, or --sweep with a sweep's output folder")
    files = [folder / "candidates.npz" if folder.is_dir() else folder for folder, _ in sources]
    provenance = check_sources(files, fp, str(victim), allow_cross_victim, allow_mixed_methods)
    parts = [read_candidates(f, shape) for f in files]
    if truth is not None or heldout is not None:
        load_truth(load_victim(victim), data_dir, truth, heldout)  # refused before anything is written
    x = np.concatenate(parts)
    kept, idx = union_dedupe(x, dedupe)
    if not len(kept):
        raise TrainreconError(f"union: every one of the {len(x)} candidates is a constant image (no pattern to "
                              "score); nothing to merge")
    origin_run = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])[idx]
    method = "+".join(provenance["methods"]) or "unrecorded"
    info = {"runs_merged": len(sources), "runs": [str(f) for f, _ in sources],
            "scores": [s for _, s in sources], "candidates_in": int(len(x)), "candidates_kept": int(len(kept)),
            "near_duplicates_removed": int(len(x) - len(kept)), "dedupe_ncc_threshold": dedupe,
            "provenance": provenance, "request": request}
    with folder:
        write_npz(out / "union.npz", x=kept, run=origin_run, victim=np.array(fp), method=np.array(method))
        metrics = evaluate_run(victim, [out / "union.npz"], out, data_dir, truth, heldout, log=lambda *_: None,
                               runs=[f for f, _ in sources if f.is_dir()],
                               extra={"union": info, "runs_unioned": len(sources)})
    h = metrics["headline"]
    log(f"union of {len(sources)} runs: {len(kept)} of {len(x)} candidates kept ({len(x) - len(kept)} near-duplicates); "
        f"recovered {h['recovered']} of {metrics['n']} (controls: {h['controls']}); {out / 'metrics.json'}")
    return metrics
