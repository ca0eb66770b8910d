"""Training a victim into a victim folder: what it was trained on is recorded, never the images; a folder is
reused only for the same task and trainer config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import load_json, to_dict
from ..data.tasks import TaskConfig, build_task
from ..errors import Interrupted, TrainreconError
from ..models.victim import save_victim
from ..provenance import OutputFolder, refuse_other, with_defaults
from ..runtime import require_memory
from ..training import TRAINERS


#: everything training writes into a victim folder (``train`` refuses a folder holding anything else)
TRAIN_FILES = ("model.json", "train.json", "recipe.json", "model.safetensors", "checkpoint", "*.tmp")


def train_bytes(spec, n: int) -> float:
    """A generous estimate of a trainer's peak memory: L-BFGS keeps 2 x 50 parameter-sized vectors, and every
    layer's activations for the n training images are kept a few times over."""
    return 8 * (110 * spec.n_params() + 8 * n * sum(spec.activation_sizes()))


def normalised_record(info: dict[str, Any]) -> dict[str, Any]:
    """task / trainer_kind / trainer of a train.json, with fields added since it was written at their defaults."""
    return with_defaults({k: info.get(k) for k in ("task", "trainer_kind", "trainer")},
                         {"task": TaskConfig, "trainer": TRAINERS.config_named(info.get("trainer_kind"))})


def train_victim(
    task: TaskConfig, train, out: str | Path, data_dir: str | Path | None = None,
    device: torch.device | str = "cpu", log=print,
) -> Path:
    """Train a victim on ``task`` with the trainer ``train``'s type names and write the victim folder ``out``.

    The folder is locked while training.  A folder holding a finished victim is reused only when it was trained
    with the same task, trainer and config (and refused otherwise, naming the first difference); an imported
    victim is never overwritten.  The trainer's checkpoint resumes only on the same config and data."""
    name, (_, fit) = TRAINERS.for_config(train)
    out = Path(out)
    record = {"task": to_dict(task), "trainer_kind": name, "trainer": to_dict(train)}
    # claimed before the lock: nothing is written into a folder it refuses
    with OutputFolder(out, "train", TRAIN_FILES).claim():
        if (out / "train.json").is_file() or (out / "model.safetensors").is_file():
            old = load_json(out / "train.json") if (out / "train.json").is_file() else {}
            if not isinstance(old, dict) or "task" not in old:
                raise TrainreconError(f"{out}: holds a victim that was not trained here (imported, or incomplete); "
                                      "choose a new folder")
            refuse_other(normalised_record(old), record,
                         f"{out}: holds a victim trained differently ({{diff}}); choose a new folder")
            if (out / "model.safetensors").is_file():
                log(f"{out}: already trained with this task and config; nothing to do")
                return out
        data = build_task(task, data_dir)
        log(f"task {task.dataset}/{task.task}: n = {data.n} training images of shape {data.x_train.shape[1:]}")
        x = torch.as_tensor(data.centred(data.x_train))
        if task.task == "multiclass":
            classes = np.unique(data.y_train)
            y = torch.as_tensor(np.searchsorted(classes, data.y_train))
            n_classes = len(classes)
        else:
            y, n_classes = torch.as_tensor(data.y_train, dtype=torch.float64), 2
        arch = train.spec(list(x.shape[1:]), 1 if n_classes == 2 else n_classes)
        require_memory(train_bytes(arch, data.n), f"training a {arch.describe()} victim", device)
        try:
            spec, params, summary = fit(train, x, y, checkpoint_dir=out / "checkpoint", device=device, log=log,
                                        n_classes=n_classes)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while training; the last checkpoint in {out / 'checkpoint'} is kept: "
                              "rerun the same command to resume") from None
        info = {
            **record,
            "train_indices": data.idx_train.tolist(),
            "heldout_indices": data.idx_heldout.tolist(),
            "final": summary["final"],
            "rescale_factor": summary.get("rescale_factor", 1.0),
            "seconds": summary["seconds"],
            "history": summary["history"],
        }
        init = summary.get("init_params")
        save_victim(out, spec, [p.cpu() for p in params], data.mean, info,
                    None if init is None else [p.cpu() for p in init], summary.get("recipe"))
    return out
