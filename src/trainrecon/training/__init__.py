"""Victim trainers, one per stationarity form an attack inverts.

* :mod:`.kkt`: logistic / cross-entropy toward the KKT direction of max-margin (Haim, Buzaglo multiclass).
* :mod:`.regression`: MSE / Huber with weight decay to a stationary point (Buzaglo regression).
* :mod:`.ntk`: wide MLPs trained briefly by SGD with momentum, theta_0 saved (Loo et al.).
* How far a victim is from the form its attack assumes (the reconstruction floor) is
  :meth:`trainrecon.models.stationarity.StationarityForm.residual`.
"""

from .common import NetConfig
from .kkt import TrainConfig, kkt_residual, log_logistic, margins, train_binary, train_kkt
from .ntk import NTKTrainConfig, train_ntk
from .regression import RegressionTrainConfig, train_regression

TRAINERS = {
    "kkt": (TrainConfig, train_kkt),
    "regression": (RegressionTrainConfig, train_regression),
    "ntk": (NTKTrainConfig, train_ntk),
}

__all__ = [
    "NetConfig", "TrainConfig", "RegressionTrainConfig", "NTKTrainConfig", "TRAINERS",
    "train_kkt", "train_binary", "train_regression", "train_ntk",
    "kkt_residual", "log_logistic", "margins",
]
