"""``python -m trainrecon``: the command line."""

from .cli import main

main()
