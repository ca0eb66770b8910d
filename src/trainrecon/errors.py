"""User-facing errors: one line, naming the file or field at fault."""


class TrainreconError(Exception):
    """An error caused by the user's input (a file, a field, an option).

    The CLI prints ``str(err)`` on one line and exits with status 2; it never shows a traceback.
    """
