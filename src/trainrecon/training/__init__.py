"""Victim trainers, one per stationarity form an attack inverts.

* :mod:`.kkt`: logistic / cross-entropy toward the KKT direction of max-margin (Haim, Buzaglo multiclass).
* :mod:`.regression`: MSE / Huber with weight decay to a stationary point (Buzaglo regression).
* :mod:`.ntk`: wide MLPs trained briefly by SGD with momentum, theta_0 saved (Loo et al.).
* :mod:`.polynomial`: two-layer x^alpha networks by loss-normalised GD toward the KKT direction (identifiability).
* How far a victim is from the form its attack assumes (the reconstruction floor) is
  :meth:`trainrecon.models.stationarity.StationarityForm.residual`.
"""

from typing import Any, Callable, NamedTuple

from ..registry import Registry
from .common import NetConfig
from .kkt import TrainConfig, kkt_residual, log_logistic, margins, train_binary, train_kkt
from .ntk import NTKTrainConfig, train_ntk
from .polynomial import PolyTrainConfig, fit_polynomial, train_polynomial
from .regression import RegressionTrainConfig, train_regression


class Trainer(NamedTuple):
    """A registered trainer: its config class and its fit function ``fit(cfg, x, y, **options) -> (spec, params,
    summary)``."""

    config: type
    fit: Callable[..., Any]


#: the victim trainers by name (``train --trainer``, experiment files)
TRAINERS: Registry[Trainer] = Registry("trainer", config_of=lambda t: t.config)
TRAINERS.register("kkt", Trainer(TrainConfig, train_kkt))
TRAINERS.register("regression", Trainer(RegressionTrainConfig, train_regression))
TRAINERS.register("ntk", Trainer(NTKTrainConfig, train_ntk))
TRAINERS.register("polynomial", Trainer(PolyTrainConfig, fit_polynomial))

__all__ = [
    "NetConfig", "TrainConfig", "RegressionTrainConfig", "NTKTrainConfig", "PolyTrainConfig", "TRAINERS", "Trainer",
    "train_kkt", "train_binary", "train_regression", "train_ntk", "train_polynomial", "fit_polynomial",
    "kkt_residual", "log_logistic", "margins",
]
