"""The attack's own positive control: the same attack, started at the training images.

The evaluation's positive control (the true images scored as candidates) shows that the *protocol* can see a
leak.  It says nothing of the *attack*: a headline of 0 may mean that the weights leak nothing, or that this
attack's objective does not single out this victim's training set (its minimisers lie elsewhere, as on
convolutional victims and on networks trained from PyTorch's default init; bench/RESULTS.md).  This control
tells the two apart.  It reruns the attack that made the scored candidates (method and config from the run's
``config.json``, ``adapt`` off: the record is already the adapted config) for as many iterations as the run
did (fewer would overstate what the objective holds), with

    x_j(0) = x_i - mean   for each training image i, in a slot j of its own label (where the method fixes labels),

the other m - n slots at the attack's own random start; and once more from the first n held-out images (images
the victim never saw).  ``kept`` counts the start images still similar to a candidate at the end (matched one to
one, the headline's similarity above its threshold: the headline's first clause); the run from the training images
is also scored by the whole headline.

* ``kept`` < n/4: the objective itself moves the training images away, so this attack cannot see a leak in this
  victim, and its headline (whatever it is) is no evidence of safety;
* held-out kept >= kept / 2: the objective holds images the victim never saw about as well: it does not
  single out the training set (any digit-like set fits the equations), and a low headline is no evidence of
  safety either;
* ``kept`` >= 3n/4 and far fewer held-out images kept: the objective singles out the training set; a low
  headline means the attack did not find it from its random start (an optimisation failure);
* otherwise it holds part of the training set: a low headline is weak evidence of safety.

Whatever the counts, the control also evaluates the attack's objective at the training images, at them plus noise
of 1e-6, 1e-4 and 1e-2 per pixel, and at the unseen images (``objective``).  Where noise of 1e-4, which no
similarity measure here can see, takes it half way to its value at the unseen images (:func:`chaotic`), the
reading adds that the objective is chaotic there: its minimum at the training set is too narrow for any descent to
stay in, let alone find (a training whose final weights such noise changes: the SGD-trained CNN of bench/RESULTS.md,
whose training amplifies it from its first epochs on, most in a loss spike in its eleventh).

It uses the training images, so it belongs to evaluation, never to the attack.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import reconstruct
from ..attacks.method import METHODS
from ..attacks.payload import Payload
from ..config import from_dict, load_json
from ..errors import TrainreconError
from ..provenance import recorded_fields
from ..hooks.start import StartAt
from ..metrics.protocols import preferred, score_pairs
from ..metrics.headline import HeadlineRule, one_to_one
from ..metrics.scoring import score
from ..models.victim import Victim


#: the noise levels (per pixel, images in [0, 1]) at which the control evaluates the attack's objective around the
#: training images (:class:`~trainrecon.hooks.start.StartAt`), and the one that decides whether it is chaotic there
NOISE = (1e-6, 1e-4, 1e-2)
CHAOS_LEVEL = 1e-4


def chaotic(at_training: dict[str, float], at_unseen: float | None) -> bool:
    """Whether the objective is chaotic at the training images: noise of :data:`CHAOS_LEVEL` per pixel (invisible
    to the headline's similarity) takes it at least half way from its value there, J(X_train), to its value at
    images the victim never saw, J(X_unseen) > J(X_train):

        J(X_train + s E) - J(X_train) >= (J(X_unseen) - J(X_train)) / 2,   s = CHAOS_LEVEL."""
    v0, vs = at_training.get("0"), at_training.get(repr(CHAOS_LEVEL))
    if at_unseen is None or v0 is None or vs is None:  # not measured, or not finite
        return False
    return at_unseen > v0 and vs - v0 >= 0.5 * (at_unseen - v0)


def _run_from(payload: Payload, cfg, images: np.ndarray, labels: np.ndarray | None, mean: np.ndarray, shape,
              device: str, noise: tuple[float, ...] = ()):
    """The attack run from ``images`` (raw, (k, C, H, W)) in slots of their labels: (its Reconstruction, how many
    images started (each in every restart's block), the per-image similarity of each start image to its candidate
    at the end: matched one to one as the headline matches (so splitting, merging or the restarts' consensus, which
    re-index candidates, do not matter), scored by the headline's similarity, classic SSIM where defined, else the
    paper's, after its preprocessing; the objective at the start and at the start plus each level of ``noise``,
    :attr:`StartAt.values`)."""
    ref = torch.as_tensor(np.asarray(images, dtype=np.float64).reshape(len(images), *shape))
    mu = torch.as_tensor(mean.reshape(shape))
    hook = StartAt((ref - mu).reshape(len(ref), -1), labels, noise)
    rec = reconstruct(payload, cfg, device=device, log=lambda *a: None, hooks=[hook])
    ref = ref[: hook.started]
    sim = preferred(score_pairs(ref, rec.x, mu, one_to_one(ref, rec.x, mu)))
    return rec, hook.started, sim, hook.values


def run_record(run_dir: str | Path) -> dict[str, Any]:
    """The attack run's config.json record (method, m, attack config), refused in one line when ``run_dir`` is not
    an attack run folder or its record names no known method; :func:`evaluate_run` asks before any work."""
    cfg_file = Path(run_dir) / "config.json"
    if not cfg_file.is_file():
        raise TrainreconError(f"--truth-start: {run_dir} is not an attack run folder (no config.json)")
    record = load_json(cfg_file)
    if not isinstance(record, dict) or not isinstance(record.get("attack"), dict) or not isinstance(record.get("m"), int):
        raise TrainreconError(f"{cfg_file}: not an attack run's record (needs 'method', 'm' and 'attack')")
    if record.get("method") not in METHODS:
        raise TrainreconError(f"{cfg_file}: names no known method ({record.get('method')!r})")
    return record


def truth_start_control(victim: Victim, run_dir: str | Path, x_train: np.ndarray, y_train: np.ndarray | None,
                        x_heldout: np.ndarray | None, mean: np.ndarray, iterations: int | None = None,
                        rule: HeadlineRule = HeadlineRule(), device: str = "cpu", log=print) -> dict[str, Any]:
    """Run the control (module docstring) for the attack run in ``run_dir`` on ``victim`` and return its record:
    for the run from the training images, how many it ``kept`` (similarity to their start above the rule's
    threshold) and how many the headline ``recovered``; for the run from the first n held-out images (when
    given), how many it kept; after ``iterations`` iterations (default: as many as the run did, from its
    loss.json, else its config), with what the run chose fixed (:meth:`~trainrecon.attacks.method.Method.replayed`:
    the simulation's searched learning rate, not searched again); the final relative stationarity of each; seconds;
    what it means (``reading``)."""
    record = run_record(run_dir)
    method, cfg_file = record["method"], Path(run_dir) / "config.json"
    Config = METHODS[method].Config
    base = from_dict(Config, recorded_fields(Config, record["attack"]), f"{cfg_file}: attack")
    loss = Path(run_dir) / "loss.json"
    summary = load_json(loss) if loss.is_file() else None
    summary = summary if isinstance(summary, dict) else {}
    report = summary.get("method_report")
    base = METHODS[method].replayed(base, report if isinstance(report, dict) else None)  # what the run chose
    if iterations is None:
        done = summary.get("iterations_done")
        iterations = done if isinstance(done, int) and done > 0 else base.iterations
    if iterations < 1:
        raise TrainreconError(f"--truth-start: needs a number of iterations >= 1, got {iterations}")
    cfg = dataclasses.replace(base, iterations=iterations, adapt=False, m=record["m"], max_seconds=0.0)
    n_given = (record.get("payload") or {}).get("n_train")
    payload = Payload.of(victim, disclose_n=isinstance(n_given, int))
    shape = tuple(victim.spec.input_shape)
    t0 = time.time()
    n = len(x_train)
    rec, started, sim, at_training = _run_from(payload, cfg, x_train, y_train, mean, shape, device, NOISE)
    head = score(rec, x_train, x_heldout, mean, y_train, rule=rule).metrics["headline"]
    final = lambda r: (r.history[-1] if r.history else {}).get("relative_stationarity")  # noqa: E731
    out: dict[str, Any] = {
        "iterations": iterations, "method": method, "n": n, "threshold": rule.threshold,
        "training": {"started": started, "kept": int((sim > rule.threshold).sum()),
                     "recovered": int(head["recovered"]), "relative_stationarity": final(rec)},
        "heldout": None}
    at_unseen = None
    if x_heldout is not None and len(x_heldout) >= n:
        # the same attack from n images the victim never saw, in the slots the training images took (their labels
        # are unknown); each scored by its similarity to its own start
        rec_h, started_h, sim_h, at_unseen = _run_from(payload, cfg, x_heldout[:n], y_train, mean, shape, device)
        out["heldout"] = {"started": started_h, "kept": int((sim_h > rule.threshold).sum()),
                          "relative_stationarity": final(rec_h)}
    v_unseen = None if at_unseen is None else at_unseen.get("0")
    out["objective"] = {"training": at_training, "unseen": v_unseen, "chaos_level": CHAOS_LEVEL,
                        "chaotic": chaotic(at_training, v_unseen)}
    kept, kept_h = out["training"]["kept"], (out["heldout"] or {}).get("kept")
    if kept < 0.25 * n:
        reading = ("this attack's objective moves the training images away: it cannot see a leak in this victim, and "
                   "its headline is no evidence of safety")
        if not base.init_tolerance and not METHODS[method].form.target_removes_init:
            reading += ("; a network trained from PyTorch's default init and saved as trained still carries that init: "
                        "rerun the attack with attack.init_tolerance = 1")
    elif kept_h is not None and kept_h >= 0.5 * kept:
        reading = ("this attack's objective holds images the victim never saw about as well as its training images: "
                   "it does not single out the training set, and a low headline is no evidence of safety")
    elif kept >= 0.75 * n:
        reading = ("this attack's objective singles out the training set: a low headline means the attack did not "
                   "find it from its random start")
    else:
        reading = "this attack's objective holds only part of the training set: a low headline is weak evidence of safety"
    if out["objective"]["chaotic"]:
        v0, vs = at_training["0"], at_training[repr(CHAOS_LEVEL)]
        reading += (f"; and it is chaotic at the training set: noise of {CHAOS_LEVEL:g} per pixel, invisible to the "
                    f"headline, takes it from {v0:.3g} to {vs:.3g} (at images the victim never saw: {v_unseen:.3g}), "
                    "so no descent stays at the training images, whatever its step")
    out["kept"], out["heldout_kept"], out["reading"] = kept, kept_h, reading
    out["seconds"] = time.time() - t0
    unseen = "" if kept_h is None else f", and of {n} images it never saw {kept_h}"
    log(f"truth-start control ({iterations} iterations from the images themselves): the attack keeps {kept} of the "
        f"{n} training images{unseen}: {reading}")
    return out
