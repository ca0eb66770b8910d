"""Hyper-parameter sweeps with optuna: one study, any number of workers, every trial a resumable run.

**Objective** (minimised, needs no training set): the candidates' **refit residual** at the end of the run,

    score = min_w || target - sum_j w_j grad_theta phi(theta; x_j) || / || target ||,

with the exact activation and the form's sign constraint (w >= 0 for KKT), the quantity a victim's train.json
reports for its own training set (:meth:`~trainrecon.attacks.method.Method.refit_residual`).  Unlike the run's own
loss it does not depend on the trial's surrogate sharpness, multipliers or prior, so trials are compared on one
yardstick: a candidate set that explains theta as well as the training set does scores the victim's residual.
How far it tracks recovery is measured by ``bench/sweep.py`` (rank correlation with the honest headline over a
sweep's trials, bench/RESULTS.md).  Where the per-candidate gradients would not fit in memory the run's own
relative stationarity is used instead, and ``score_kind`` says so.  Trials are pruned (optuna's median rule) on
the same score, computed at the fractions ``prune_at`` of the run.  ``score_with_truth`` (research mode) also
evaluates every finished trial with the honest headline and stores it on the trial; it never chooses.

**Storage**: a journal file ``OUT/study.journal`` (the default: one machine, nothing to install) or a database
URL (``postgresql://user@host:port/db``): workers on several machines join one study by name.  A worker killed
mid-trial is detected by optuna's heartbeat on database storage (every ``heartbeat`` s, stale after three) and,
on its own machine and with either storage, by its process being gone; its trial is marked FAIL and enqueued
again with the same parameters and seed (optuna's ``RetryHeartbeatStaleTrialCallback``, up to ``max_retry`` times); an
interrupted trial (Ctrl-C) is retried on the next run.  A trial whose attack raises (a numerical failure, say)
is marked FAIL with its reason in ``trial.json`` and ``sweep.json`` and counts as finished; the sweep goes on.  A retry on the same machine resumes the dead trial's
checkpoint, because a trial's folder is named by the trial it retries: ``OUT/trials/<k>/`` holds the run's
config.json, candidates.npz, loss.json and ``trial.json`` (parameters, seed, state, score, headline).
Rerunning the same command continues the study: finished trials are kept and only the missing ones run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ..attacks.method import method_named
from ..attacks.payload import Payload, payload_from_folder
from ..attacks.plan import RunPlan, plan_run
from ..api import reconstruct
from ..config import check_numbers, from_dict, is_finite_number, load_json, save_json, to_dict
from ..errors import Interrupted, TrainreconError
from ..hooks.pruning import PruneHook
from ..provenance import refuse_other

SCORE = "refit_residual"


@dataclass
class SweepConfig:
    """A sweep: the method and its base config (``base``: config fields the trials start from; the method's
    ``search_space`` is drawn around them), how many trials in all (over every worker and every rerun), how many
    local worker processes, the storage URL ("" = the journal file in OUT) and study name ("" = method and
    victim hash), the seed of the sampler (one worker on the journal file is reproducible; several workers each
    mix their host and process id into it, so they do not draw the same points; trial k's attack seed is
    base seed + seed + k), ``iterations`` per trial
    (0 = the base config's), the heartbeat in seconds, retries per killed trial, pruning and the fractions of
    the run where it may happen (``prune_at``), research mode."""

    method: str = "haim"
    trials: int = 20
    workers: int = 1
    storage: str = ""
    study: str = ""
    seed: int = 0
    iterations: int = 0
    heartbeat: int = 10
    max_retry: int = 2
    prune: bool = True
    prune_at: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    score_with_truth: bool = False
    base: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.base, dict):
            raise TrainreconError(f"sweep.base: must be an object of attack config fields, got {json.dumps(self.base)[:40]}")
        check_numbers(self, "sweep")
        method_named(self.method, "sweep.method")
        for name in ("trials", "workers", "heartbeat"):
            if getattr(self, name) < 1:
                raise TrainreconError(f"sweep.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_retry < 0 or self.iterations < 0:
            raise TrainreconError("sweep.max_retry and sweep.iterations must be >= 0")
        if any(not 0 < f < 1 for f in self.prune_at) or self.prune_at != sorted(self.prune_at):
            raise TrainreconError(f"sweep.prune_at: increasing fractions of the run in (0, 1), got {self.prune_at}")
        if self.storage and not self.storage.startswith(("postgresql", "mysql", "sqlite")):
            raise TrainreconError(f"sweep.storage: expected a database URL such as postgresql://user@host:5432/db "
                                  f"(or nothing for the journal file), got {self.storage!r}")
        if in_memory(self.storage):
            raise TrainreconError(f"sweep.storage: {self.storage!r} is an in-memory database: each worker would get "
                                  "its own and a rerun would find nothing; give a file (sqlite:///path/study.db) or "
                                  "nothing for the journal file")

    def base_config(self):
        """The method's config the trials start from (validated)."""
        base = dict(self.base)
        if self.iterations:
            base["iterations"] = self.iterations
        return from_dict(method_named(self.method).Config, base, "sweep.base")


#: seconds to wait for a database server to accept a connection (unless the URL sets its own connect_timeout)
CONNECT_TIMEOUT = 10


def in_memory(url: str) -> bool:
    """Whether a storage URL names an in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``)."""
    if not url.startswith("sqlite"):
        return False
    rest = url.split("://", 1)[1] if "://" in url else ""
    path = rest[1:] if rest.startswith("/") else rest
    return path.split("?")[0] in ("", ":memory:") or "mode=memory" in rest


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options: a liveness check per checkout and, for server databases, a connect timeout,
    so a server that accepts the connection and never answers is reported instead of waited for forever."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")) and "connect_timeout" not in url:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    return kwargs


