"""User-facing errors: one line, naming the file or field at fault."""


class TrainreconError(Exception):
    """An error caused by the user's input (a file, a field, an option).

    The CLI prints ``str(err)`` on one line and exits with status 2; it never shows a traceback.
    """


class Interrupted(TrainreconError):
    """A long run stopped by Ctrl-C (or SIGTERM) after saving its checkpoint; the message says how to resume.
    The CLI exits with status 130."""


class Diverged(TrainreconError):
    """An attack whose loss stopped being a finite number (its step size too large for this victim)."""

