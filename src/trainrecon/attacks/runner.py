"""Running an attack: initialise, optimise (with its hooks), and return a :class:`Reconstruction`.

What a run gets is decided once, before any work, by :func:`~.plan.plan_run` (a :class:`~.plan.RunPlan` with its
hooks attached); :func:`run_attack` runs a plan in memory and returns a :class:`~trainrecon.reconstruction.Reconstruction`: the
candidates x in the victim's centred input space (m, C, H, W), the multipliers, the fixed candidate labels where
the method has them, candidate ids and parent ids, the loss history and the run's summary.  With a ``store`` (a
:class:`RunStore`: :class:`trainrecon.runfolder.RunFolder` is the one there is) the same run keeps a folder: the
store checks that a checkpoint it holds is this run's and resumes it, and writes config.json, checkpoints and the
results; the loop only calls it through :class:`RunStore`.  A resumed run continues bit for bit where it
stopped: the optimiser state is saved with the iterate and nothing random happens after init.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Protocol

import numpy as np
import torch

from ..config import to_dict
from ..errors import Diverged, Interrupted, TrainreconError
from ..provenance import fingerprint, record_array
from ..reconstruction import Reconstruction
from ..runtime import StopRequest, progress, resolve_dtype
from ..objective.candidates import CandidateSet
from .method import METHODS
from .optim import cosine_factor, scaled_step
from .plan import RunPlan
from ..hooks.interface import Step


class RunStore(Protocol):
    """What the loop asks of a run's storage (:class:`trainrecon.runfolder.RunFolder`); a run without one keeps
    everything in memory.  Entered (``with store:``) for the length of the run."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...

    def restore(self, record: dict[str, Any], config_class: type, resume: bool
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The checkpoint (tensors, state) of this very run (``record``) to continue, or None; another run's
        checkpoint or results are refused."""
        ...

    def begin(self, config: dict[str, Any]) -> None:
        """Keep the run's record (config.json)."""
        ...

    def checkpoint(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Keep a checkpoint: the candidate set's tensors and the run's JSON state."""
        ...

    def stopped(self, message: str) -> str:
        """``message`` with where the checkpoint is and how to resume."""
        ...

    def finish(self, rec: Reconstruction) -> None:
        """Keep the run's results."""
        ...


def run_attack(plan: RunPlan, store: RunStore | None = None, device: torch.device | str = "cpu",
               resume: bool = False, log=print, stop_after: int | None = None, refit: bool = True) -> Reconstruction:
    """Run the plan (:func:`plan_run`, :meth:`RunPlan.with_hooks`); return the
    :class:`~trainrecon.reconstruction.Reconstruction`.

    ``store`` keeps the run on disk (:class:`trainrecon.runfolder.RunFolder`, locked for the run): ``resume``
    continues its checkpoint only when it was made by the same method and config on the same victim (content
    hash); Ctrl-C saves a checkpoint first.  Without a store the run is in memory only (Ctrl-C interrupts it).
    ``stop_after`` ends the run early after that many iterations (leaving a checkpoint), for tests; ``refit=False``
    skips the final refit residual (a per-candidate Jacobian: seconds to a minute on a wide network), for a run whose
    candidates are only a start (the simulation's warm start).  The plan's hooks
    (:class:`~trainrecon.hooks.interface.AttackHook`, every one in :mod:`trainrecon.hooks`) act on the run: sample
    splitting, merging, the second-order report and the collapse count, the wall-clock budget and a sweep's pruning
    (a hook whose ``after_log`` returns True ends the run there, with its candidates written and
    ``stopped_by_monitor`` set); the run's summary holds each hook's report under its key.
    :func:`trainrecon.reconstruct` plans a run with the hooks its config asks for and runs it here.
    """
    if not isinstance(plan, RunPlan):
        raise TypeError(f"run_attack: expected a RunPlan (trainrecon.attacks.plan.plan_run), got {type(plan).__name__}")
    if store is not None and not callable(getattr(store, "restore", None)):
        raise TypeError(f"run_attack: store must be a RunStore (trainrecon.runfolder.RunFolder), got {store!r}")
    if store is None and resume:
        raise TrainreconError("resume: a run without a folder has no checkpoint to resume; give it a run folder")
    plan.with_hooks(plan.hooks)  # a plan built by hand is held to the same rule
    with store if store is not None else contextlib.nullcontext():
        return _reconstruct(plan, store, device, resume, log, stop_after, refit)


def _reconstruct(plan: RunPlan, store: RunStore | None, device, resume: bool, log, stop_after,
                 refit: bool = True) -> Reconstruction:
    payload, cfg, adapted, method, m, hooks = plan.payload, plan.cfg, plan.adapted, plan.method, plan.m, list(plan.hooks)
    normalisation = plan.normalisation
    dtype = resolve_dtype(cfg.dtype)
    cfg_record = {"method": method.name, "m": m, "attack": to_dict(cfg), "victim": payload.fingerprint()}
    run_id = fingerprint({"record": record_array(cfg_record)})
    attack = method(plan.attacked.to(torch.device(device), dtype), cfg)
    start, history, seconds_before = 0, [], 0.0
    loaded = None if store is None else store.restore(cfg_record, type(cfg), resume)
    if loaded is not None:
        attack.restore(loaded[1].get("method_report"))  # what the method chose for this run (a searched rate)
    t0 = time.time()  # the method's own set-up (a learning-rate search) counts towards the run's seconds
    cands = attack.init(m)
    cands.runs = [run_id]
    opt_x, opt_m = attack.optimisers()
    if loaded is not None:
        state, meta = loaded
        record = meta.get("candidates") or {"m0": m, "runs": [run_id]}
        fresh = cands
        cands = CandidateSet.from_tensors(state, record, labels=cands.labels).to(device, dtype)
        if cands.x.shape[1:] != fresh.x.shape[1:] or cands.multipliers.shape[1:] != fresh.multipliers.shape[1:]:
            raise TrainreconError(f"checkpoint: candidates of shape {tuple(cands.x.shape[1:])}, this victim takes "
                                  f"{tuple(fresh.x.shape[1:])}; remove the checkpoint to start over")
        start, history = int(meta["iteration"]), list(meta["history"])
        seconds_before = float(meta.get("seconds", 0.0))
        for h in hooks:
            try:
                h.restore(meta)
            except (TypeError, ValueError, KeyError, AttributeError):  # the boundary where a hook reads its state
                raise TrainreconError(f"checkpoint: damaged state ({getattr(h, 'key', '') or 'a refinement'}'s "
                                      "record); remove the checkpoint to start over") from None
        log(f"resuming from iteration {start}")
    config = {**cfg_record, "payload": payload.record(), "normalisation": normalisation, "adapted": adapted}
    if store is not None:
        store.begin(config)

    def elapsed() -> float:
        return seconds_before + time.time() - t0

    def checkpoint(it: int) -> None:
        if store is None:
            return
        meta = {k: v for h in hooks for k, v in h.state().items()}
        report = attack.report()
        store.checkpoint(cands.tensors(), {**meta, "iteration": it, "config": cfg_record, "history": history,
                                           "seconds": elapsed(), "candidates": cands.record(),
                                           **({"method_report": report} if report is not None else {})})

    bar = progress(cfg.iterations, method.name, initial=start)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    first = Step(start, cfg.iterations, end, cands, attack, {}, lambda: seconds_before)  # the earlier sessions'
    for h in hooks:
        h.before_loop(first)
    finished_early, monitored, step = first.finish_now, False, first
    if finished_early:
        end = start
    with StopRequest() if store is not None else contextlib.nullcontext() as stop:
        for it in range(start, end):
            values, gx, gm = attack.objective(it, cands).value_and_grad(cands.x, cands.multipliers)
            if not np.isfinite(values["total"]):
                raise Diverged(f"attack diverged at iteration {it} (loss {values['total']}) at attack.lr "
                                      f"{cfg.lr:g}; lower attack.lr (--config with, say, {{\"lr\": {cfg.lr / 3:.2g}}})")
            # the run's progress (iterations, or a budget's share spent by the last step: the hooks say) sets the
            # step's factor (exactly 1 at lr_final 1)
            f = cosine_factor(cfg.lr_final, max([it / cfg.iterations] + [h.spent(step) for h in hooks]),
                              cfg.lr_decay_start)
            cands.x = scaled_step(cands.x, opt_x.step(cands.x, gx, cands.state_x), f)
            cands.multipliers = scaled_step(cands.multipliers, opt_m.step(cands.multipliers, gm, cands.state_m), f)
            bar.update(1)
            done = it + 1
            step = Step(done, cfg.iterations, end, cands, attack, values, elapsed)
            changed = [h.after_step(step) for h in hooks]  # after the step, before this iteration's checkpoint
            cands = step.cands
            if any(changed):
                checkpoint(done)
            if done % cfg.log_every == 0 or done == cfg.iterations:
                history.append({"iteration": done, **values})
                bar.set_postfix(loss=f"{values['total']:.4g}")
                if done < end and any(h.after_log(step, lambda: attack.refit_residual(cands)) for h in hooks):
                    checkpoint(done)
                    end, monitored = done, True
                    break
            requested = stop is not None and stop.requested
            if done % cfg.checkpoint_every == 0 or done == end or requested:
                checkpoint(done)
            if step.finish_now and done < end:  # a hook ends the run here (the wall-clock budget is spent)
                if not history or history[-1]["iteration"] != done:
                    history.append({"iteration": done, **values})
                checkpoint(done)
                end, finished_early = done, True
                break
            if requested and done < end:
                bar.close()
                raise Interrupted(store.stopped(f"{stop.requested}: stopped at iteration {done} of {cfg.iterations}"))
    bar.close()
    seconds = elapsed()  # over all sessions of this run
    last = Step(end, cfg.iterations, end, cands, attack, history[-1] if history else {}, elapsed, finished_early)
    stats = {
        "method": method.name,
        "m": cands.m,
        "m0": cands.m0,
        "iterations_done": end,
        "finished": end == cfg.iterations or finished_early,
        "stopped_by_monitor": monitored,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(end, 1),
        "final_loss": history[-1] if history else None,
        "refit_residual": attack.refit_residual(cands) if refit else None,
        "normalisation": normalisation,
        **{h.key: h.finish(last, seconds) for h in hooks},
        **({"method_report": report} if (report := attack.report()) is not None else {}),
        **({"compile": compiled} if (compiled := attack.compile_report()) is not None else {}),
    }
    rec = Reconstruction(
        x=cands.x.detach().cpu().double().reshape(cands.m, *payload.spec.input_shape),
        multipliers=cands.multipliers.detach().cpu().double(),
        labels=None if cands.labels is None else cands.labels.detach().cpu(),
        ids=cands.ids.cpu(), parents=cands.parents.cpu(),
        mean=torch.as_tensor(payload.mean_chw(), dtype=torch.float64),
        method=method.name, config=config, history=history, stats=stats,
        artifacts={name: content for h in hooks for name, content in h.artifacts().items()})
    if store is not None:
        store.finish(rec)
    return rec


__all__ = ["METHODS", "RunStore", "run_attack"]
