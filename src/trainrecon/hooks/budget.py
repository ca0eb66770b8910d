"""An attack run's wall-clock budget (``attack.max_seconds``) as a hook on its loop."""

from __future__ import annotations

from ..errors import TrainreconError
from .interface import AttackHook, Reports, Step


class TimeBudget(AttackHook):
    """An attack run's wall-clock budget (``attack.max_seconds``), as a hook on its loop: once the run's seconds,
    summed over every session of a resumed run (the checkpoint keeps them), reach ``max_seconds`` before its last
    iteration, the run ends after that step as a finished run (its iteration logged, a checkpoint and the results
    written); a resumed run whose budget is already spent ends before its first step.  ``loss.json`` says so in
    ``stopped_by_max_seconds``."""

    key = "stopped_by_max_seconds"
    implements = "max_seconds"

    def __init__(self, max_seconds: float) -> None:
        if not max_seconds > 0:
            raise TrainreconError(f"attack.max_seconds: a budget must be positive, got {max_seconds}")
        self.max_seconds = float(max_seconds)

    def before_loop(self, step: Step) -> None:
        if step.elapsed() >= self.max_seconds:
            step.finish_here()

    def after_step(self, step: Step) -> bool:
        if step.done < step.end and step.elapsed() >= self.max_seconds:
            step.finish_here()
        return False

    def spent(self, step: Step) -> float:
        """The share of ``max_seconds`` spent (summed over every session of the run)."""
        return step.elapsed() / self.max_seconds

    def finish(self, step: Step, seconds: float) -> bool:
        """Whether the budget ended the run (``step.finish_now`` of the run's last step)."""
        return bool(step.finish_now)


def time_budget(max_seconds: float) -> list[AttackHook]:
    """The hooks a run with this ``attack.max_seconds`` gets: a :class:`TimeBudget`, or for 0 (no limit) one that
    reports ``stopped_by_max_seconds: false``."""
    return [TimeBudget(max_seconds) if max_seconds else Reports(TimeBudget.key, False)]


__all__ = ["TimeBudget", "time_budget"]
