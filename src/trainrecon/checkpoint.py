"""Checkpoints: one atomic file per checkpoint, checked against its own run before it is trusted.

* A checkpoint is **one** safetensors file whose header metadata holds the JSON state (iteration, config,
  history, fingerprints) beside the tensors.  It is written through :func:`trainrecon.atomic.atomic_path` (a
  temporary file, flushed to disk and renamed into place), so a kill at any instant leaves either the previous
  checkpoint or the new one, never a mix.  Checkpoints of earlier versions (tensors + a separate JSON) still load.
* :func:`check_checkpoint`: an attack run's checkpoint checked field by field against the run's own record.

Whether a checkpoint is this run's (the run's identity) is :mod:`trainrecon.provenance`'s decision.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .config import is_finite_number, is_whole, load_json, parse_json, to_dict
from .errors import TrainreconError

META_KEY = "trainrecon_state"


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
        state = parse_json(meta[META_KEY], f"{path} (its state)")
    elif legacy_json is not None and Path(legacy_json).is_file():
        state = load_json(legacy_json)
    else:
        raise TrainreconError(f"{path}: checkpoint without its state; remove it to start over")
    if not isinstance(state, dict):
        raise TrainreconError(f"{path}: checkpoint state is not a JSON object; remove it to start over")
    return tensors, state


def check_checkpoint(tensors: dict[str, torch.Tensor], state: dict[str, Any], record: dict[str, Any],
                     where: Path) -> None:
    """A checkpoint checked against its own run (``record``: method, m, attack config) before it is trusted:
    the iteration a whole number in [0, attack.iterations], the history a list of objects, the seconds a finite
    number >= 0, the candidate record's m0 this run's m (R m for the R restarts of ``attack.restarts`` before their
    consensus); the candidates real and finite, their number m (R m there; between 1 and m where merging is on, up to
    max_factor x m where splitting is), and every per-candidate tensor (and
    optimiser state) of that many rows.  Refused in one line naming the field; the refinements' own state is
    checked as each takes it back."""
    def bad(what: str) -> TrainreconError:
        return TrainreconError(f"{where}: damaged checkpoint ({what}); remove it to start over")

    attack, m = record["attack"], int(record["m"])
    it = state.get("iteration")
    if not is_whole(it) or it > int(attack.get("iterations", 0)):
        raise bad(f"iteration {json.dumps(it)[:30]}, this run has {attack.get('iterations')}")
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad("history is not a list of records")
    if "seconds" in state and not (is_finite_number(state["seconds"]) and state["seconds"] >= 0):
        raise bad(f"seconds {json.dumps(state['seconds'])[:30]}")
    cands = state.get("candidates")
    blocks = 1  # the restarts the candidates are (attack.restarts before their consensus, else 1)
    if cands is not None:
        blocks = cands.get("restarts", 1) if isinstance(cands, dict) else None
        if not (blocks in (1, attack.get("restarts", 1)) and cands.get("m0", m) == blocks * m
                and isinstance(cands.get("runs", []), list) and all(isinstance(r, str) for r in cands.get("runs", []))):
            raise bad(f"candidates record {json.dumps(cands)[:40]}, this run has m = {m}")
    x = tensors.get("x")
    if x is None or not x.is_floating_point() or x.ndim < 2 or x.shape[0] < 1 or x.layout != torch.strided:
        raise bad("no candidate images x")
    if not bool(torch.isfinite(x).all()):
        raise bad("candidates hold NaN or inf")
    split, merge = attack.get("split") or {}, attack.get("merge") or {}
    top = int(math.floor(float(split.get("max_factor", 1.0)) * m)) if split.get("enabled") else m
    low = 1 if merge.get("enabled") else m
    rows = int(x.shape[0])
    if blocks > 1 and rows != blocks * m:
        raise bad(f"{rows} candidates, this run has {blocks} restarts of m = {m}")
    if blocks == 1 and not low <= rows <= max(top, m):
        raise bad(f"{rows} candidates, this run has m = {m}")
    mult = tensors.get("multipliers")
    for name, t in tensors.items():
        if name == "x" or t.ndim == 0:
            continue
        like = x if name.startswith("opt_x.") else mult if name.startswith("opt_m.") else None
        per_row = tuple(t.shape) == (rows,)  # an optimiser's state with one value per candidate (RowAdam)
        if (like is not None and t.shape != like.shape and not per_row) or (like is None and t.shape[0] != rows):
            raise bad(f"tensor {name} of shape {tuple(t.shape)} beside {rows} candidates")
