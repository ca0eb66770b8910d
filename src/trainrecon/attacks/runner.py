"""Running an attack: initialise, optimise with checkpoints, resume, write the candidates.

Output folder: ``config.json`` (method + every hyper-parameter + the victim's content hash),
``candidates.npz`` (x in the victim's centred input space, shape (m, C, H, W); the fixed candidate labels y
where the method has them; the multipliers, (m,) or (m, K)), ``loss.json`` (history), ``candidates.png``, and
while running ``checkpoint.safetensors`` (one file: tensors and state, see :mod:`trainrecon.checkpoint`).  A resumed run continues bit-for-bit
where it stopped: the optimiser state is saved with the iterate and nothing random happens after init.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import first_difference, fingerprint, folder_lock, load_checkpoint, save_checkpoint
from ..config import registered_name, save_json, to_dict
from ..errors import Interrupted, TrainreconError
from ..models.victim import Victim
from ..runtime import StopRequest, progress, require_memory, resolve_dtype
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


def victim_fingerprint(victim: Victim) -> str:
    """Content hash of what the attacker is given: weights, initial weights, input mean, architecture."""
    tensors: dict[str, Any] = dict(zip(victim.spec.param_names(), victim.params))
    if victim.init_params is not None:
        tensors.update({f"init.{k}": v for k, v in zip(victim.spec.param_names(), victim.init_params)})
    if victim.input_mean is not None:
        tensors["input_mean"] = np.asarray(victim.input_mean, dtype=np.float64)
    tensors["spec"] = np.frombuffer(repr(to_dict(victim.spec)).encode(), dtype=np.uint8)
    return fingerprint(tensors)


def attack_bytes(victim: Victim, m: int, cfg) -> float:
    """A generous estimate of an attack's peak memory: candidates with optimiser state, per-candidate
    activations of every layer (chunked when chunk_size > 0), and a few copies of the parameters."""
    widths = victim.spec.widths
    n_params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    rows = min(m, cfg.chunk_size) if cfg.chunk_size else m
    item = 4 if cfg.dtype == "float32" else 8
    return item * (4 * m * widths[0] + 8 * rows * sum(widths) + 8 * n_params)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed, atomically (temp file + rename)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


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

    The folder is locked for the run.  ``resume`` continues the checkpoint in ``out_dir`` only when it was made
    by the same method and config on the same victim (content hash); Ctrl-C saves a checkpoint first.
    ``stop_after`` ends the run early after that many iterations (leaving a checkpoint), for tests.
    """
    method = registered_name(METHODS, cfg, "reconstruction method")
    out = Path(out_dir)
    with folder_lock(out):
        return _reconstruct(victim, cfg, method, out, device, resume, log, stop_after)


def _reconstruct(victim: Victim, cfg, method: str, out: Path, device, resume: bool, log, stop_after) -> dict[str, Any]:
    dtype = resolve_dtype(cfg.dtype)
    m = cfg.m or default_m(victim)
    require_memory(attack_bytes(victim, m, cfg), f"attack with m = {m} candidates", device)
    cfg_record = {"method": method, "m": m, "attack": to_dict(cfg), "victim": victim_fingerprint(victim)}
    ck = out / "checkpoint.safetensors"
    legacy_json = out / "checkpoint.json"
    v = victim.to(torch.device(device), dtype)
    plan = METHODS[method][1](v, cfg, m)
    X, M = plan.X, plan.M
    state_x: dict[str, torch.Tensor] = {}
    state_m: dict[str, torch.Tensor] = {}
    start, history, seconds_before = 0, [], 0.0
    loaded = load_checkpoint(ck, legacy_json)
    if loaded is not None:
        if not resume:
            raise TrainreconError(f"{out}: holds a checkpoint of an earlier run; pass --resume or choose a new folder")
        state, meta = loaded
        saved = meta.get("config")
        if isinstance(saved, dict) and "victim" not in saved:  # written before victims were fingerprinted
            saved = {**saved, "victim": cfg_record["victim"]}
        if not same_run(saved, cfg_record, type(cfg)):
            diff = first_difference(saved, cfg_record) if isinstance(saved, dict) else "config"
            what = "another victim" if diff and diff.startswith("victim") else f"a different attack config: {diff}"
            raise TrainreconError(f"{ck}: checkpoint was made with {what}; use a new folder")
        X, M = state["x"].to(device=device, dtype=dtype), state["multipliers"].to(device=device, dtype=dtype)
        state_x = _unprefixed("opt_x", state, device, dtype)
        state_m = _unprefixed("opt_m", state, device, dtype)
        start, history = int(meta["iteration"]), list(meta["history"])
        seconds_before = float(meta.get("seconds", 0.0))
        log(f"resuming from iteration {start}")
    save_json(out / "config.json", cfg_record)

    def checkpoint(it: int) -> None:
        tensors = {"x": X, "multipliers": M, **_prefixed("opt_x", state_x), **_prefixed("opt_m", state_m)}
        save_checkpoint(ck, tensors, {"iteration": it, "config": cfg_record, "history": history,
                                      "seconds": seconds_before + time.time() - t0})
        legacy_json.unlink(missing_ok=True)

    t0 = time.time()
    bar = progress(cfg.iterations, method, initial=start)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    with StopRequest() as stop:
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
            if done % cfg.checkpoint_every == 0 or done == end or stop.requested:
                checkpoint(done)
            if stop.requested and done < end:
                bar.close()
                raise Interrupted(f"{stop.requested}: stopped at iteration {done} of {cfg.iterations} with a checkpoint "
                                  f"in {out}; resume with the same command and --resume")
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
    write_npz(out / "candidates.npz", **arrays)
    if end == cfg.iterations:
        from ..reports import candidate_grid

        candidate_grid(arrays["x"], victim.mean_chw(), out / "candidates.png")
    return result
