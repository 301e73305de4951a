"""Rewrite README.md's result tables from docs/results/<name>/results.csv.

    python scripts/readme_tables.py          # rewrite the marked tables in README.md
    python scripts/readme_tables.py --check  # exit 1 if any README table differs from its results

A table's results.csv is what ``fedca report`` writes for its runs (see the command lines above
each table in README.md); ``fedca/results/readme_tables.py`` renders it.
"""

import argparse
import sys
from pathlib import Path

from fedca.results.atomic import write_text
from fedca.results.readme_tables import render_all, replace_tables

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    args = parser.parse_args()
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    updated = replace_tables(text, render_all(REPO))
    if args.check:
        if updated != text:
            print("README.md tables differ from docs/results; run python scripts/readme_tables.py", file=sys.stderr)
            return 1
        print("README.md tables match docs/results")
        return 0
    if updated != text:
        write_text(readme, updated)
    print("README.md tables " + ("rewritten" if updated != text else "already match docs/results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
