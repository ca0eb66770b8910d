"""The researcher's path as functions: train a victim, attack it, evaluate, the offline demo.

The CLI (``cli.py``) is a thin layer over these.  Each writes its config, metrics (JSON) and pictures (PNG)
into its output folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attacks.haim import HaimConfig
from .attacks.runner import reconstruct
from .config import from_dict, save_json, to_dict
from .data.formats import read_npz, to_float_nchw
from .data.tasks import TaskConfig, build_task
from .errors import TrainreconError
from .metrics.evaluate import evaluate, headline
from .models.victim import Victim, load_victim, save_victim
from .reports import l2_curve_plot, pair_grid
from .training import TrainConfig, train_binary


def train_victim(
    task: TaskConfig, train: TrainConfig, out: str | Path, data_dir: str | Path | None = None,
    device: torch.device | str = "cpu", log=print,
) -> Path:
    """Train a binary victim on ``task`` and write the victim folder ``out``."""
    if task.task == "multiclass":
        raise TrainreconError("task.task: multiclass victims are not supported by this trainer yet (binary tasks only)")
    out = Path(out)
    data = build_task(task, data_dir)
    log(f"task {task.dataset}/{task.task}: n = {data.n} training images of shape {data.x_train.shape[1:]}")
    x = torch.as_tensor(data.centred(data.x_train))
    y = torch.as_tensor(data.y_train, dtype=torch.float64)
    spec, params, summary = train_binary(train, x, y, checkpoint_dir=out / "checkpoint", device=device, log=log)
    info = {
        "task": to_dict(task),
        "train_indices": data.idx_train.tolist(),
        "heldout_indices": data.idx_heldout.tolist(),
        "trainer": to_dict(train),
        "final": summary["final"],
        "rescale_factor": summary["rescale_factor"],
        "seconds": summary["seconds"],
        "history": summary["history"],
    }
    save_victim(out, spec, [p.cpu() for p in params], data.mean, info)
    return out


def load_truth(
    victim: Victim, data_dir: str | Path | None, truth: str | Path | None, heldout: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Training images, labels, held-out control images and centring mean, for evaluation only."""
    shape = tuple(victim.spec.input_shape)
    x_ho_file = None if heldout is None else to_float_nchw(read_npz(heldout)[0], str(heldout))
    if truth is not None:
        x, y = read_npz(truth)
        x_tr = to_float_nchw(x, str(truth))
        if x_tr.shape[1:] != shape:
            raise TrainreconError(f"{truth}: images of shape {x_tr.shape[1:]}, but the victim takes {shape}")
        mean = victim.mean_chw() if victim.input_mean is not None else x_tr.mean(axis=0)
        return x_tr, y, x_ho_file, mean
    if "task" not in victim.train_info:
        raise TrainreconError("evaluate: the victim's train.json names no task; pass the training set with --truth")
    task = from_dict(TaskConfig, victim.train_info["task"], "train.json.task")
    data = build_task(task, data_dir)
    recorded = victim.train_info.get("train_indices")
    if recorded is not None and list(map(int, recorded)) != data.idx_train.tolist():
        raise TrainreconError("train.json: recorded train_indices differ from the task's selection on this data")
    x_ho = data.x_heldout if x_ho_file is None else x_ho_file
    mean = victim.mean_chw() if victim.input_mean is not None else data.mean
    return data.x_train, data.y_train, x_ho, mean


def evaluate_run(
    victim_dir: str | Path, candidate_files: list[str | Path], out: str | Path, data_dir: str | Path | None = None,
    truth: str | Path | None = None, heldout: str | Path | None = None, log=print,
) -> dict[str, Any]:
    """Score the union of candidate files against the victim's training set; write metrics.json and PNGs."""
    victim = load_victim(victim_dir)
    shape = tuple(victim.spec.input_shape)
    cands = []
    for f in candidate_files:
        x, _ = read_npz(f)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
            x = x.reshape(-1, *shape)
        if x.shape[1:] != shape:
            raise TrainreconError(f"{f}: candidates of shape {x.shape[1:]}, the victim takes {shape} (centred space)")
        cands.append(x)
    x_tr, y_tr, x_ho, mean = load_truth(victim, data_dir, truth, heldout)
    metrics, pairs = evaluate(np.concatenate(cands), x_tr, x_ho, mean, y_tr, runs_unioned=len(cands))
    metrics["candidate_files"] = [Path(f).name for f in candidate_files]
    metrics["mean_source"] = "victim input_mean" if victim.input_mean is not None else "training-set per-pixel mean"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "metrics.json", metrics)
    p = pairs["haim_nn"]
    pair_grid(p["train"], p["matched"], p["ssim"], out / "grid.png",
              "training image | nearest reconstruction (Haim protocol), SSIM (window 3)")
    loo = metrics["protocols"]["loo_greedy"]
    l2_curve_plot(loo["l2_curve"], loo["l2_curve_control"], out / "l2_curve.png")
    log(headline(metrics))
    return metrics


DEMO_TASK = TaskConfig(dataset="digits", task="odd_even", n_per_class=25, centring="pixel")
DEMO_TRAIN = TrainConfig(hidden=[100, 100])
DEMO_ATTACK = HaimConfig()


def demo(out: str | Path = "runs/demo", device: torch.device | str = "cpu", seed: int = 0, log=print) -> dict[str, Any]:
    """Offline demo: digits even/odd victim, Haim KKT attack, evaluation with held-out control, grid.png."""
    out = Path(out)
    t0 = time.time()
    train_cfg = from_dict(TrainConfig, {**to_dict(DEMO_TRAIN), "seed": seed})
    attack_cfg = from_dict(HaimConfig, {**to_dict(DEMO_ATTACK), "seed": seed})
    victim_dir = out / "victim"
    if not (victim_dir / "model.safetensors").is_file():
        log("[1/3] training the victim (digits, even vs odd)")
        train_victim(DEMO_TASK, train_cfg, victim_dir, device=device, log=log)
    victim = load_victim(victim_dir)
    log(f"      victim KKT residual {victim.train_info['final']['kkt_residual']:.3f} (the floor for any reconstruction)")
    log(f"[2/3] reconstructing with the Haim KKT attack ({attack_cfg.iterations} iterations)")
    res = reconstruct(victim, attack_cfg, out / "reconstruction", device=device, resume=True, log=log)
    log(f"      {res['seconds_per_iteration'] * 1e3:.1f} ms per iteration")
    log("[3/3] evaluating against the training set and a held-out control")
    metrics = evaluate_run(victim_dir, [out / "reconstruction" / "candidates.npz"], out, log=log)
    save_json(out / "config.json", {"task": DEMO_TASK, "train": train_cfg, "attack": attack_cfg, "seed": seed})
    log(f"wrote {out / 'grid.png'} and {out / 'metrics.json'} in {time.time() - t0:.0f} s")
    return metrics
