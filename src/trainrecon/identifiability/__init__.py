"""Identifiability of two-layer polynomial networks f(x) = sum_k a_k (w_k . x)^alpha (Shen et al. 2026).

* :mod:`.polynomial`: the networks, their data, training toward the KKT direction, the KKT residual.
* :mod:`.exact_kkt`: exact KKT points (neurons on Z-eigenvectors of the moment tensor), the test oracle.
* :mod:`.symmetric`: symmetric tensors and the monomial basis; :mod:`.jennrich`: CP decomposition.
* :mod:`.identify`: the certificate and the algebraic reconstruction; :mod:`.demos`; :mod:`.victims`.
"""

from .exact_kkt import ExactKKTPoint, build_exact_kkt, z_eigenpairs
from .certified import IDENTIFIED, NOT_CERTIFIED, IdentifyConfig, PolyNet, compare_to_truth, identify, poly_from_victim
from ..training.polynomial import PolyTrainConfig, train_polynomial
from .polynomial import PolyDataConfig, make_poly_data

__all__ = [
    "ExactKKTPoint", "build_exact_kkt", "z_eigenpairs", "IDENTIFIED", "NOT_CERTIFIED", "IdentifyConfig", "PolyNet",
    "compare_to_truth", "identify", "poly_from_victim", "PolyDataConfig", "PolyTrainConfig", "make_poly_data",
    "train_polynomial",
]
