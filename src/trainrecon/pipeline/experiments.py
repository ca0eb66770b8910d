"""Experiment files (``bench/cases/*.json``): train, attack and evaluate as one resumable run, with an optional
shadow-victim control."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_npz
from ..attacks.method import method_named
from ..attacks.payload import Payload, payload_from_folder
from ..api import reconstruct
from ..config import from_dict, load_config, load_json, save_json, to_dict
from ..data.tasks import TaskConfig
from ..models.victim import load_victim
from ..provenance import OutputFolder, refuse_other, with_defaults
from ..training import TRAINERS
from .evaluation import EVALUATION_FILES, Candidates, evaluate_run
from .victims import train_victim


#: everything ``run`` writes into its folder (it refuses a folder holding anything else)
EXPERIMENT_FILES = ("experiment.json", "victim", "reconstruction", "shadow_victim", "shadow_reconstruction",
                    *EVALUATION_FILES)


@dataclass
class Experiment:
    """One experiment file (``bench/cases/*.json``): a task, a trainer and its config, a method and its config.

    ``shadow: true`` adds the shadow-victim control: the same trainer and attack on the task's next
    ``n_per_class`` images of each class (disjoint from the victim's, same distribution); its candidates are
    scored against the victim's training set as one more negative control.  ``truth_start: true`` adds the
    attack's own positive control (:mod:`.truth_start`: the attack rerun from the training images)."""

    task: TaskConfig
    trainer: str = "kkt"
    method: str = "haim"
    train: dict = field(default_factory=dict)
    attack: dict = field(default_factory=dict)
    description: str = ""
    shadow: bool = False
    truth_start: bool = False

    def __post_init__(self) -> None:
        TRAINERS.get(self.trainer, "experiment.trainer")
        method_named(self.method, "experiment.method")

    def configs(self, where: str):
        return (from_dict(TRAINERS[self.trainer].config, self.train, f"{where}: train"),
                from_dict(method_named(self.method).Config, self.attack, f"{where}: attack"))


def run_experiment(
    path: str | Path, out: str | Path, data_dir: str | Path | None = None, device: torch.device | str = "cpu",
    log=print,
) -> dict[str, Any]:
    """Train (or reuse) the victim, run the attack (resumable), evaluate with the held-out control.

    Writes ``out/experiment.json``, ``victim/``, ``reconstruction/``, ``metrics.json``, ``report.html``,
    ``grid.png``, ``l2_curve.png``; returns a summary (counts, seconds per iteration, victim residual)."""
    exp = load_config(Experiment, path)
    train_cfg, attack_cfg = exp.configs(str(path))
    out = Path(out)
    record = {"task": exp.task, "trainer": exp.trainer, "train": train_cfg, "method": exp.method, "attack": attack_cfg,
              "shadow": exp.shadow}
    with OutputFolder(out, "run", EXPERIMENT_FILES).claim():
        if (out / "experiment.json").is_file():
            old = load_json(out / "experiment.json")
            old = {k: old.get(k) for k in record} if isinstance(old, dict) else {}
            # fields added since that file was written count at their defaults (shadow, when it was absent: off)
            old = with_defaults({**old, "shadow": bool(old.get("shadow"))},
                                {"task": TaskConfig, "train": TRAINERS.config_named(old.get("trainer")),
                                 "attack": type(attack_cfg)})
            refuse_other(old, to_dict(record), f"{out}: holds results of a different experiment ({{diff}}); "
                         "choose a new folder")
        save_json(out / "experiment.json", {"source": Path(path).name, "description": exp.description, **record})
        return _run_experiment(exp, path, train_cfg, attack_cfg, out, data_dir, device, log)


def _run_experiment(exp: Experiment, path, train_cfg, attack_cfg, out: Path, data_dir, device, log) -> dict[str, Any]:
    t0 = time.time()
    if not (out / "victim" / "model.safetensors").is_file():
        train_victim(exp.task, train_cfg, out / "victim", data_dir, device, log)
    train_wall = time.time() - t0
    victim = load_victim(out / "victim")
    payload = payload_from_folder(out / "victim")  # the attacker's view: no task, no indices
    rec = reconstruct(payload, attack_cfg, out / "reconstruction", device, resume=True, log=log)
    res = rec.stats
    nulls = {"shadow": shadow_candidates(exp, train_cfg, attack_cfg, payload, out, data_dir, device, log)} if exp.shadow else {}
    metrics = evaluate_run(out / "victim", [Candidates.of(rec, out / "reconstruction" / "candidates.npz")], out,
                           data_dir=data_dir, log=log, null_files=nulls, truth_start=exp.truth_start)
    head = metrics["headline"]
    haim = metrics["protocols"]["haim_nn"]
    return {
        "case": Path(path).stem, "method": exp.method, "description": exp.description,
        "n": metrics["n"], "m": metrics["m"], "architecture": victim.spec.describe(),
        "victim_residual": victim.train_info["final"].get("kkt_residual"),
        "victim_train_seconds": victim.train_info["seconds"], "train_wall_seconds_this_run": train_wall,
        "attack_iterations": res["iterations_done"], "attack_seconds": res["seconds"],
        "seconds_per_iteration": res["seconds_per_iteration"], "final_loss": res["final_loss"],
        "ssim_gt_0.4": haim["ssim_paper"]["count_gt_0.4"],
        "control_ssim_gt_0.4": haim["control"]["ssim_paper"]["count_gt_0.4"] if haim["control"] else None,
        "above_control": haim["above_control"]["ssim_paper_gt_0.4"] if haim["above_control"] else None,
        "best10_mean_ssim": haim["ssim_paper"]["mean_top10"],
        "ssim_gt_0.5": haim["ssim_paper"]["count_gt_0.5"],
        "control_ssim_gt_0.5": haim["control"]["ssim_paper"]["count_gt_0.5"] if haim["control"] else None,
        "classic_ssim_gt_0.4": haim["ssim_classic"].get("count_gt_0.4"),
        "control_classic_ssim_gt_0.4": haim["control"]["ssim_classic"].get("count_gt_0.4") if haim["control"] else None,
        "per_class_ssim_gt_0.4": haim.get("per_class_ssim_paper_gt_0.4"),
        "headline": {k: head.get(k) for k in ("recovered", "controls", "informative", "similarity", "threshold")},
        "truth_start": metrics.get("truth_start"),
    }


def shadow_candidates(exp: Experiment, train_cfg, attack_cfg, victim: Payload, out: Path, data_dir, device,
                      log) -> Candidates:
    """Train and attack the shadow victim (the task's next ``n_per_class`` images per class, same trainer and
    attack); return its candidates moved into the victim's centred space (x + shadow mean - victim mean), in
    memory and written beside its run (``candidates_in_victim_space.npz``)."""
    task = dataclasses.replace(exp.task, skip_per_class=exp.task.skip_per_class + exp.task.n_per_class)
    if not (out / "shadow_victim" / "model.safetensors").is_file():
        log(f"shadow victim: the next {exp.task.n_per_class} images per class")
        train_victim(task, train_cfg, out / "shadow_victim", data_dir, device, log)
    shadow = payload_from_folder(out / "shadow_victim")
    x = reconstruct(shadow, attack_cfg, out / "shadow_reconstruction", device, resume=True, log=log).x.numpy()
    moved = out / "shadow_reconstruction" / "candidates_in_victim_space.npz"
    x = x + shadow.mean_chw() - victim.mean_chw()
    write_npz(moved, x=x)
    return Candidates(x, moved)
