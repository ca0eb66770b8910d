"""Provenance: what a run is, what its folder holds, and what belongs together -- decided here and only here.

* :func:`fingerprint` is a SHA-256 over tensors (names, dtypes, shapes, bytes): the identity of a victim's
  weights or of a training set, recorded in every run, checkpoint, trial, study and union; :func:`record_array`
  turns a JSON-like record into bytes for it.
* **Run identity**: :func:`refuse_other` is the one "is this the same run?" check (the first field that differs,
  :func:`first_difference`, named in a one-line refusal); :func:`refuse_other_record` applies it to a folder's
  JSON record.  Records written before a field existed: :func:`with_defaults` reads a folder's record (a victim's
  train.json, an experiment.json) through its config classes, the fields added since at their defaults;
  :func:`with_later_fields` reads an attack run's record with those fields at what they meant before they existed
  (``BEFORE``), and :func:`same_run` asks it of a run record.
* **Output folders**: :func:`claim_folder` / :class:`OutputFolder`: a command writes only into an empty folder or
  into one that holds nothing but what that command writes (its own run, resumed); anything else (a victim,
  another command's results, a user's files) is refused in one line before any work.  :func:`folder_lock` takes
  an exclusive lock (``filelock``: flock on POSIX) on ``FOLDER/.trainrecon.lock`` while the folder is written;
  the kernel drops it when the process dies, so a stale lock never blocks, and a second writer is refused in one
  line.  The lock and PID files (and a folder the lock made, left empty) are removed when the holder is done.
* **What belongs together**: :func:`origin` reads the record (victim fingerprint, method) a candidate file or run
  folder carries; :func:`belongs` is the rule and :func:`check_sources` applies it to inputs about to be combined
  or scored: results are combined (a union, an evaluation of several files, a sweep folder) only when every
  record names this victim and one method, unless the caller allows it on purpose (``--allow-cross-victim``,
  ``--allow-mixed-methods``), which is recorded.

Checkpoints themselves live in :mod:`trainrecon.checkpoint`; an attack's run folder in
:mod:`trainrecon.runfolder`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Self

import numpy as np
import torch
from filelock import FileLock, Timeout

from .config import from_dict, load_json, to_dict
from .errors import TrainreconError

LOCK_NAME = ".trainrecon.lock"
PID_NAME = ".trainrecon.pid"  # the holder's PID, beside the lock file (which the lock truncates)
LOCK_FILES = frozenset({LOCK_NAME, PID_NAME})
_held: dict[str, Any] = {}


def fingerprint(tensors: dict[str, Any] | list[Any]) -> str:
    """SHA-256 (hex, first 16 digits) of named tensors or arrays, in a fixed order."""
    items = tensors.items() if isinstance(tensors, dict) else enumerate(tensors)
    h = hashlib.sha256()
    for name, t in sorted(((str(k), v) for k, v in items), key=lambda kv: kv[0]):
        a = t.detach().cpu().contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)
        h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]



def record_array(record: Any) -> np.ndarray:
    """A JSON-like record (a run's config record, an architecture) as bytes for :func:`fingerprint`: the UTF-8 of
    its ``repr``, so the fingerprint names the record's content and order."""
    return np.frombuffer(repr(record).encode(), dtype=np.uint8)


def first_difference(saved: Any, current: Any, where: str = "") -> str | None:
    """A readable path to the first field where two JSON-like records differ, or None if they are equal."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in list(current) + [k for k in saved if k not in current]:
            d = first_difference(saved.get(k), current.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current)):
            d = first_difference(a, b, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if saved == current else f"{where or 'value'} ({json.dumps(saved)} then, {json.dumps(current)} now)"


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the duration; re-entrant in one process.
    Another process holding it gets a one-line refusal naming the holder's PID."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainreconError(f"{folder}: cannot create the output folder ({e.strerror})") from None
    key = str(folder.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    fresh_lock = not (folder / LOCK_NAME).exists()
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)  # flock on POSIX, msvcrt on Windows
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = (folder / PID_NAME).read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        raise TrainreconError(f"{folder}: another trainrecon run (pid {holder}) is using this folder; "
                              "wait for it or choose another folder") from None
    except OSError as e:
        raise TrainreconError(f"{folder}: cannot write in the output folder ({e.strerror})") from None
    try:
        (folder / PID_NAME).write_text(str(os.getpid()))
    except OSError as e:
        lock.release()
        raise TrainreconError(f"{folder}: cannot write in the output folder ({e.strerror})") from None
    _held[key] = [lock, 1]
    try:
        yield folder
    finally:
        _held.pop(key, None)
        _leave_as_found(folder, created, fresh_lock)
        lock.release()


def _leave_as_found(folder: Path, created: bool, fresh_lock: bool) -> None:
    """Before the lock is released (the holder's work is done): remove the PID file, the lock file where this
    holder made it, and the folder where it made it and nothing else was written -- so a command that refused
    leaves every folder byte for byte as it found it.  A process that takes the lock after the lock file is
    removed makes a new one; the holder does nothing more."""
    with contextlib.suppress(OSError):
        (folder / PID_NAME).unlink(missing_ok=True)
        if fresh_lock:
            (folder / LOCK_NAME).unlink(missing_ok=True)
        if created and not os.listdir(folder):
            folder.rmdir()


def refuse_other(saved: Any, current: Any, refusal: str | Callable[[str], str]) -> None:
    """The one "is this the same run?" check: refuse in one line when the ``saved`` record of what made a folder,
    checkpoint or study is not ``current`` -- ``refusal`` with ``{diff}`` replaced by the first field that differs
    (:func:`first_difference`), or ``refusal(diff)``."""
    diff = first_difference(saved, current)
    if diff:
        raise TrainreconError(refusal(diff) if callable(refusal) else refusal.replace("{diff}", diff))


def refuse_other_record(record_file: Path, keys: tuple[str, ...], current: Any, refusal: str) -> None:
    """:func:`refuse_other` for a folder whose ``record_file`` (JSON) keeps, under ``keys``, the record of what
    made it.  A missing file or record (a fresh folder, an older version's) passes."""
    saved: Any = load_json(record_file) if Path(record_file).is_file() else None
    for key in keys:
        saved = saved.get(key) if isinstance(saved, dict) else None
    if saved is not None:
        refuse_other(saved, current, refusal)


# -- output folders: own or refused ----------------------------------------------------------------------------

#: files whose presence says what a folder is, for the refusal's message
_KINDS = (("model.safetensors", "a victim folder"), ("model.json", "a victim folder"),
          ("sweep_config.json", "a sweep folder"), ("study.journal", "a sweep folder"),
          ("experiment.json", "an experiment folder"), ("union.npz", "a union folder"),
          ("checkpoint.safetensors", "an attack run folder"), ("candidates.npz", "an attack run folder"),
          ("report.json", "an identify folder"), ("metrics.json", "an evaluation folder"))


#: leftovers of atomic writes cut by a kill (ours: NAME.tmp; safetensors': .tmpXXXXXX), allowed in every folder
TEMPORARY = ("*.tmp", "*.tmp.npz", ".tmp*")


def folder_kind(folder: Path) -> str | None:
    """What a folder holds, by the files trainrecon writes ("a victim folder", ...), or None."""
    for name, kind in _KINDS:
        if (folder / name).exists():
            return kind
    return None


def claim_folder(folder: str | Path, command: str, writes: Iterable[str]) -> None:
    """Refuse, in one line and before any work, an output folder that holds anything ``command`` does not write.

    ``writes``: the names (glob patterns) of everything the command writes into its folder.  An empty folder, a
    missing one, and one holding only those names (the command's own earlier or interrupted run, which the
    command then checks field by field) pass; a folder with any other entry (a victim, another command's
    results, a user's files) is refused, so no command overwrites or mixes into what it did not write."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise TrainreconError(f"{folder}: exists and is not a folder; choose another output folder")
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name not in LOCK_FILES)
    except OSError as e:
        raise TrainreconError(f"{folder}: cannot read the output folder ({e.strerror})") from None
    patterns = list(writes) + list(TEMPORARY)
    foreign = [n for n in names if not any(fnmatch.fnmatchcase(n, w) for w in patterns)]
    if foreign:
        kind = folder_kind(folder)
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise TrainreconError(f"{folder}: not empty and not a `trainrecon {command}` folder (it holds {foreign[0]!r}"
                              f"{more}{': ' + kind if kind else ''}); choose an empty or new folder")


class OutputFolder:
    """A command's output folder: ``claim()`` refuses, in one line and before any work, a folder holding anything
    the command does not write (``writes``: glob patterns; :func:`trainrecon.provenance.claim_folder`), and
    ``with folder:`` holds the folder's lock (created if needed; :func:`trainrecon.provenance.folder_lock`) while
    it is written.  Every command's folder goes through one: ``reconstruct``
    (:class:`trainrecon.runfolder.RunFolder`), ``train``, ``evaluate``, ``sweep``, ``union``, ``run``, ``identify``,
    ``import``, the demos and the victim builders."""

    def __init__(self, path: str | Path, command: str = "", writes: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.command, self.writes = command, tuple(writes)
        self._locks: list[Any] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def claim(self) -> Self:
        """Refuse a folder holding anything else than what the command writes (an empty, missing or own folder
        passes, to be checked field by field by the command).  Returns the folder."""
        claim_folder(self.path, self.command, self.writes)
        return self

    def __enter__(self) -> Self:
        lock = folder_lock(self.path)
        lock.__enter__()
        self._locks.append(lock)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._locks.pop().__exit__(*exc)


# -- what belongs together --------------------------------------------------------------------------------------

def origin(path: str | Path) -> dict[str, Any] | None:
    """The record of the run that wrote a candidate file or run folder: ``{"victim", "method", "recorded_in"}``.

    Read from the file's own ``victim`` / ``method`` arrays (trainrecon writes them into candidates.npz and
    union.npz), else from the ``config.json`` of the run folder it lies in (a run folder itself: its
    config.json).  None for a file without any record (a user's own candidates)."""
    path = Path(path)
    if path.is_dir():
        return _config_origin(path / "config.json")
    with contextlib.suppress(Exception):
        with np.load(path, allow_pickle=False) as d:
            if "victim" in d.files:
                method = str(d["method"][()]) if "method" in d.files else None
                return {"victim": str(d["victim"][()]), "method": method, "recorded_in": str(path)}
    return _config_origin(path.parent / "config.json")


def _config_origin(config: Path) -> dict[str, Any] | None:
    if not config.is_file():
        return None
    with contextlib.suppress(Exception):
        rec = json.loads(config.read_text())
        if isinstance(rec, dict) and isinstance(rec.get("victim"), str) and isinstance(rec.get("method"), str):
            return {"victim": rec["victim"], "method": rec["method"], "recorded_in": str(config)}
    return None


def belongs(record: dict[str, Any] | None, victim: str, method: str | None = None) -> str | None:
    """The rule: None when ``record`` (a run's, trial's, study's or union's ``{"victim", "method"}``, or None for
    no record) was made on ``victim`` (a fingerprint) and, when given, with ``method``; else the field that
    differs, as "victim abc then, def now"."""
    if record is None:
        return None
    if record.get("victim") != victim:
        return f"victim {record.get('victim')} then, {victim} now"
    if method is not None and record.get("method") not in (None, method):
        return f"method {record.get('method')} then, {method} now"
    return None


def check_sources(sources: list[str | Path], victim: str, victim_name: str = "the victim",
                  allow_cross_victim: bool = False, allow_mixed_methods: bool = False,
                  known: dict[str, dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Apply :func:`belongs` to candidate files or run folders about to be combined or scored against
    ``victim``: each must have been made on it, and all of them with one method.  Refused in one line naming
    the file, unless allowed; returns the provenance record for metrics.json (which says what was allowed).
    ``known``: the records of sources already in memory, by their file's name (not read from the file)."""
    rows, methods = [], {}
    cross = False
    for src in sources:
        rec = known[str(src)] if known and str(src) in known else origin(src)
        rows.append({"source": str(src), "victim": None if rec is None else rec["victim"],
                     "method": None if rec is None else rec["method"],
                     "recorded_in": None if rec is None else rec["recorded_in"]})
        diff = belongs(rec, victim)
        if diff:
            cross = True
            if not allow_cross_victim:
                raise TrainreconError(f"{src}: made on another victim ({rec['victim']}, recorded in {rec['recorded_in']}) "
                                      f"than {victim_name} ({victim}); results of different victims do not belong "
                                      "together (--allow-cross-victim for a deliberate cross-victim experiment)")
        if rec is not None and rec.get("method"):
            methods.setdefault(rec["method"], str(src))
    if len(methods) > 1 and not allow_mixed_methods:
        (m1, f1), (m2, f2) = list(methods.items())[:2]
        raise TrainreconError(f"{f2}: made with method {m2}, but {f1} with {m1}; runs of different methods do not "
                              "belong together (--allow-mixed-methods to combine them on purpose)")
    return {"victim": victim, "methods": sorted(methods), "sources": rows,
            "unrecorded": sum(r["victim"] is None for r in rows), "cross_victim": cross,
            "cross_victim_allowed": bool(allow_cross_victim), "mixed_methods_allowed": bool(allow_mixed_methods)}


def same_run(saved: Any, current: dict[str, Any], cls) -> bool:
    """Whether a checkpoint's config record is this run's (:func:`with_later_fields`)."""
    return isinstance(saved, dict) and isinstance(saved.get("attack"), dict) and \
        first_difference(with_later_fields(saved, current, cls), current) is None


def with_defaults(saved: Any, classes: dict[str, type | None]) -> Any:
    """``saved`` (a folder's record of what made it) with each field named in ``classes`` read through that config
    class, so that fields added to the class since the record was written count at their defaults; a field that
    does not read (or whose class is None: unknown) is kept as it is, and the comparison then names it.  Anything
    but a dict is returned as it is."""
    if not isinstance(saved, dict):
        return saved
    out = dict(saved)
    for key, cls in classes.items():
        if cls is not None and key in out:
            try:
                out[key] = to_dict(from_dict(cls, out[key], f"record.{key}"))
            except (TrainreconError, KeyError, TypeError):
                pass
    return out


def recorded_fields(cls, attack: dict[str, Any]) -> dict[str, Any]:
    """A run record's attack fields (a whole config, as config.json writes it) with each field it lacks, added to
    ``cls`` after the record was written, at what the run ran with before the field existed (``cls.BEFORE``); a
    field without a BEFORE value takes its default when the record is read."""
    return {**{k: v for k, v in getattr(cls, "BEFORE", {}).items() if k not in attack}, **attack}


def with_later_fields(saved: Any, current: dict[str, Any], cls) -> Any:
    """``saved`` (a run record) with the attack fields it lacks (added to the config class ``cls`` after it was
    written) taken from ``current`` where ``current`` sets them to what they meant before they existed
    (``cls.BEFORE``, else the default); anything but a record with an ``attack`` object is returned as it is."""
    if not isinstance(saved, dict) or not isinstance(saved.get("attack"), dict):
        return saved
    before = {**to_dict(cls()), **getattr(cls, "BEFORE", {})}
    attack = {**{k: v for k, v in current["attack"].items() if k not in saved["attack"] and v == before.get(k)},
              **saved["attack"]}
    return {**saved, "attack": attack}