def check_journal(path: Path) -> None:
    """Refuse, in one line, a journal file that is not an optuna journal (or whose lines were damaged): every
    complete line must be a JSON record with an operation code.  A last line without its newline is one being
    written (or cut by a crash) and is skipped, as optuna does."""
    if not path.is_file():
        return
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    break
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    rec = None
                if not (isinstance(rec, dict) and isinstance(rec.get("op_code"), int) and "worker_id" in rec):
                    raise TrainreconError(f"{path}: line {number} is not an optuna journal record (a damaged or "
                                          "foreign file); move it away to start the study afresh")
    except OSError as e:
        raise TrainreconError(f"{path}: cannot read the journal ({e.strerror})") from None


def _retry_callback(max_retry: int) -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():  # optuna marks its retry callback experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry)


def open_storage(cfg: SweepConfig, out: Path):
    """The journal file OUT/study.journal, or the database at ``cfg.storage`` with heartbeat and retries.
    Quiets optuna's per-trial log lines (its own global setting), since a sweep reports every trial itself."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if not cfg.storage:
        out.mkdir(parents=True, exist_ok=True)
        check_journal(out / "study.journal")
        try:
            return JournalStorage(JournalFileBackend(str(out / "study.journal")))  # replays the journal
        except OSError:
            raise
        except Exception as e:  # a record optuna cannot replay: one line, never a traceback
            msg = str(e).strip().splitlines()
            raise TrainreconError(f"{out / 'study.journal'}: not a journal optuna can replay ({type(e).__name__}: "
                                  f"{msg[0] if msg else 'no message'}); move it away to start the study afresh") from None
    try:
        with warnings.catch_warnings():  # heartbeats are experimental in optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(cfg.storage, heartbeat_interval=cfg.heartbeat, grace_period=3 * cfg.heartbeat,
                          heartbeat_stale_trial_callback=_retry_callback(cfg.max_retry),
                          engine_kwargs=engine_kwargs(cfg.storage))
    except ImportError:
        raise TrainreconError(f"sweep.storage: no database driver for {cfg.storage.split(':')[0]} "
                              "(for PostgreSQL: pip install 'trainrecon[postgres]')") from None
    except (optuna.exceptions.StorageInternalError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainreconError(f"sweep.storage: cannot open {cfg.storage}: {msg}") from None
    except Exception as e:  # sqlalchemy's OperationalError and friends: a server not reachable
        msg = str(getattr(e, "orig", e)).strip().splitlines()[0]
        raise TrainreconError(f"sweep.storage: cannot open {cfg.storage}: {msg}") from None


def study_record(cfg: SweepConfig, victim_fingerprint: str) -> dict[str, Any]:
    """What makes a study this sweep's: method, base config (with the trials' iterations), search space, victim."""
    space = {k: dataclasses.asdict(v) for k, v in method_named(cfg.method).search_space.items()}
    return {"method": cfg.method, "base": to_dict(cfg.base_config()), "search_space": space,
            "victim": victim_fingerprint, "score": SCORE}


def study_name(cfg: SweepConfig, victim_fingerprint: str) -> str:
    """``cfg.study``, or by default the method and the victim's fingerprint."""
    return cfg.study or f"trainrecon-{cfg.method}-{victim_fingerprint[:12]}"


