"""trainrecon: audit trained networks for training-data leakage by reconstructing the training set.

Layout by concept: ``data`` (formats, tasks), ``models`` (victims, stationarity forms), ``objective`` (the
weighted-sum objective, candidate sets, hooks), ``training`` (victims toward the KKT direction), ``attacks``
(methods and their loop), ``refinement`` (sample splitting), ``sweeps``, ``identifiability``, ``metrics``
(SSIM, matching, the honest headline), ``reports`` (pictures), ``pipeline`` (folders) and ``cli``.

The names below are the library's front door:

* :func:`reconstruct` -- run an attack (``HaimConfig``, ``BuzagloMulticlassConfig``, ``BuzagloRegressionConfig``,
  ``LooConfig``) on what the attacker is given (:class:`Payload`) with the refinements its config asks for.
* :func:`load_victim`, :func:`payload_from_folder` -- a victim folder, and what the threat model hands the attacker.
"""

from .api import reconstruct
from .attacks import (BuzagloMulticlassConfig, BuzagloRegressionConfig, CandidateSet, HaimConfig, LooConfig,
                      METHODS, Payload, payload_from_folder)
from .errors import TrainreconError
from .models.victim import Victim, load_victim

__version__ = "0.1.0"
__all__ = ["BuzagloMulticlassConfig", "BuzagloRegressionConfig", "CandidateSet", "HaimConfig", "LooConfig",
           "METHODS", "Payload", "TrainreconError", "Victim", "__version__", "load_victim", "payload_from_folder",
           "reconstruct"]
