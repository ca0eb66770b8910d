"""Planning a run: what it gets, decided once before any work.

:func:`plan_run` takes what the attacker is given and a config and decides, once, into a :class:`RunPlan`: the
payload at the config's threat level, the method, the config adapted to this victim
(:meth:`~.method.Method.adapt`) with the record of what was adapted and why, the number of candidates m, and the
checks before any work (the method against the victim, m, memory).  :meth:`RunPlan.with_hooks` attaches the hooks
the run's config needs (:func:`trainrecon.reconstruct` attaches the standard ones); the loop
(:func:`~.runner.run_attack`) runs a plan and never adapts a config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TrainreconError
from ..hooks.interface import AttackHook
from .. import runtime
from .method import AttackConfig, Method, method_for
from .normalisation import normalise
from .payload import Payload


def default_m(payload: Payload, method: type[Method] | None = None) -> int:
    """The default number of candidates, the method's ``candidates_per_sample`` times n (2n; n for the training
    simulation, whose candidates stand in for the training set one to one); refused in one line when n is not
    disclosed."""
    if not payload.n_train:
        raise TrainreconError("attack.m: the training-set size is not disclosed; pass the number of candidates (--m)")
    return (2 if method is None else method.candidates_per_sample) * payload.n_train


@dataclass(frozen=True)
class RunPlan:
    """What a run gets, decided once before any work (:func:`plan_run`) and handed to the loop: the ``payload`` at
    the config's threat level, the ``method``, the config this victim's run uses (``cfg``,
    :meth:`~.method.Method.adapt`) with the record of what was adapted and why (``adapted``, config.json's), the
    number of candidates ``m`` (checked with the memory it needs), the payload the attack runs on (``attacked``:
    theta / kappa where the victim is normalised, :func:`~.normalisation.normalise`) with its record
    (``normalisation``), and the ``hooks`` attached to the loop."""

    payload: Payload
    method: type[Method]
    cfg: AttackConfig
    adapted: dict[str, Any] | None
    m: int
    attacked: Payload
    normalisation: dict[str, Any]
    hooks: tuple[AttackHook, ...] = ()

    def with_hooks(self, hooks) -> "RunPlan":
        """This plan with ``hooks`` attached; refused in one line when the config turns on a field that a hook
        carries out (:meth:`~.method.AttackConfig.needs_hooks`) and no hook implements it."""
        hooks = tuple(hooks)
        for field, name in self.cfg.needs_hooks():
            if not any(h.implements == name for h in hooks):
                raise TrainreconError(f"attack.{field}: this needs its hook (trainrecon.reconstruct attaches it; or "
                                      "pass trainrecon.hooks.run_hooks)")
        return dataclasses.replace(self, hooks=hooks)


def plan_run(payload: Payload, cfg: AttackConfig, device: torch.device | str = "cpu", copies: int = 1) -> RunPlan:
    """The plan of a run (no hooks yet: :meth:`RunPlan.with_hooks`), with what a run checks before any work, in
    one line each, for the config it will run with: the threat level the config asks for (``given``) against
    what the victim has; the method against the victim (outputs, initial weights, input mean); the number of
    candidates m (default 2n; the method's constraints on it, such as Haim's even m) and the memory ``copies``
    runs at once would need; and the scale the attack runs at.  :func:`trainrecon.reconstruct` plans every run
    here, and a sweep, once, before its first trial."""
    if not isinstance(payload, Payload):
        payload = Payload.of(payload)
    payload = payload.at_level(cfg.given)  # what this threat level discloses, and nothing more
    method = method_for(cfg)
    run_cfg, adapted = method.adapt(cfg, payload, device)
    m = _check(payload, method, run_cfg, device, copies)
    attacked, normalisation = normalise(payload, run_cfg.normalise)
    return RunPlan(payload, method, run_cfg, adapted, m, attacked, normalisation)


def _check(payload: Payload, method: type[Method], cfg: AttackConfig, device, copies: int = 1) -> int:
    m = cfg.m or default_m(payload, method)
    if cfg.restarts > 1:
        acting = [f for f, on in (("split", cfg.split.enabled), ("merge", cfg.merge.enabled),
                                  ("solve_multipliers_every", cfg.solve_multipliers_every)) if on]
        if acting:
            raise TrainreconError(f"attack.restarts: {cfg.restarts} independent descents cannot take attack."
                                  f"{acting[0]}, which acts on the whole candidate set; set restarts 1 or turn it off")
    m_max = cfg.largest_m(m)
    what = f"attack with m = {m_max} candidates" + (f", {copies} at once" if copies > 1 else "")
    # each of the copies plans for the memory free now, as if alone (a sweep's workers do)
    need = method.memory_bytes(payload, m_max, cfg, runtime.available_bytes(device))
    runtime.require_memory(copies * need, what, device)
    method(payload, cfg).labels(m)  # refuses a victim the method cannot attack, and an m it cannot use
    return m


__all__ = ["RunPlan", "default_m", "plan_run"]
