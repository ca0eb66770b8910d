"""trainrecon: audit trained networks for training-data leakage by reconstructing the training set.

Layout by concept: ``data`` (formats, tasks), ``models`` (MLPs, victim folders), ``training`` (victims
toward the KKT direction), ``attacks`` (objectives of the weighted-sum form and their runner), ``metrics``
(SSIM, matching, evaluation), ``reports`` (pictures), ``pipeline`` and ``cli``.
"""

from .errors import TrainreconError

__version__ = "0.1.0"
__all__ = ["TrainreconError", "__version__"]
