"""trainrecon: audit trained networks for training-data leakage by reconstructing the training set.

Layout by concept: ``data`` (formats, tasks), ``models`` (victims, stationarity forms), ``objective`` (the
weighted-sum objective with its parts s, u = dF/ds and the per-candidate term, candidate sets, hooks),
``training`` (victims toward the KKT direction), ``attacks`` (methods and their loop), ``refinement`` (sample
splitting, merging), ``sweeps``, ``identifiability``, ``metrics`` (SSIM, matching, the honest headline,
exposure), ``reconstruction`` (what an attack returns), ``runfolder`` (an attack's folder: lock, identity,
checkpoints, files), ``registry`` (methods, trainers and scoring protocols by name), ``reports`` (pictures),
``audit_report`` (report.html), ``pipeline`` (folders) and ``cli``.

The names below are the library's front door; everything works on tensors and arrays in memory, and the
commands are clients of it:

* :func:`build_task` (:class:`TaskConfig`) -- a task's training images, held-out images and centring mean.
* :func:`train_kkt` (:class:`TrainConfig`) -- train a victim toward the KKT direction, in memory.
* :func:`load_victim`, :func:`payload_from_folder` -- a victim folder (:class:`Victim`), and what the threat model
  hands the attacker (:class:`Payload`); :func:`victim_from_module` -- a victim from a user's ``nn.Module``
  object (checked against it), which :func:`reconstruct` attacks directly.
* :func:`reconstruct` -- run an attack (:class:`HaimConfig`, :class:`BuzagloMulticlassConfig`,
  :class:`BuzagloRegressionConfig`, :class:`LooConfig`, :class:`SimulationConfig`; by name: :data:`METHODS`; the
  bench's winner for what the attacker is given: :func:`default_attack`) with the refinements its config asks
  for, and return a :class:`Reconstruction` (candidates, multipliers, labels, history, second-order report); in
  memory, or through a :class:`RunFolder` that locks, checkpoints, resumes and writes it.
* :class:`Recipe` -- how a network was trained (optimiser, loss, batch size, epochs): with its initial weights,
  what the higher threat levels give an attacker (``Payload(..., init_params=..., recipe=...)``).
* :func:`score` -- score candidates (or a :class:`Reconstruction`) against training and held-out images: a
  :class:`Score` with the honest headline and its controls, the per-image exposure and its ROC, and the field's
  protocols.
"""

import importlib
from typing import Any

#: the front door's names and the module each lives in, imported on first use (PEP 562): ``import trainrecon``
#: stays cheap, so the command line can install its Ctrl-C handler before torch is imported
_WHERE = {
    "reconstruct": ".api",
    **dict.fromkeys(["BuzagloMulticlassConfig", "BuzagloRegressionConfig", "CandidateSet", "HaimConfig", "LooConfig",
                     "METHODS", "Payload", "SimulationConfig", "payload_from_folder"], ".attacks"),
    "default_attack": ".attacks.choice",
    "TaskConfig": ".data.tasks", "build_task": ".data.tasks",
    "TrainreconError": ".errors",
    "Score": ".metrics.scoring", "score": ".metrics.scoring",
    "victim_from_module": ".models.user_weights",
    "Recipe": ".models.recipe",
    "Victim": ".models.victim", "load_victim": ".models.victim",
    "Reconstruction": ".reconstruction",
    "MergeConfig": ".refinement.settings", "SplitConfig": ".refinement.settings",
    "RunFolder": ".runfolder",
    "TrainConfig": ".training", "train_kkt": ".training",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"
__all__ = ["BuzagloMulticlassConfig", "BuzagloRegressionConfig", "CandidateSet", "HaimConfig", "LooConfig",
           "METHODS", "MergeConfig", "Payload", "Recipe", "Reconstruction", "RunFolder", "Score", "SimulationConfig",
           "SplitConfig", "TaskConfig", "TrainConfig", "TrainreconError", "Victim", "__version__", "build_task",
           "default_attack", "load_victim", "payload_from_folder", "reconstruct", "score", "train_kkt",
           "victim_from_module"]
