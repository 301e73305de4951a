"""Thin wrapper: `python scripts/reproduce.py [--record]` is `fedca reproduce [--record]`."""

import sys

from fedca.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
