"""Plot peak RSS against the number of clients for each client store.

Usage: python scripts/store_memory_plot.py [docs/results/stores/memory.txt] [docs/stores_memory.png]

The input holds one line per run: ``CLIENTS STORE <scripts/bench.py's summary line>`` (the
summary ends with ``peak RSS X GB``), as the README's store section says how it was made.
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: Path) -> dict:
    """{store: [(clients, peak GB), ...]} sorted by clients."""
    runs = defaultdict(list)
    for line in path.read_text().splitlines():
        found = re.match(r"(\d+) (\w+) .*peak RSS ([\d.]+) GB", line)
        if found:
            runs[found[2]].append((int(found[1]), float(found[3])))
    return {store: sorted(points) for store, points in runs.items()}


def main(argv) -> int:
    source = Path(argv[0] if argv else "docs/results/stores/memory.txt")
    target = Path(argv[1] if len(argv) > 1 else "docs/stores_memory.png")
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    for store, points in read(source).items():
        axes.plot(*zip(*points), marker="o", label=store)
    axes.set_xlabel("clients (stand-in, 3706 items, d = 16, FedAvg)")
    axes.set_ylabel("peak RSS (GB)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
