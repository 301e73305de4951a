"""``fedca reproduce``: run the reduced benchmark preset and check it against recorded values.

The preset (``conf/experiment/ci_reproduce.yaml``) runs no aggregation (``local``), FedAvg and
composite on ML-100K and FilmTrust under protocols ``fedca`` and ``strict``, seeds 0-2, as a
real Hydra multirun. Each run becomes one row of a per-seed table (``per_seed_table``): test
HR@10 and NDCG@10 at the selected round and at the final round, and the round means of the
aggregation statistics that ``rounds.csv`` records (``agg_w_self``, ``agg_w_entropy``,
``agg_w_nonzero``, ``agg_s_mean``, ``agg_c_mean``).

``scripts/expected/ci_reproduce.json`` holds two kinds of signature, recorded from such a table
(``record``), and ``check`` reports every one that does not hold:

* a **band** per (dataset, protocol, agg) and quantity: the seed mean must lie within
  ``mean ± tolerance``;
* a **gap** per (dataset, protocol) between composite and another aggregator (local, FedAvg):
  the mean over seeds of the paired difference (same seed) must lie within its band, which
  fixes its sign wherever the band excludes zero.

A run with composite silently replaced by no aggregation, by FedAvg, or with the sign of its
similarity term flipped fails the check; ``tests/test_reproduce.py`` shows it on recorded
per-seed tables of each of these variants (``tests/data/reproduce_variants/``).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from fedca.errors import FedcaError
from fedca.results.atomic import write_json, write_text
from fedca.results.report import aggregate, collect, to_markdown

PRESET = "ci_reproduce"
KEYS = ("dataset", "protocol", "agg")
METRICS = ("test_hr@10", "test_ndcg@10", "final_test_hr@10", "final_test_ndcg@10")
STATS = ("w_self", "w_entropy", "w_nonzero", "s_mean", "c_mean")  # round means of rounds.csv's agg_<name>
GAPS = (("composite", "local"), ("composite", "fedavg"))
Z = 3.0  # band half-width in standard deviations of the difference of two seed means
STAT_FLOOR = 0.02  # relative floor of a statistic's band (share of |mean|)
# Floor of a gap's band: half a percent, about five users' hits of ML-100K's 943; three seeds
# whose paired differences agree to the user would otherwise leave no room for another
# machine's rounding.
GAP_FLOOR = 0.005


def _expected_path(repo: Path) -> Path:
    return repo / "scripts" / "expected" / f"{PRESET}.json"


def _runs_path(repo: Path) -> Path:
    return repo / "scripts" / "expected" / f"{PRESET}_runs.csv"


def run_preset(out_dir: Path, launcher: str, overrides: tuple = ()) -> None:
    """Run the preset as a multirun into ``out_dir`` (the command a user would type)."""
    command = [sys.executable, "-m", "fedca.cli", "run", "-m", f"+experiment={PRESET}",
               f"hydra/launcher={launcher}", f"hydra.sweep.dir={out_dir}", "resume=true", *overrides]
    done = subprocess.run(command, env=dict(os.environ))
    if done.returncode != 0:
        raise FedcaError(f"the {PRESET} sweep failed (exit {done.returncode}); see the job folders in {out_dir}")


def _run_extras(run_dir: Path) -> dict:
    """The number of evaluated users (``num_users`` of summary.json) and the mean over the
    training rounds (round >= 1, one row per round) of each aggregation statistic of rounds.csv;
    NaN where the aggregator records none."""
    run_dir = Path(run_dir)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    trained = rounds[rounds["round"] >= 1].drop_duplicates("round")
    extras = {"num_users": json.loads((run_dir / "summary.json").read_text())["num_users"]}
    extras.update({name: float(trained[f"agg_{name}"].mean()) if f"agg_{name}" in trained else math.nan
                   for name in STATS})
    return extras


def per_seed_table(out_dir: Path) -> pd.DataFrame:
    """One row per complete run of the sweep in ``out_dir``: KEYS, seed, num_users, METRICS, STATS."""
    complete, incomplete = collect([out_dir])
    if len(incomplete):
        raise FedcaError(f"{len(incomplete)} runs of {out_dir} did not complete")
    extras = pd.DataFrame([_run_extras(run_dir) for run_dir in complete["run_dir"]], index=complete.index)
    table = pd.concat([complete[[*KEYS, "seed"]], extras[["num_users"]], complete[list(METRICS)],
                       extras[list(STATS)]], axis=1)
    return table.sort_values([*KEYS, "seed"], kind="stable").reset_index(drop=True)


def _group_key(dataset: str, protocol: str, agg: str) -> str:
    return f"{dataset}/{protocol}/{agg}"


def _groups(table: pd.DataFrame) -> dict:
    """{"dataset/protocol/agg": rows of that group indexed by seed}."""
    return {_group_key(*key): rows.set_index("seed") for key, rows in table.groupby(list(KEYS), sort=True)}


def _paired_gaps(groups: dict) -> dict:
    """{"dataset/protocol/better-other": {quantity: per-seed differences (Series by seed)}}."""
    gaps = {}
    for key, rows in groups.items():
        dataset, protocol, agg = key.split("/")
        for better, other in GAPS:
            partner = groups.get(_group_key(dataset, protocol, other))
            if agg == better and partner is not None:
                gaps[f"{dataset}/{protocol}/{better}-{other}"] = {
                    metric: (rows[metric] - partner[metric]).dropna() for metric in METRICS}
    return gaps


def _metric_floor(mean: float, num_users: int, n_seeds: int) -> float:
    """The smallest band of a metric: a user-averaged score in [0, 1] with mean m has per-user
    variance at most m(1 - m), so one run's score over N users has std at most sqrt(m(1-m)/N);
    three seeds estimate the spread with two degrees of freedom and can agree by chance far more
    closely than that, so the band never gets narrower than Z times this std for a difference
    of two seed means."""
    m = min(abs(mean), 1.0)
    return Z * math.sqrt(2.0 / n_seeds) * math.sqrt(m * (1.0 - m) / num_users)


def _band(values: pd.Series, floor: float) -> dict:
    """mean and tolerance max(Z * std * sqrt(2/n), floor): the std of the difference between two
    means of n seeds is std * sqrt(2/n), and a run on other hardware is another draw of the
    rounding noise that 40 rounds amplify, at most as far apart as another seed."""
    n = len(values)
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(values.mean()), "tolerance": max(Z * std * math.sqrt(2.0 / n), floor)}


def record(table: pd.DataFrame) -> dict:
    """The expected signatures of a per-seed table (see the module docstring)."""
    groups = _groups(table)
    bands = {}
    for key, rows in groups.items():
        n, users = len(rows), int(rows["num_users"].min())
        entry = {metric: _band(rows[metric], _metric_floor(rows[metric].mean(), users, n)) for metric in METRICS}
        entry.update({stat: _band(rows[stat], STAT_FLOOR * abs(rows[stat].mean()))
                      for stat in STATS if rows[stat].notna().all()})
        bands[key] = entry
    gaps = {}
    for key, differences in _paired_gaps(groups).items():
        gaps[key] = {metric: _band(values, GAP_FLOOR) for metric, values in differences.items()}
    return {"command": "fedca reproduce --record", "preset": PRESET, "z": Z,
            "n_seeds": {key: len(rows) for key, rows in groups.items()}, "bands": bands, "gaps": gaps}


def _outside(value: float, band: dict) -> bool:
    return not (math.isfinite(value) and abs(value - band["mean"]) <= band["tolerance"])


def _describe(band: dict, signed: bool = False) -> str:
    """``[low, high]``; for a gap also the sign the band fixes, where it excludes zero."""
    low, high = band["mean"] - band["tolerance"], band["mean"] + band["tolerance"]
    sign = "" if not signed or low <= 0 <= high else (", positive" if low > 0 else ", negative")
    return f"[{low:.4f}, {high:.4f}]{sign}"


def check(table: pd.DataFrame, expected: dict) -> list:
    """Every violated signature of ``expected`` in the per-seed ``table``, one line each
    (``band KEY QUANTITY: ...`` or ``gap KEY QUANTITY: ...``); empty when all hold."""
    groups = _groups(table)
    problems = []
    for key, entry in expected["bands"].items():
        rows = groups.get(key)
        if rows is None or len(rows) != expected["n_seeds"][key]:
            problems.append(f"band {key}: {0 if rows is None else len(rows)} runs, expected {expected['n_seeds'][key]}")
            continue
        for quantity, band in entry.items():
            value = float(rows[quantity].mean()) if quantity in rows else math.nan
            if _outside(value, band):
                problems.append(f"band {key} {quantity}: {value:.4f} outside {_describe(band)}")
    gaps = _paired_gaps(groups)
    for key, entry in expected["gaps"].items():
        for metric, band in entry.items():
            differences = gaps.get(key, {}).get(metric)
            value = float(differences.mean()) if differences is not None and len(differences) else math.nan
            if _outside(value, band):
                problems.append(f"gap {key} {metric}: {value:+.4f} outside {_describe(band, signed=True)}")
    return problems


def read_table(path: Path) -> pd.DataFrame:
    """A per-seed table saved as CSV (``--save-table``, ``scripts/expected/ci_reproduce_runs.csv``)."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise FedcaError(f"{path}: cannot read a per-seed table ({error})") from None
    missing = [column for column in (*KEYS, "seed", "num_users", *METRICS, *STATS) if column not in table]
    if missing:
        raise FedcaError(f"{path}: not a per-seed table of fedca reproduce (no column {', '.join(missing)})")
    return table


