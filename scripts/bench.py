"""Time federated rounds: training, aggregation and evaluation separately, plus peak memory.

Usage: python scripts/bench.py [--rounds 11] [--csv OUT.csv] [hydra overrides ...]
e.g.   python scripts/bench.py dataset=ml100k agg=composite
       python scripts/bench.py --rounds 4 dataset=csv dataset.file=ml-1m-derived/ratings_user_item_rating.tsv.gz \
           dataset.sep=tab protocol.min_interactions=10

Prints one CSV row per round and the median total over rounds 2..N (round 1 warms caches).
"""

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from fedca.cli import job_threads
from fedca.config.compose import compose_run_config
from fedca.errors import FedcaError
from fedca.heap import keep_freed_blocks
from fedca.run import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="rounds to time (default 11)")
    parser.add_argument("--csv", type=Path, help="also write the per-round timings here")
    parser.add_argument("overrides", nargs="*", help="config overrides as for `fedca run`")
    args = parser.parse_args()
    try:
        cfg = compose_run_config([*args.overrides, f"rounds={args.rounds}", "progress=false"])
        torch.set_num_threads(job_threads(cfg.threads, None))
        keep_freed_blocks()
        with tempfile.TemporaryDirectory() as out:
            summary = run(cfg, Path(out))
            rounds = pd.read_csv(Path(out) / "rounds.csv")
    except FedcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    timings = rounds[rounds["split"] == "val"][["round", "train_seconds", "agg_seconds", "eval_seconds", "seconds"]]
    timings = timings.assign(dataset=cfg.dataset.name, agg=cfg.agg.name, model=cfg.model.name)
    print(timings.to_csv(index=False), end="")
    if args.csv:
        timings.to_csv(args.csv, index=False)
    later = timings[timings["round"] >= 2]["seconds"].tolist() or timings["seconds"].tolist()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"# {cfg.dataset.name} {cfg.agg.name} {cfg.model.name}: {summary['num_users']} clients x "
          f"{summary['num_items']} items; median round {statistics.median(later):.3f} s "
          f"(rounds 2-{args.rounds}); peak RSS {peak_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
