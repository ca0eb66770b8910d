"""An attack's run folder: the one owner of everything an attack run keeps on disk.

:class:`RunFolder` is what the attack's loop (:func:`trainrecon.attacks.runner.run_attack`) writes through when
a run has a folder; an in-memory run has none.  It owns

* the folder (a :class:`trainrecon.provenance.OutputFolder`, as every command's is): :meth:`RunFolder.claim`
  refuses, before any work, a folder holding anything a run does not write (:data:`RUN_FILES`;
  :func:`trainrecon.provenance.claim_folder`), and ``with folder:`` holds its lock
  (:func:`trainrecon.provenance.folder_lock`) for the run;
* the run's identity: :meth:`RunFolder.restore` resumes a checkpoint only when it was made by this very run
  (method, m, every attack field, victim), and refuses in one line, naming the first field that differs, a
  folder holding another run's checkpoint or results (:func:`trainrecon.provenance.refuse_other`,
  :func:`trainrecon.provenance.with_later_fields`);
* the writes, each atomic (:mod:`trainrecon.atomic`): ``config.json`` (:meth:`RunFolder.begin`),
  ``checkpoint.safetensors`` (:meth:`RunFolder.checkpoint`: the candidate set's tensors with the run's state in
  the header, :func:`trainrecon.checkpoint.save_checkpoint`), and at the end (:meth:`RunFolder.finish`, from the
  :class:`~trainrecon.reconstruction.Reconstruction`) ``loss.json``, the refinements' files (``splits.json``,
  ``split_images.npz``, ``merges.json``), ``candidates.npz`` and, for a finished run, ``candidates.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import write_drawn, write_npz
from .checkpoint import check_checkpoint, load_checkpoint, save_checkpoint
from .config import load_json, save_json
from .errors import TrainreconError
from .provenance import OutputFolder, refuse_other, with_later_fields
from .reconstruction import Reconstruction

#: everything a run writes into its folder (``trainrecon reconstruct`` refuses a folder holding anything else)
RUN_FILES = ("config.json", "candidates.npz", "loss.json", "candidates.png", "checkpoint.safetensors",
             "checkpoint.json", "splits.json", "split_images.npz", "merges.json", "*.tmp", "*.tmp.npz")


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
        (with the victim's fingerprint and the method, :func:`trainrecon.provenance.origin`) and, when the run
        finished, ``candidates.png`` (:func:`trainrecon.pictures.candidate_grid`)."""
        save_json(self.path / "loss.json", {"history": rec.history, **rec.stats})
        for name, content in rec.artifacts.items():
            if name.endswith(".npz"):
                write_npz(self.path / name, **content)
            else:
                save_json(self.path / name, content)
        write_candidates(self.path / "candidates.npz", rec)
        if rec.finished:
            from .pictures import candidate_grid  # matplotlib, only once there is a picture to draw

            write_drawn(self.path / "candidates.png", lambda f: candidate_grid(rec.x.numpy(), rec.mean.numpy(), f))


def write_candidates(path: str | Path, rec: Reconstruction) -> None:
    """candidates.npz: the run's origin (``victim`` fingerprint and ``method``, as strings) and
    :meth:`~trainrecon.reconstruction.Reconstruction.to_arrays`."""
    write_npz(path, victim=str(rec.victim), method=str(rec.method), **rec.to_arrays())


__all__ = ["RUN_FILES", "RunFolder", "write_candidates"]
