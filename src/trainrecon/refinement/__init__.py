"""Refinement of a running attack: sample splitting (:mod:`.splitting`), its settings (:mod:`.config`) and the
hooks that attach it and the second-order report to a run (:mod:`.hooks`)."""

from .config import SplitConfig
from .hooks import SecondOrderHook, SplittingHook, standard_hooks

__all__ = ["SecondOrderHook", "SplitConfig", "SplittingHook", "standard_hooks"]
