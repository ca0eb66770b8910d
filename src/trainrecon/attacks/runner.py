"""Running an attack: initialise, optimise with checkpoints, resume, write the candidates.

Output folder: ``config.json`` (method + every hyper-parameter), ``candidates.npz`` (x in the victim's
centred input space, shape (m, C, H, W); the fixed candidate labels y where the method has them; the
multipliers, (m,) or (m, K)), ``loss.json`` (history), ``candidates.png``,
and while running ``checkpoint.safetensors`` + ``checkpoint.json``.  A resumed run continues bit-for-bit
where it stopped: the optimiser state is saved with the iterate and nothing random happens after init.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import load_json, registered_name, save_json, to_dict
from ..errors import TrainreconError
from ..models.victim import Victim, read_safetensors, save_tensors
from ..runtime import progress, resolve_dtype
from .buzaglo import BuzagloMulticlassConfig, BuzagloRegressionConfig, buzaglo_multiclass_plan, buzaglo_regression_plan
from .haim import HaimConfig, haim_plan
from .loo import LooConfig, loo_plan

# method name -> (config class, plan builder)
METHODS = {
    "haim": (HaimConfig, haim_plan),
    "buzaglo-multiclass": (BuzagloMulticlassConfig, buzaglo_multiclass_plan),
    "buzaglo-regression": (BuzagloRegressionConfig, buzaglo_regression_plan),
    "loo-ntk": (LooConfig, loo_plan),
}


def default_m(victim: Victim) -> int:
    idx = victim.train_info.get("train_indices")
    if not idx:
        raise TrainreconError("attack.m: the victim records no training-set size; pass the number of candidates (--m)")
    return 2 * len(idx)


def same_run(saved: Any, current: dict[str, Any], cls) -> bool:
    """Whether a checkpoint's config record is this run's.  A field the saved record lacks (added to the
    config class after the checkpoint was written) matches when this run leaves it at its default."""
    if not isinstance(saved, dict) or not isinstance(saved.get("attack"), dict):
        return False
    defaults = to_dict(cls())
    attack = {**{k: v for k, v in current["attack"].items() if k not in saved["attack"] and v == defaults.get(k)},
              **saved["attack"]}
    return {**saved, "attack": attack} == current


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor], device, dtype) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            name = k[len(prefix) + 1 :]
            out[name] = v.to(device=device) if name == "t" else v.to(device=device, dtype=dtype)
    return out


def reconstruct(
    victim: Victim,
    cfg,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    log=print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run the attack that ``cfg``'s type names (see ``METHODS``) on ``victim``; write results to ``out_dir``.

    ``stop_after`` ends the run early after that many iterations (leaving a checkpoint), for tests.
    """
    method = registered_name(METHODS, cfg, "reconstruction method")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = resolve_dtype(cfg.dtype)
    v = victim.to(torch.device(device), dtype)
    m = cfg.m or default_m(victim)
    cfg_record = {"method": method, "m": m, "attack": to_dict(cfg)}
    ck_t, ck_j = out / "checkpoint.safetensors", out / "checkpoint.json"
    plan = METHODS[method][1](v, cfg, m)
    X, M = plan.X, plan.M
    state_x: dict[str, torch.Tensor] = {}
    state_m: dict[str, torch.Tensor] = {}
    start, history, seconds_before = 0, [], 0.0
    if ck_j.is_file() and ck_t.is_file():
        if not resume:
            raise TrainreconError(f"{out}: holds a checkpoint of an earlier run; pass --resume or choose a new folder")
        meta = load_json(ck_j)
        if not same_run(meta.get("config"), cfg_record, type(cfg)):
            raise TrainreconError(f"{ck_j}: checkpoint was made with a different attack config; use a new folder")
        state = read_safetensors(ck_t)
        X, M = state["x"].to(device=device, dtype=dtype), state["multipliers"].to(device=device, dtype=dtype)
        state_x = _unprefixed("opt_x", state, device, dtype)
        state_m = _unprefixed("opt_m", state, device, dtype)
        start, history = int(meta["iteration"]), list(meta["history"])
        seconds_before = float(meta.get("seconds", 0.0))
        log(f"resuming from iteration {start}")
    save_json(out / "config.json", cfg_record)

    def checkpoint(it: int) -> None:
        tensors = {"x": X, "multipliers": M, **_prefixed("opt_x", state_x), **_prefixed("opt_m", state_m)}
        save_tensors(ck_t, tensors)
        save_json(ck_j, {"iteration": it, "config": cfg_record, "history": history,
                         "seconds": seconds_before + time.time() - t0})

    t0 = time.time()
    bar = progress(cfg.iterations, method, initial=start)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    for it in range(start, end):
        values, gx, gm = plan.objective(it).value_and_grad(X, M)
        if not np.isfinite(values["total"]):
            raise TrainreconError(f"attack diverged at iteration {it} (loss {values['total']}); lower attack.lr")
        X = plan.opt_x.step(X, gx, state_x)
        M = plan.opt_m.step(M, gm, state_m)
        bar.update(1)
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iterations:
            history.append({"iteration": done, **values})
            bar.set_postfix(loss=f"{values['total']:.4g}")
        if done % cfg.checkpoint_every == 0 or done == end:
            checkpoint(done)
    bar.close()
    seconds = seconds_before + time.time() - t0  # over all sessions of this run
    shape = [m, *v.spec.input_shape]
    result = {
        "method": method,
        "m": m,
        "iterations_done": end,
        "finished": end == cfg.iterations,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(end, 1),
        "final_loss": history[-1] if history else None,
    }
    save_json(out / "loss.json", {"history": history, **result})
    arrays = {"x": X.detach().cpu().double().numpy().reshape(shape), "multipliers": M.detach().cpu().double().numpy()}
    if plan.labels is not None:
        arrays["y"] = plan.labels
    np.savez_compressed(out / "candidates.npz", **arrays)
    if end == cfg.iterations:
        from ..reports import candidate_grid

        candidate_grid(arrays["x"], victim.mean_chw(), out / "candidates.png")
    return result
