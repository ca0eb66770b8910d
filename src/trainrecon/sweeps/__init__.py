"""Hyper-parameter sweeps (optuna): a study of resumable attack runs, shared by workers through a journal file or
a database, scored by an attacker-side quantity (:mod:`.study`)."""

from .study import SCORE, SweepConfig, load_study, read_trials, reap, study_name, summary, work

__all__ = ["SCORE", "SweepConfig", "load_study", "read_trials", "reap", "study_name", "summary", "work"]
