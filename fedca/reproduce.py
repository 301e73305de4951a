"""``fedca reproduce``: run the reduced benchmark preset and check it against recorded values.

The preset (``conf/experiment/ci_reproduce.yaml``) is run as a real Hydra multirun; the
grouped report is compared with ``scripts/expected/ci_reproduce.json``, which holds, per
(dataset, agg), the mean test metric of the full run that produced it, a tolerance band, and
the orderings that must hold (e.g. composite above FedAvg). Any violation is an error.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fedca.errors import FedcaError
from fedca.results.atomic import write_json
from fedca.results.report import aggregate, collect, to_markdown

PRESET = "ci_reproduce"
METRIC = "test_hr@10"


def _expected_path(repo: Path) -> Path:
    return repo / "scripts" / "expected" / f"{PRESET}.json"


def run_preset(out_dir: Path, launcher: str) -> None:
    """Run the preset as a multirun into ``out_dir`` (the command a user would type)."""
    command = [sys.executable, "-m", "fedca.cli", "run", "-m", f"+experiment={PRESET}",
               f"hydra/launcher={launcher}", f"hydra.sweep.dir={out_dir}", "resume=true"]
    done = subprocess.run(command, env=dict(os.environ))
    if done.returncode != 0:
        raise FedcaError(f"the {PRESET} sweep failed (exit {done.returncode}); see the job folders in {out_dir}")


def measured(out_dir: Path):
    """Grouped mean ± std per (dataset, agg) of the finished sweep."""
    complete, incomplete = collect([out_dir])
    if len(incomplete):
        raise FedcaError(f"{len(incomplete)} runs of {out_dir} did not complete")
    return aggregate(complete)


def _by_method(grouped, column: str) -> dict:
    """{(dataset, agg): value of ``column``} from the grouped report."""
    return dict(grouped.set_index(["dataset", "agg"])[column].items())


def check(grouped, expected: dict) -> list:
    """The violations of the recorded bands and orderings (empty when all hold)."""
    means = _by_method(grouped, f"{METRIC}_mean")
    problems = []
    for key, record in expected["values"].items():
        dataset, agg = key.split("/")
        value = means.get((dataset, agg))
        if value is None:
            problems.append(f"{key}: no result")
        elif abs(value - record["mean"]) > record["tolerance"]:
            problems.append(f"{key}: {METRIC} {value:.4f} outside {record['mean']:.4f} ± {record['tolerance']:.4f}")
    for better, worse in expected["orderings"]:
        b, w = means.get(tuple(better.split("/"))), means.get(tuple(worse.split("/")))
        if b is None or w is None or not b > w:
            problems.append(f"ordering {better} > {worse} does not hold ({b} vs {w})")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fedca reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs") / "reproduce", help="sweep folder")
    parser.add_argument("--launcher", default="joblib", help="Hydra launcher (default joblib)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout holding scripts/expected")
    parser.add_argument("--record", action="store_true",
                        help="write the measured means as the expected values (tolerance 3 std, at least 0.02) "
                             "and every ordering the seeds agree on")
    args = parser.parse_args(argv)
    started = time.time()
    run_preset(args.out, args.launcher)
    grouped = measured(args.out)
    print(to_markdown(grouped, metrics=["test_hr@10", "test_ndcg@10"]))
    path = _expected_path(args.repo)
    if args.record:
        means, stds = _by_method(grouped, f"{METRIC}_mean"), _by_method(grouped, f"{METRIC}_std")
        values = {f"{dataset}/{agg}": {"mean": round(mean, 4), "tolerance": round(max(0.02, 3 * stds[dataset, agg]), 4)}
                  for (dataset, agg), mean in means.items()}
        orderings = []
        for dataset in sorted({key[0] for key in means}):
            ranked = sorted(((means[dataset, agg], stds[dataset, agg], agg) for agg in ("composite", "fedavg")),
                            reverse=True)
            (high, high_std, better), (low, low_std, worse) = ranked
            if high - low > 2 * (high_std + low_std):  # a separation the seeds agree on
                orderings.append([f"{dataset}/{better}", f"{dataset}/{worse}"])
        write_json(path, {"metric": METRIC, "command": "fedca reproduce --record", "values": values,
                          "orderings": orderings})
        print(f"recorded {path}")
    else:
        problems = check(grouped, json.loads(path.read_text()))
        if problems:
            raise FedcaError("reproduction failed: " + "; ".join(problems))
        print("reproduction: every band and ordering holds")
    print(f"reproduction runtime: {time.time() - started:.0f} s")
    return 0
