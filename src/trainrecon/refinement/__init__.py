"""Refinement of a running attack: sample splitting (:mod:`.splitting`) and its settings (:mod:`.config`)."""

from .config import SplitConfig

__all__ = ["SplitConfig"]
