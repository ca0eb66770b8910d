"""Running an attack: initialise, optimise with checkpoints, resume, write the candidates.

Output folder: ``config.json`` (method + every hyper-parameter + the victim's content hash + what the attacker
was given),
``candidates.npz`` (x in the victim's centred input space, shape (m, C, H, W); the fixed candidate labels y
where the method has them; the multipliers, (m,) or (m, K); candidate ids and parent ids), ``loss.json``
(history), ``candidates.png``, and
while running ``checkpoint.safetensors`` (one file: the candidate set and the run's state, see
:mod:`trainrecon.checkpoint` and :mod:`.candidates`).  A resumed run continues bit for bit where it stopped:
the optimiser state is saved with the iterate and nothing random happens after init.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_npz
from ..checkpoint import first_difference, fingerprint, folder_lock, load_checkpoint, save_checkpoint
from ..config import load_json, save_json, to_dict
from ..errors import Interrupted, TrainreconError
from ..runtime import StopRequest, progress, require_memory, resolve_dtype
from ..objective.candidates import CandidateSet
from .method import METHODS, method_for
from .normalisation import normalise
from .payload import Payload
from ..objective.hooks import AttackHook, Step


def default_m(payload: Payload) -> int:
    if not payload.n_train:
        raise TrainreconError("attack.m: the training-set size is not disclosed; pass the number of candidates (--m)")
    return 2 * payload.n_train


def same_run(saved: Any, current: dict[str, Any], cls) -> bool:
    """Whether a checkpoint's config record is this run's.  A field the saved record lacks (added to the
    config class after the checkpoint was written) matches when this run sets it to what the field meant before
    it existed (``cls.BEFORE``), or else to its default."""
    if not isinstance(saved, dict) or not isinstance(saved.get("attack"), dict):
        return False
    before = {**to_dict(cls()), **cls.BEFORE}
    attack = {**{k: v for k, v in current["attack"].items() if k not in saved["attack"] and v == before.get(k)},
              **saved["attack"]}
    return {**saved, "attack": attack} == current


#: everything a run writes into its folder (``trainrecon reconstruct`` refuses a folder holding anything else)
RUN_FILES = ("config.json", "candidates.npz", "loss.json", "candidates.png", "checkpoint.safetensors",
             "checkpoint.json", "splits.json", "split_images.npz", "*.tmp", "*.tmp.npz")


def check_run(payload: Payload, cfg, device: torch.device | str = "cpu", copies: int = 1) -> int:
    """What a run checks before any work, in one line each, for the config it will run with (the method's
    :meth:`~.method.Method.adapt`): the method against the victim (outputs, initial weights, input mean), the number of candidates m (default 2n; the method's constraints on it, such as Haim's
    even m) and the memory ``copies`` runs at once would need.  Returns m.  :func:`run_attack` calls it, and so
    does a sweep, once, before its first trial."""
    method = method_for(cfg)
    cfg, _ = method.adapt(cfg, payload.spec)  # what the run will use
    m = cfg.m or default_m(payload)
    m_max = int(cfg.split.max_factor * m) if cfg.split.enabled and cfg.split.mode == "grow" else m
    what = f"attack with m = {m_max} candidates" + (f", {copies} at once" if copies > 1 else "")
    require_memory(copies * attack_bytes(payload, m_max, cfg), what, device)
    method(payload, cfg).labels(m)  # refuses a victim the method cannot attack, and an m it cannot use
    return m


def attack_bytes(payload: Payload, m: int, cfg) -> float:
    """A generous estimate of an attack's peak memory: candidates with optimiser state, per-candidate
    activations of every layer (chunked when chunk_size > 0), and a few copies of the parameters."""
    spec = payload.spec
    n_params = spec.n_params()
    rows = min(m, cfg.chunk_size) if cfg.chunk_size else m
    item = 4 if cfg.dtype == "float32" else 8
    return item * (4 * m * spec.input_dim + 8 * rows * sum(spec.activation_sizes()) + 8 * n_params)


def run_attack(
    payload: Payload,
    cfg,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    resume: bool = False,
    log=print,
    stop_after: int | None = None,
    hooks: list[AttackHook] | tuple[AttackHook, ...] = (),
) -> dict[str, Any]:
    """Run the method that ``cfg``'s type belongs to on what the attacker is given; write results to ``out_dir``.

    ``payload`` is a :class:`~.payload.Payload` (a loaded ``Victim`` is reduced to one, n disclosed).  The folder
    is locked for the run.  ``resume`` continues the checkpoint in ``out_dir`` only when it was made by the same
    method and config on the same victim (content hash); Ctrl-C saves a checkpoint first.  ``stop_after`` ends
    the run early after that many iterations (leaving a checkpoint), for tests.  ``hooks``
    (:class:`~trainrecon.objective.hooks.AttackHook`) act on the run: sample splitting and the second-order
    report (:func:`trainrecon.refinement.standard_hooks`; :func:`trainrecon.reconstruct` is this with them attached), a
    sweep's pruning (a hook whose ``after_log`` returns True ends the run there, with its candidates written and
    ``stopped_by_monitor`` set).  A config field that a hook carries out (``split``) is refused when enabled
    without that hook.
    """
    if not isinstance(payload, Payload):
        payload = Payload.of(payload)
    method = method_for(cfg)
    for name in ("split", "merge"):
        if getattr(cfg, name).enabled and not any(h.implements == name for h in hooks):
            raise TrainreconError(f"attack.{name}.enabled: this refinement needs its hook "
                                  "(trainrecon.reconstruct attaches it; or pass trainrecon.refinement.standard_hooks)")
    out = Path(out_dir)
    m = check_run(payload, cfg, device)  # before the folder is made
    with folder_lock(out):
        return _reconstruct(payload, cfg, method, m, out, device, resume, log, stop_after, list(hooks))


def _reconstruct(payload: Payload, cfg, method, m: int, out: Path, device, resume: bool, log, stop_after,
                 hooks: list[AttackHook]) -> dict[str, Any]:
    cfg, adapted = method.adapt(cfg, payload.spec)
    dtype = resolve_dtype(cfg.dtype)
    cfg_record = {"method": method.name, "m": m, "attack": to_dict(cfg), "victim": payload.fingerprint()}
    run_id = fingerprint({"record": np.frombuffer(repr(cfg_record).encode(), dtype=np.uint8)})
    ck = out / "checkpoint.safetensors"
    legacy_json = out / "checkpoint.json"
    attacked, normalisation = normalise(payload, cfg.normalise)
    attack = method(attacked.to(torch.device(device), dtype), cfg)
    cands = attack.init(m)
    cands.runs = [run_id]
    opt_x, opt_m = attack.optimisers()
    start, history, seconds_before = 0, [], 0.0
    loaded = load_checkpoint(ck, legacy_json)
    if loaded is None and ((out / "config.json").is_file() or (out / "candidates.npz").is_file()):
        # results without a checkpoint (a copied run, or one killed before its first checkpoint): rerun only the
        # same run, never write over another one's
        earlier = load_json(out / "config.json") if (out / "config.json").is_file() else None
        earlier = {k: earlier.get(k) for k in cfg_record} if isinstance(earlier, dict) else None
        if earlier is None or not same_run(earlier, cfg_record, type(cfg)):
            diff = first_difference(earlier, cfg_record) if isinstance(earlier, dict) else "no config.json"
            raise TrainreconError(f"{out}: holds the results of another run ({diff}); choose a new folder")
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
        record = meta.get("candidates") or {"m0": m, "runs": [run_id]}
        cands = CandidateSet.from_tensors(state, record, labels=cands.labels).to(device, dtype)
        start, history = int(meta["iteration"]), list(meta["history"])
        seconds_before = float(meta.get("seconds", 0.0))
        for h in hooks:
            h.restore(meta)
        log(f"resuming from iteration {start}")
    save_json(out / "config.json", {**cfg_record, "payload": payload.record(), "normalisation": normalisation,
                                    "adapted": adapted})

    def checkpoint(it: int) -> None:
        meta = {k: v for h in hooks for k, v in h.state().items()}
        save_checkpoint(ck, cands.tensors(), {**meta, "iteration": it, "config": cfg_record, "history": history,
                                              "seconds": seconds_before + time.time() - t0,
                                              "candidates": cands.record()})
        legacy_json.unlink(missing_ok=True)

    t0 = time.time()
    bar = progress(cfg.iterations, method.name, initial=start)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    out_of_time = bool(cfg.max_seconds) and seconds_before >= cfg.max_seconds
    monitored = False
    if out_of_time:
        end = start
    with StopRequest() as stop:
        for it in range(start, end):
            values, gx, gm = attack.objective(it, cands).value_and_grad(cands.x, cands.multipliers)
            if not np.isfinite(values["total"]):
                raise TrainreconError(f"attack diverged at iteration {it} (loss {values['total']}); lower attack.lr")
            cands.x = opt_x.step(cands.x, gx, cands.state_x)
            cands.multipliers = opt_m.step(cands.multipliers, gm, cands.state_m)
            bar.update(1)
            done = it + 1
            step = Step(done, cfg.iterations, end, cands, attack, values)
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
            if done % cfg.checkpoint_every == 0 or done == end or stop.requested:
                checkpoint(done)
            if cfg.max_seconds and seconds_before + time.time() - t0 >= cfg.max_seconds and done < end:
                if not history or history[-1]["iteration"] != done:
                    history.append({"iteration": done, **values})
                checkpoint(done)
                end, out_of_time = done, True  # the wall-clock budget is spent: finish here
                break
            if stop.requested and done < end:
                bar.close()
                raise Interrupted(f"{stop.requested}: stopped at iteration {done} of {cfg.iterations} with a checkpoint "
                                  f"in {out}; resume with the same command and --resume")
    bar.close()
    seconds = seconds_before + time.time() - t0  # over all sessions of this run
    last = Step(end, cfg.iterations, end, cands, attack, history[-1] if history else {})
    result = {
        "method": method.name,
        "m": cands.m,
        "m0": cands.m0,
        "iterations_done": end,
        "finished": end == cfg.iterations or out_of_time,
        "stopped_by_max_seconds": out_of_time,
        "stopped_by_monitor": monitored,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(end, 1),
        "final_loss": history[-1] if history else None,
        "second_order": None,
        "refit_residual": attack.refit_residual(cands),
        "normalisation": normalisation,
        "splitting": None,
        "merging": None,
        **{h.key: h.finish(last, seconds) for h in hooks},
    }
    save_json(out / "loss.json", {"history": history, **result})
    for h in hooks:
        for name, content in h.artifacts().items():
            if name.endswith(".npz"):
                write_npz(out / name, **content)
            else:
                save_json(out / name, content)
    write_candidates(out / "candidates.npz", cands, payload.spec.input_shape,
                     {"victim": cfg_record["victim"], "method": method.name})
    if result["finished"]:
        from ..reports import candidate_grid

        candidate_grid(cands.x.detach().cpu().double().numpy().reshape(cands.m, *payload.spec.input_shape),
                       payload.mean_chw(), out / "candidates.png")
    return result


def write_candidates(path: Path, cands: CandidateSet, input_shape, origin: dict[str, str] | None = None) -> None:
    """candidates.npz: x (m, C, H, W) in centred space, multipliers, labels y (if any), ids and parents, and the
    ``origin`` it belongs to (``victim`` fingerprint and ``method``, as strings: :func:`trainrecon.checkpoint.origin`)."""
    arrays = {**{k: np.array(str(v)) for k, v in (origin or {}).items()},
              "x": cands.x.detach().cpu().double().numpy().reshape(cands.m, *input_shape),
              "multipliers": cands.multipliers.detach().cpu().double().numpy(),
              "ids": cands.ids.cpu().numpy(), "parents": cands.parents.cpu().numpy()}
    if cands.labels is not None:
        arrays["y"] = cands.labels.cpu().numpy()
    write_npz(path, **arrays)


__all__ = ["METHODS", "RUN_FILES", "check_run", "default_m", "run_attack"]