def load_study(cfg: SweepConfig, out: Path, victim_fingerprint: str, worker: int = 0):
    """Create or join the study; refuse one that belongs to another sweep (a different victim or config).
    Returns the study and the storage it lives in."""
    storage = open_storage(cfg, out)
    name = study_name(cfg, victim_fingerprint)
    record = study_record(cfg, victim_fingerprint)
    seed = cfg.seed + 1000 * worker
    if cfg.storage or cfg.workers > 1:  # several processes draw from one study: give each its own stream
        seed = int.from_bytes(hashlib.sha256(f"{seed}:{_here()}".encode()).digest()[:4], "little")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.prune else optuna.pruners.NopPruner()
    where = cfg.storage or out / "study.journal"
    try:
        if name in optuna.get_all_study_names(storage):  # read only: a refused sweep leaves the storage untouched
            study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
        else:
            study = optuna.create_study(storage=storage, study_name=name, direction="minimize", sampler=sampler,
                                        pruner=pruner, load_if_exists=True)
        saved = study.user_attrs.get("trainrecon")
    except TrainreconError:
        raise
    except Exception as e:  # a damaged journal, a foreign database, a server gone: one line, never a traceback
        msg = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise TrainreconError(f"sweep.storage: cannot use the study in {where} ({type(e).__name__}: "
                              f"{msg[0] if msg else 'no message'}); is it an optuna storage?") from None
    if saved is None:
        study.set_user_attr("trainrecon", record)
    else:
        refuse_other(saved, record, f"study {name!r} in {cfg.storage or out / 'study.journal'} belongs to another "
                     "sweep ({diff}); choose another --study or OUT")
    return study, storage


def _here() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool | None:
    """Whether the worker process ``host:pid`` is alive; None when it ran on another machine."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trial_id(study, storage, number: int) -> int:
    """The storage's id of trial ``number`` of ``study`` (optuna's public storage API)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def reap(study, storage, max_retry: int) -> list[int]:
    """Fail the trials whose worker is gone and enqueue their retries; return the newly failed trial numbers.

    Database storage: optuna's heartbeat (a trial not heard from for three heartbeats, on any machine).  Journal
    storage (one machine): a RUNNING trial whose worker process is gone.  Either: a FAIL trial that was
    interrupted (Ctrl-C) and has no retry yet."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    heartbeat = isinstance(storage, RDBStorage)  # opened with a heartbeat by open_storage
    if heartbeat:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # its callback enqueues the retries
    retry = _retry_callback(max_retry)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for t in trials:
        dead = (not heartbeat and t.state == TrialState.RUNNING
                and _alive(str(t.user_attrs.get("worker", ""))) is False)
        if dead:
            try:
                storage.set_trial_state_values(trial_id(study, storage, t.number), state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        interrupted = t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried
        if dead or interrupted:
            retry(study, storage.get_trial(trial_id(study, storage, t.number)))
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    return sorted(after - before)


def _frozen(trial, storage):
    """The FrozenTrial of a live optuna Trial (its system attributes hold the retry history)."""
    return storage.get_trial(trial_id(trial.study, storage, trial.number))


def trial_folder(out: Path, trial) -> tuple[Path, int]:
    """OUT/trials/<k>, k = the number of the first trial this one retries (itself if none), and k."""
    history = trial.system_attrs.get("retry_history") or []
    k = int(history[0]) if history else trial.number
    return out / "trials" / f"{k:04d}", k


def search_ranges(cfg: SweepConfig, payload: Payload, plan: RunPlan | None = None):
    """The trials' base config (the defaults this victim's runs get: the config of ``plan``, the base config's
    :func:`~trainrecon.attacks.plan.plan_run`) and the range each searched parameter is drawn from, every range
    checked before the first trial."""
    plan = plan or plan_run(payload, cfg.base_config())
    ranges = {name: t.range(float(getattr(plan.cfg, name)), f"sweep.base.{name}")
              for name, t in plan.method.search_space.items()}
    return plan.cfg, ranges


def suggest(trial, space: dict, ranges: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Draw the method's search space (its ``ranges`` around the base config)."""
    return {name: trial.suggest_float(name, *ranges[name], log=t.kind != "uniform") for name, t in space.items()}


