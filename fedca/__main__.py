"""``python -m fedca ...``: the same command line as the ``fedca`` console script."""

from fedca.cli import entry

entry()
