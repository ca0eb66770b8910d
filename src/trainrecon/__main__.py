"""``python -m trainrecon`` and the ``trainrecon`` command: the command line, whose heavy imports (torch) happen
after a Ctrl-C during start-up can be answered in one line."""

from __future__ import annotations

import sys


def main() -> None:
    """Import the command line (torch and all) and run it; Ctrl-C while importing ends in one line, exit 130."""
    try:
        from .cli import main as cli_main  # here: so that a Ctrl-C while torch loads is answered
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting; nothing was done\n")
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