class TrialFailed(Exception):
    """A trial whose attack raised (a numerical failure, say): optuna marks it FAIL and the sweep goes on."""


def failure_reason(e: BaseException) -> str:
    """One line saying why a trial failed: the first line of the error's message, or its kind if it has none."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else f"{type(e).__name__} without a message"


def gave_up(t) -> bool:
    """A trial that ended in FAIL because its attack raised (not retried: the same draw would fail again); a
    trial failed because its worker died is retried instead."""
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("failed"))


def make_objective(cfg: SweepConfig, payload: Payload, out: Path, device, evaluate: Callable | None, log, storage):
    """The function optuna calls per trial: draw, run (resuming a dead predecessor's checkpoint), score."""
    method = method_named(cfg.method)
    base, ranges = search_ranges(cfg, payload)  # draw around the defaults this victim's runs get
    victim = payload.fingerprint()

    def objective(trial) -> float:
        trial.set_user_attr("worker", _here())
        trial.set_user_attr("interrupted", False)  # a retry inherits its predecessor's attributes
        trial.set_user_attr("failed", False)
        frozen = _frozen(trial, storage)
        folder, k = trial_folder(out, frozen)
        params = suggest(trial, method.search_space, ranges)
        attack = dataclasses.replace(base, **params, seed=base.seed + cfg.seed + k)
        milestones = [int(f * attack.iterations) for f in cfg.prune_at]

        monitor = PruneHook(trial, milestones, len(cfg.prune_at), cfg.prune)

        info = {"trial": trial.number, "folder": folder.name, "params": params, "seed": attack.seed,
                "retry_of": frozen.system_attrs.get("retry_history", []), "worker": _here(),
                "victim": victim, "method": method.name}
        t0 = time.time()
        try:
            rec = reconstruct(payload, attack, folder, device, resume=True, log=lambda *_: None, hooks=[monitor])
        except (Interrupted, KeyboardInterrupt):
            trial.set_user_attr("interrupted", True)  # retried (resuming its checkpoint) when the sweep is rerun
            save_json(folder / "trial.json", {**info, "state": "FAIL", "why": "interrupted"})
            raise
        except TrainreconError as e:  # a diverging configuration is a hopeless trial, not a crash
            trial.set_user_attr("error", str(e))
            save_json(folder / "trial.json", {**info, "state": "PRUNED", "why": str(e), "seconds": time.time() - t0})
            log(f"trial {trial.number} ({folder.name}): pruned, {e}")
            raise optuna.TrialPruned(str(e)) from None
        except Exception as e:  # noqa: BLE001: a numerical failure inside the attack fails this trial, not the sweep
            why = failure_reason(e)
            trial.set_user_attr("error", why)
            trial.set_user_attr("failed", True)
            save_json(folder / "trial.json", {**info, "state": "FAIL", "why": why, "seconds": time.time() - t0})
            log(f"trial {trial.number} ({folder.name}): failed, {why}")
            raise TrialFailed(why) from None
        res = rec.stats
        score, kind = res["refit_residual"], SCORE
        if score is None:  # too large to refit: the run's own (surrogate) relative stationarity
            score, kind = (res["final_loss"] or {}).get("relative_stationarity", math.inf), "relative_stationarity"
        info.update(score=score, score_kind=kind, seconds=res["seconds"], iterations=res["iterations_done"])
        for key in ("seconds", "iterations"):
            trial.set_user_attr(key, info[key])
        if evaluate is not None:
            head = evaluate(folder, rec)
            info["headline"] = head
            trial.set_user_attr("recovered", head["recovered"])
        pruned = res["stopped_by_monitor"]
        save_json(folder / "trial.json", {**info, "state": "PRUNED" if pruned else "COMPLETE"})
        log(f"trial {trial.number} ({folder.name}): score {score:.4g}"
            + (f", recovered {info['headline']['recovered']}" if evaluate else "") + (" (pruned)" if pruned else ""))
        if pruned:
            raise optuna.TrialPruned(f"score {score:.4g} at iteration {res['iterations_done']}")
        return score

    return objective


def work(cfg: SweepConfig, victim: Path, out: Path, device, evaluate: Callable | None = None, worker: int = 0,
         log=print, stop=None) -> None:
    """One worker: run trials until the study holds ``cfg.trials`` finished ones (complete, pruned or failed) and no
    trial is waiting or running anywhere; reap dead workers' trials on the way (they are retried).  ``stop``: a
    :class:`~trainrecon.runtime.StopRequest` around the worker; once it is requested (SIGTERM, Ctrl-C) the
    running trial saves its checkpoint and no further trial starts (:class:`Interrupted`)."""
    payload = payload_from_folder(victim)
    study, storage = load_study(cfg, out, payload.fingerprint(), worker)
    objective = make_objective(cfg, payload, out, device, evaluate, log, storage)
    while True:
        if stop is not None and stop.requested:
            raise Interrupted(f"{stop.requested}: the worker stopped between trials")
        failed = reap(study, storage, cfg.max_retry)
        if failed:
            log(f"trials {failed}: worker gone; retried")
        trials = study.get_trials(deepcopy=False)
        count = lambda *states: sum(t.state in states for t in trials)  # noqa: E731
        finished = count(TrialState.COMPLETE, TrialState.PRUNED) + sum(map(gave_up, trials))
        waiting, running = count(TrialState.WAITING), count(TrialState.RUNNING)
        if not waiting and finished + running >= cfg.trials:
            if not running:
                return
            time.sleep(min(cfg.heartbeat, 5))  # others are running: wait, in case one dies and is retried
            continue
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))


