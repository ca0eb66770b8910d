"""Which attack runs when none is named (``trainrecon reconstruct`` without ``--method``, ``--method auto``): the
method and settings that won on the bench for what the attacker is given (bench/RESULTS.md, "Networks trained as
people train them").

:func:`default_attack` looks at the payload at the threat level asked for (``given``) and returns the method's
name, the config fields it sets (beneath any the user gives) and why, which the run prints and records.  The
decision is made here once; a method's own defaults for a kind of victim (power victims, what remove_init
becomes) stay in its :meth:`~.method.Method.adapt`.
"""

from __future__ import annotations

from typing import Any

from ..models.recipe import LIKELIHOOD_LOSSES
from .payload import Payload

#: the winners per threat level on networks whose first layer is not dense over the input (bench/RESULTS.md,
#: "Networks trained as people train them"): method, the fields it runs with, and the reason the run prints
WINNERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "recipe": ("simulation", {"tv": 0.1},
               "theta_0 and the recipe are given (its batch order is not): the candidates, started where Loo's NTK "
               "attack ends (a quarter of the budget), are trained from theta_0 by a simulation of the recipe and its "
               "weight change matched to the real one, with a total-variation prior (the network's first layer is not "
               "dense over the input, so the first layer's form does not apply)"),
    "init": ("loo-ntk", {"remove_init": "project", "kernel_at": "final", "tv": 0.1, "iterations": 8000},
             "theta_0 is given: Loo's NTK form on the displacement theta_T - theta_0, blind to theta_0's own "
             "direction (weight decay), with a total-variation prior (the network's first layer is not dense over the "
             "input, so the first layer's form does not apply)"),
}


#: at the recipe level, where the recipe records its batches (their order's seed, or the full batch): the
#: simulation replays the training's own first epochs (bench/RESULTS.md, "Replaying the recipe's batches")
REPLAY: tuple[dict[str, Any], str] = (
    {"replay_epochs": 20, "labels": "learned", "warm_start": "none", "tv": 0.1},
    "theta_0 and the recipe with its batch order are given: the candidates, one per training image and each with a "
    "learned label, are trained from theta_0 by a replay of the recipe's first 20 epochs, batch by batch in its "
    "recorded order, and the replayed weight change matched to the real one, with a total-variation prior (on the "
    "bench as many images as the coarse simulation or more, and the objective whose truth-start control held most "
    "of the SGD-trained CNN's training set: 19 of 50 over 834 iterations, against 6 for the coarse simulation)")


#: with theta_0 (with or without the recipe) on a network whose first layer is dense over the input (an MLP):
#: Loo's form on that layer's displacement alone (bench/RESULTS.md, "The first layer's displacement"; its
#: iterations: "The first layer's form stopped at 4000 iterations", past which the fit goes on into the noise),
#: ten independent restarts merged by their consensus ("Restarts and their consensus")
FIRST_LAYER: tuple[dict[str, Any], str] = (
    {"remove_init": "project", "kernel_at": "final", "deep_weight": 1e-6, "beta_start": 30.0, "beta_max": 30.0,
     "box_weight": 300.0, "init_scale": 0.001, "lr": 0.01, "tv": 0.1, "iterations": 4000, "restarts": 10},
    "theta_0 is given and the network's first layer is dense over the input: Loo's NTK form fitted to that layer's "
    "displacement W_T - W_0 (the layers after it counted 1e-6 times: any images explain their displacement about "
    "as well), with a sharp surrogate (softplus at beta 30), a firm pixel box and a total-variation prior, ten "
    "independent restarts kept where they agree (the pixel median of each image several restarts find); on the "
    "bench's MLPs, SGD- and Adam-trained, as many images as the simulation of the recipe or more")


#: the first layer's form where the recipe names Adam (or AdamW): twice the restarts, each half as long (the same
#: work); one descent on the Adam MLP recovers as many at 2000 iterations as at 4000 and fewer after, and the more
#: restarts the more their consensus keeps (bench/RESULTS.md, "Restarts and their consensus")
ADAM_FIRST_LAYER: tuple[dict[str, Any], str] = (
    {"iterations": 2000, "restarts": 20},
    "; the recipe names Adam: twenty restarts of 2000 iterations (one descent on an Adam-trained network gains "
    "nothing past 2000 iterations, and more restarts agree on more images)")


def default_attack(payload: Payload, given: str = "all") -> tuple[str, dict[str, Any], str]:
    """(method name, config fields, reason) for ``payload`` at threat level ``given`` (``all``: everything it
    has).  With theta_0 on a network whose first layer is dense over the input: Loo's form on that layer
    (:data:`FIRST_LAYER`; at the recipe level, where the recipe names Adam, with :data:`ADAM_FIRST_LAYER`'s
    restarts).  Otherwise with the recipe: the simulation, replaying the training's batches where the recipe
    records them and its loss is a likelihood (:data:`REPLAY`: its learned labels need one).  With only
    the weights: Haim's KKT attack for one output, Buzaglo's multiclass attack for several."""
    at = payload.at_level(given, "--given")
    level = at.level
    if level in ("init", "recipe") and at.spec.first_layer_dense():
        fields, reason = FIRST_LAYER
        if level == "recipe" and at.recipe.adaptive:
            fields, reason = {**fields, **ADAM_FIRST_LAYER[0]}, reason + ADAM_FIRST_LAYER[1]
        return "loo-ntk", dict(fields, given=given), reason
    if level == "recipe" and at.n_train and at.recipe.records_order(at.n_train) and at.recipe.loss in LIKELIHOOD_LOSSES:
        fields, reason = REPLAY
        return "simulation", dict(fields, given=given), reason
    if level in WINNERS:
        name, fields, reason = WINNERS[level]
        return name, dict(fields, given=given), reason
    if payload.spec.n_outputs == 1:
        return "haim", {"given": given}, "only the weights are given and the network has one output: Haim's KKT attack"
    return ("buzaglo-multiclass", {"given": given},
            f"only the weights are given and the network has {payload.spec.n_outputs} outputs: Buzaglo's multiclass "
            "KKT attack")


__all__ = ["ADAM_FIRST_LAYER", "FIRST_LAYER", "REPLAY", "WINNERS", "default_attack"]
