"""Refinement of a running attack: sample splitting (:mod:`.splitting`), merging of near-duplicate candidates
(:mod:`.merging`), their settings (:mod:`.config`) and the hooks that attach them, the second-order report and
the collapse count to a run (:mod:`.hooks`)."""

from .settings import MergeConfig, SplitConfig
from .hooks import CollapseHook, MergingHook, SecondOrderHook, SplittingHook, standard_hooks

__all__ = ["CollapseHook", "MergeConfig", "MergingHook", "SecondOrderHook", "SplitConfig", "SplittingHook", "standard_hooks"]
