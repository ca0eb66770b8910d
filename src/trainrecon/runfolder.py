"""An attack's run folder: the one owner of everything an attack run keeps on disk.

:class:`RunFolder` is what the attack's loop (:func:`trainrecon.attacks.runner.run_attack`) writes through when
a run has a folder; an in-memory run has none.  It owns

* the folder (a :class:`trainrecon.checkpoint.OutputFolder`, as every command's is): :meth:`RunFolder.claim`
  refuses, before any work, a folder holding anything a run does not write (:data:`RUN_FILES`;
  :func:`trainrecon.checkpoint.claim_folder`), and ``with folder:`` holds its lock
  (:func:`trainrecon.checkpoint.folder_lock`) for the run;
* the run's identity: :meth:`RunFolder.restore` resumes a checkpoint only when it was made by this very run
  (method, m, every attack field, victim), and refuses in one line, naming the first field that differs, a
  folder holding another run's checkpoint or results (:func:`same_run`);
* the writes, each atomic (:mod:`trainrecon.atomic`): ``config.json`` (:meth:`RunFolder.begin`),
  ``checkpoint.safetensors`` (:meth:`RunFolder.checkpoint`: the candidate set's tensors with the run's state in
  the header, :func:`trainrecon.checkpoint.save_checkpoint`), and at the end (:meth:`RunFolder.finish`, from the
  :class:`~trainrecon.reconstruction.Reconstruction`) ``loss.json``, the refinements' files (``splits.json``,
  ``split_images.npz``, ``merges.json``), ``candidates.npz`` and, for a finished run, ``candidates.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .atomic import write_drawn, write_npz
from .checkpoint import OutputFolder, first_difference, load_checkpoint, refuse_other, save_checkpoint
from .config import is_finite_number, is_whole, load_json, save_json, to_dict
from .errors import TrainreconError
from .reconstruction import Reconstruction

#: everything a run writes into its folder (``trainrecon reconstruct`` refuses a folder holding anything else)
RUN_FILES = ("config.json", "candidates.npz", "loss.json", "candidates.png", "checkpoint.safetensors",
             "checkpoint.json", "splits.json", "split_images.npz", "merges.json", "*.tmp", "*.tmp.npz")


def same_run(saved: Any, current: dict[str, Any], cls) -> bool:
    """Whether a checkpoint's config record is this run's (:func:`with_later_fields`)."""
    return isinstance(saved, dict) and isinstance(saved.get("attack"), dict) and \
        first_difference(with_later_fields(saved, current, cls), current) is None


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


def check_checkpoint(tensors: dict[str, torch.Tensor], state: dict[str, Any], record: dict[str, Any],
                     where: Path) -> None:
    """A checkpoint checked against its own run (``record``: method, m, attack config) before it is trusted:
    the iteration a whole number in [0, attack.iterations], the history a list of objects, the seconds a finite
    number >= 0, the candidate record's m0 this run's m; the candidates real and finite, their number m (between
    1 and m where merging is on, up to max_factor x m where splitting is), and every per-candidate tensor (and
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
    if cands is not None:
        if not (isinstance(cands, dict) and cands.get("m0", m) == m and isinstance(cands.get("runs", []), list)
                and all(isinstance(r, str) for r in cands.get("runs", []))):
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
    if not low <= rows <= max(top, m):
        raise bad(f"{rows} candidates, this run has m = {m}")
    mult = tensors.get("multipliers")
    for name, t in tensors.items():
        if name == "x" or t.ndim == 0:
            continue
        like = x if name.startswith("opt_x.") else mult if name.startswith("opt_m.") else None
        if (like is not None and t.shape != like.shape) or (like is None and t.shape[0] != rows):
            raise bad(f"tensor {name} of shape {tuple(t.shape)} beside {rows} candidates")


class RunFolder(OutputFolder):
    """An attack run's folder (see the module docstring).  ``path`` need not exist: the lock creates it."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "reconstruct", RUN_FILES)

    @property
    def checkpoint_file(self) -> Path:
        """``checkpoint.safetensors``: the candidate set and the run's state, one atomic file."""
        return self.path / "checkpoint.safetensors"

    @property
    def legacy_state(self) -> Path:
        """``checkpoint.json``: where checkpoints of earlier versions kept their state (read, then removed)."""
        return self.path / "checkpoint.json"

    def restore(self, record: dict[str, Any], config_class: type, resume: bool
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The checkpoint (tensors, state) this run continues from, or None for a fresh start.

        ``record``: the run's identity (method, m, attack config, victim fingerprint) as config.json holds it.
        Refused in one line: a checkpoint when ``resume`` is off; a checkpoint, or results without one (a copied
        run, or one killed before its first checkpoint), made by another run, naming the first field that
        differs.  Fields added to ``config_class`` since the checkpoint was written match their former meaning
        (:func:`same_run`); a checkpoint written before victims were fingerprinted is taken as this victim's."""
        loaded = load_checkpoint(self.checkpoint_file, self.legacy_state)
        if loaded is None:
            if (self.path / "config.json").is_file() or (self.path / "candidates.npz").is_file():
                earlier = load_json(self.path / "config.json") if (self.path / "config.json").is_file() else None
                refusal = f"{self.path}: holds the results of another run ({{diff}}); choose a new folder"
                if not isinstance(earlier, dict):
                    raise TrainreconError(refusal.replace("{diff}", "no config.json"))
                refuse_other(with_later_fields({k: earlier.get(k) for k in record}, record, config_class), record,
                             refusal)
            return None
        if not resume:
            raise TrainreconError(f"{self.path}: holds a checkpoint of an earlier run; pass --resume or choose a new folder")
        state, meta = loaded
        saved = meta.get("config")
        if isinstance(saved, dict) and "victim" not in saved:  # written before victims were fingerprinted
            saved = {**saved, "victim": record["victim"]}
        def refusal(diff: str) -> str:
            what = "another victim" if diff.startswith("victim") else f"a different attack config: {diff}"
            return f"{self.checkpoint_file}: checkpoint was made with {what}; use a new folder"

        if not isinstance(saved, dict):
            raise TrainreconError(refusal("config"))
        refuse_other(with_later_fields(saved, record, config_class), record, refusal)
        check_checkpoint(state, meta, record, self.checkpoint_file)
        return state, meta

    def begin(self, config: dict[str, Any]) -> None:
        """Write ``config.json``: the run's record and what the attacker was given."""
        save_json(self.path / "config.json", config)

    def checkpoint(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Write the checkpoint (tensors and JSON state in one atomic file); an earlier version's separate state
        file is removed once its successor is in place."""
        save_checkpoint(self.checkpoint_file, tensors, state)
        self.legacy_state.unlink(missing_ok=True)

    def stopped(self, message: str) -> str:
        """``message`` (where the run stopped) with where its checkpoint is and how to resume it."""
        return f"{message} with a checkpoint in {self.path}; resume with the same command and --resume"

    def finish(self, rec: Reconstruction) -> None:
        """Write the run's results: ``loss.json`` (history and summary), the refinements' files, ``candidates.npz``
        (with the victim's fingerprint and the method, :func:`trainrecon.checkpoint.origin`) and, when the run
        finished, ``candidates.png`` (:func:`trainrecon.reports.candidate_grid`)."""
        save_json(self.path / "loss.json", {"history": rec.history, **rec.stats})
        for name, content in rec.artifacts.items():
            if name.endswith(".npz"):
                write_npz(self.path / name, **content)
            else:
                save_json(self.path / name, content)
        write_candidates(self.path / "candidates.npz", rec)
        if rec.finished:
            from .reports import candidate_grid  # matplotlib, only once there is a picture to draw

            write_drawn(self.path / "candidates.png", lambda f: candidate_grid(rec.x.numpy(), rec.mean.numpy(), f))


def write_candidates(path: str | Path, rec: Reconstruction) -> None:
    """candidates.npz: the run's origin (``victim`` fingerprint and ``method``, as strings) and
    :meth:`~trainrecon.reconstruction.Reconstruction.to_arrays`."""
    write_npz(path, victim=str(rec.victim), method=str(rec.method), **rec.to_arrays())


__all__ = ["RUN_FILES", "RunFolder", "same_run", "with_later_fields", "write_candidates"]
