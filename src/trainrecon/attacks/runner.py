"""Running an attack: initialise, optimise with checkpoints, resume, write the candidates.

Output folder: ``config.json`` (method + every hyper-parameter), ``candidates.npz`` (x in the victim's
centred input space, shape (m, C, H, W); y; multipliers), ``loss.json`` (history), ``candidates.png``,
and while running ``checkpoint.safetensors`` + ``checkpoint.json``.  A resumed run continues bit-for-bit
where it stopped: the optimiser state is saved with the iterate and nothing random happens after init.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import load_json, save_json, to_dict
from ..errors import TrainreconError
from ..models.victim import Victim, read_safetensors, save_tensors
from ..runtime import progress, resolve_dtype
from .haim import HaimConfig, haim_init, haim_labels, haim_objective

METHODS = {"haim": HaimConfig}


@dataclass
class SGDMomentum:
    """torch.optim.SGD(momentum) semantics: buf <- mu buf + g (buf = g at the first step); p <- p - lr buf."""

    lr: float
    momentum: float

    def step(self, p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        buf = g.clone() if buf is None else buf.mul_(self.momentum).add_(g)
        return p - self.lr * buf, buf


def default_m(victim: Victim) -> int:
    idx = victim.train_info.get("train_indices")
    if not idx:
        raise TrainreconError("attack.m: the victim records no training-set size; pass the number of candidates (--m)")
    return 2 * len(idx)


def reconstruct(
    victim: Victim,
    cfg: HaimConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    log=print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run the Haim KKT attack on ``victim`` and write the results to ``out_dir``.

    ``stop_after`` ends the run early after that many iterations (leaving a checkpoint), for tests.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = resolve_dtype(cfg.dtype)
    v = victim.to(torch.device(device), dtype)
    m = cfg.m or default_m(victim)
    cfg_record = {"method": "haim", "m": m, "attack": to_dict(cfg)}
    ck_t, ck_j = out / "checkpoint.safetensors", out / "checkpoint.json"
    obj = haim_objective(v.spec, v.params, cfg, m)
    opt_x = SGDMomentum(cfg.lr, cfg.momentum)
    opt_l = SGDMomentum(cfg.lr_lambda, cfg.momentum)
    start, history, buf_x, buf_l = 0, [], None, None
    if ck_j.is_file() and ck_t.is_file():
        if not resume:
            raise TrainreconError(f"{out}: holds a checkpoint of an earlier run; pass --resume or choose a new folder")
        meta = load_json(ck_j)
        if meta.get("config") != cfg_record:
            raise TrainreconError(f"{ck_j}: checkpoint was made with a different attack config; use a new folder")
        state = read_safetensors(ck_t)
        X, lam = state["x"].to(device=device, dtype=dtype), state["lambda"].to(device=device, dtype=dtype)
        buf_x, buf_l = state.get("momentum_x"), state.get("momentum_lambda")
        buf_x = None if buf_x is None else buf_x.to(device=device, dtype=dtype)
        buf_l = None if buf_l is None else buf_l.to(device=device, dtype=dtype)
        start, history = int(meta["iteration"]), list(meta["history"])
        log(f"resuming from iteration {start}")
    else:
        X, lam = haim_init(m, v.spec.widths[0], cfg, dtype, device)
    save_json(out / "config.json", cfg_record)

    def checkpoint(it: int) -> None:
        tensors = {"x": X, "lambda": lam}
        if buf_x is not None:
            tensors["momentum_x"] = buf_x
            tensors["momentum_lambda"] = buf_l
        save_tensors(ck_t, tensors)
        save_json(ck_j, {"iteration": it, "config": cfg_record, "history": history})

    t0 = time.time()
    bar = progress(cfg.iterations, "reconstruct", initial=start)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    for it in range(start, end):
        values, gx, gl = obj.value_and_grad(X, lam)
        if not np.isfinite(values["total"]):
            raise TrainreconError(f"attack diverged at iteration {it} (loss {values['total']}); lower attack.lr")
        X, buf_x = opt_x.step(X, gx, buf_x)
        lam, buf_l = opt_l.step(lam, gl, buf_l)
        bar.update(1)
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iterations:
            history.append({"iteration": done, **values})
            bar.set_postfix(loss=f"{values['total']:.4g}")
        if done % cfg.checkpoint_every == 0 or done == end:
            checkpoint(done)
    bar.close()
    seconds = time.time() - t0
    iters_run = end - start
    shape = [m, *v.spec.input_shape]
    result = {
        "method": "haim",
        "m": m,
        "iterations_done": end,
        "finished": end == cfg.iterations,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(iters_run, 1),
        "final_loss": history[-1] if history else None,
    }
    save_json(out / "loss.json", {"history": history, **result})
    np.savez_compressed(
        out / "candidates.npz",
        x=X.detach().cpu().double().numpy().reshape(shape),
        y=haim_labels(m, torch.float64, "cpu").numpy(),
        multipliers=lam.detach().cpu().double().numpy(),
    )
    if end == cfg.iterations:
        from ..reports import candidate_grid

        candidate_grid(X.detach().cpu().double().numpy().reshape(shape), victim.mean_chw(), out / "candidates.png")
    return result
