"""The researcher's path as functions, one module per concern; the CLI (``cli.py``) is a thin layer over these.

* :mod:`.victims`: train a victim folder.
* :mod:`.evaluation`: score candidates against the training set, with every control.
* :mod:`.experiments`: one experiment file = train + attack + evaluate (+ a shadow victim), resumable.
* :mod:`.identify`: certified reconstruction from polynomial victims, scored apart.
* :mod:`.demos`: the offline demos.

Each writes its config, metrics (JSON) and pictures (PNG) into its output folder.
"""

from .demos import DEMO_ATTACK, DEMO_TASK, DEMO_TRAIN, demo, identify_demo
from .evaluation import evaluate_run, load_truth, read_candidates
from .experiments import Experiment, run_experiment
from .identify import identify_run
from .victims import train_victim

__all__ = ["DEMO_ATTACK", "DEMO_TASK", "DEMO_TRAIN", "Experiment", "demo", "evaluate_run", "identify_demo",
           "identify_run", "load_truth", "read_candidates", "run_experiment", "train_victim"]