def summary(cfg: SweepConfig, out: Path, victim: Path) -> dict[str, Any]:
    """Every trial of the study (state, parameters, score, folder, retries, headline) into OUT/sweep.json."""
    study, _ = load_study(cfg, out, payload_from_folder(victim).fingerprint())
    rows = []
    for t in study.get_trials(deepcopy=False):
        folder, _ = trial_folder(out, t)
        rows.append({"trial": t.number, "state": t.state.name, "params": t.params, "score": t.value,
                     "last_reported": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
                     "folder": str(folder.relative_to(out)), "retry_of": t.system_attrs.get("retry_history", []),
                     "recovered": t.user_attrs.get("recovered"), "seconds": t.user_attrs.get("seconds"),
                     "error": t.user_attrs.get("error")})
    states = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState}
    done = [r for r in rows if r["state"] == "COMPLETE"]
    best = min(done, key=lambda r: r["score"]) if done else None
    result = {"study": study.study_name, "storage": cfg.storage or "journal:" + str(out / "study.journal"),
              "config": to_dict(cfg), "states": states, "best": best, "trials": rows,
              "wall_seconds_trials": sum(r["seconds"] or 0 for r in rows)}
    save_json(out / "sweep.json", result)
    return result


def check_trial_record(info: Any, where: Path) -> dict[str, Any]:
    """A ``trial.json`` as its reader relies on it: an object whose ``state`` is one of optuna's trial states and
    whose ``score`` (when present) is a finite number or null; refused in one line naming the field."""
    if not isinstance(info, dict):
        raise TrainreconError(f"{where}: expected a JSON object (a trial's record)")
    if info.get("state") not in {s.name for s in TrialState}:
        raise TrainreconError(f"{where}: state must be one of {', '.join(s.name for s in TrialState)}, got "
                              f"{json.dumps(info.get('state'))[:40]}")
    score = info.get("score")
    if score is not None and not is_finite_number(score):
        raise TrainreconError(f"{where}: score must be a finite number or null, got {json.dumps(score)[:40]}")
    return info


def read_trials(folder: Path) -> list[dict[str, Any]]:
    """The trial.json of every trial folder under a sweep's OUT (the union's input; no storage needed)."""
    rows = []
    for path in sorted((Path(folder) / "trials").glob("*/trial.json")):
        rows.append({**check_trial_record(load_json(path), path), "path": path.parent})
    if not rows:
        raise TrainreconError(f"{folder}: no trials/*/trial.json; is it a sweep's output folder?")
    return rows


__all__ = ["SweepConfig", "SCORE", "search_ranges", "TrialFailed", "check_journal", "in_memory", "load_study", "study_name", "make_objective", "read_trials", "reap", "summary", "work"]
