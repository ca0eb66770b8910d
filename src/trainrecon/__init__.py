"""trainrecon: audit trained networks for training-data leakage by reconstructing the training set.

Layout by concept: ``data`` (formats, tasks), ``models`` (victims, stationarity forms), ``objective`` (the
weighted-sum objective, candidate sets, hooks), ``training`` (victims toward the KKT direction), ``attacks``
(methods and their loop), ``refinement`` (sample splitting), ``sweeps``, ``identifiability``, ``metrics``
(SSIM, matching, the honest headline, exposure), ``reports`` (pictures), ``audit_report`` (report.html),
``pipeline`` (folders) and ``cli``.

The names below are the library's front door:

* :func:`build_task` (:class:`TaskConfig`) -- a task's training images, held-out images and centring mean.
* :func:`train_kkt` (:class:`TrainConfig`) -- train a victim toward the KKT direction, in memory.
* :func:`reconstruct` -- run an attack (``HaimConfig``, ``BuzagloMulticlassConfig``, ``BuzagloRegressionConfig``,
  ``LooConfig``) on what the attacker is given (:class:`Payload`) with the refinements its config asks for.
* :func:`load_victim`, :func:`payload_from_folder` -- a victim folder, and what the threat model hands the attacker.
* :func:`score` -- score candidates against training and held-out images in memory: a :class:`Score` with the
  honest headline and its controls, the per-image exposure and its ROC, and the field's protocols.
"""

from .api import reconstruct
from .attacks import (BuzagloMulticlassConfig, BuzagloRegressionConfig, CandidateSet, HaimConfig, LooConfig,
                      METHODS, Payload, payload_from_folder)
from .data.tasks import TaskConfig, build_task
from .errors import TrainreconError
from .metrics.scoring import Score, score
from .models.victim import Victim, load_victim
from .training import TrainConfig, train_kkt

__version__ = "0.1.0"
__all__ = ["BuzagloMulticlassConfig", "BuzagloRegressionConfig", "CandidateSet", "HaimConfig", "LooConfig",
           "METHODS", "Payload", "Score", "TaskConfig", "TrainConfig", "TrainreconError", "Victim", "__version__",
           "build_task", "load_victim", "payload_from_folder", "reconstruct", "score", "train_kkt"]
