"""Refinement of a running attack: sample splitting (:mod:`.splitting`), merging of near-duplicate candidates
(:mod:`.merging`) and their settings (:mod:`.settings`); the hooks that attach them to a run, with the
second-order report and the collapse count, are in :mod:`trainrecon.hooks.refinement`."""

from .settings import MergeConfig, SplitConfig

__all__ = ["MergeConfig", "SplitConfig"]
