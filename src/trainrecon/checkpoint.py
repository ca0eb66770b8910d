"""Checkpoints and run folders: one atomic file per checkpoint, one run per folder, fingerprints of what a
run belongs to.

* A checkpoint is **one** safetensors file whose header metadata holds the JSON state (iteration, config,
  history, fingerprints) beside the tensors.  It is written through :func:`trainrecon.atomic.atomic_path` (a
  temporary file, flushed to disk and renamed into place), so a kill at any instant leaves either the previous
  checkpoint or the new one, never a mix.
  Checkpoints of earlier versions (tensors + a separate JSON) still load.
* :func:`folder_lock` takes an exclusive lock (``filelock``: flock on POSIX) on ``FOLDER/.trainrecon.lock`` for the life of the run; the
  kernel drops it when the process dies, so a stale lock never blocks, and a second run is refused in one line.
* :func:`fingerprint` is a SHA-256 over tensors (names, dtypes, shapes, bytes): the identity of a victim's
  weights or of a training set, recorded in checkpoints and compared on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .config import load_json, to_dict
from .errors import TrainreconError

META_KEY = "trainrecon_state"
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


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write tensors and their JSON ``state`` as one safetensors file, atomically and durably."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={META_KEY: json.dumps(to_dict(state))})


def load_checkpoint(path: str | Path, legacy_json: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, state) of the checkpoint at ``path``, or None if there is none.  A file without embedded
    state is an earlier version's: its state is read from ``legacy_json``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TrainreconError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0]}); remove it to start over") from None
    if META_KEY in meta:
        try:
            state = json.loads(meta[META_KEY])
        except json.JSONDecodeError:
            raise TrainreconError(f"{path}: checkpoint state is not valid JSON; remove it to start over") from None
    elif legacy_json is not None and Path(legacy_json).is_file():
        state = load_json(legacy_json)
    else:
        raise TrainreconError(f"{path}: checkpoint without its state; remove it to start over")
    if not isinstance(state, dict):
        raise TrainreconError(f"{path}: checkpoint state is not a JSON object; remove it to start over")
    return tensors, state


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
        lock.release()