def _write_table(path: Path, table: pd.DataFrame) -> None:
    write_text(path, table.to_csv(index=False, float_format="%.17g"))


def _print_summary(out_dir: Path) -> None:
    complete, _ = collect([out_dir])
    print(to_markdown(aggregate(complete, mix_protocols=True),
                      metrics=["test_hr@10", "test_ndcg@10", "final_test_hr@10"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fedca reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs") / "reproduce", help="sweep folder")
    parser.add_argument("--launcher", default="joblib", help="Hydra launcher (default joblib)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="checkout holding scripts/expected")
    parser.add_argument("--table", type=Path,
                        help="check this saved per-seed table (CSV) instead of running the preset")
    parser.add_argument("--save-table", type=Path, help="also write the per-seed table of the sweep to this CSV")
    parser.add_argument("--record", action="store_true",
                        help="write the signatures of the measured table as the expected values "
                             f"(scripts/expected/{PRESET}.json) and the table beside them ({PRESET}_runs.csv)")
    args = parser.parse_args(argv)
    started = time.time()
    if args.table:
        table = read_table(args.table)
    else:
        run_preset(args.out, args.launcher)
        _print_summary(args.out)
        table = per_seed_table(args.out)
    if args.save_table:
        _write_table(args.save_table, table)
    if args.record:
        write_json(_expected_path(args.repo), record(table))
        _write_table(_runs_path(args.repo), table)
        print(f"recorded {_expected_path(args.repo)} and {_runs_path(args.repo)}")
    else:
        problems = check(table, json.loads(_expected_path(args.repo).read_text()))
        if problems:
            raise FedcaError(f"reproduction failed ({len(problems)} signatures): " + "; ".join(problems))
        print("reproduction: every band and gap holds")
    print(f"reproduction runtime: {time.time() - started:.0f} s")
    return 0
