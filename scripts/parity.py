"""Side-by-side trajectories of the official FedCA code and fedca: test HR@10 per round.

Usage:
    python scripts/parity.py --reference REF_CHECKOUT --reference-python REF_VENV/bin/python \\
        --work WORK_DIR [--datasets ml100k,filmtrust] [--reference-seeds 0,1] [--fedca-seeds 0,1,2] \\
        [--rounds 10] [--jobs 2] [--table-only] [fedca overrides ...]

``REF_CHECKOUT`` is a local checkout of hongleizhang/FedCA (measured at commit b8e6802); it is
never modified. Each reference run gets its own folder ``WORK_DIR/reference/DATASET-seedS``
holding a copy of the checkout's ``train.py``, ``model/`` and ``utils/``, the dataset converted
to the form the reference reads, and the ``logs/`` and ``results/`` folders it writes into.
The copy gets one change so that it runs under Python >= 3.11: ``random.sample`` of a set
becomes ``random.sample(tuple(...), k)`` (three calls in ``utils/data.py``); a tuple of a set
has the set's iteration order, so the draws are those Python 3.7-3.10 make. The reference
runs with ``--seed S --global_round ROUNDS`` and its defaults otherwise (FCF, composite
aggregation); its environment needs numpy, pandas, scikit-learn, cvxpy, scipy, coloredlogs and
torch (measured with numpy 1.26.4, pandas 2.2.3, scikit-learn 1.5.2, cvxpy 1.3.3, scipy 1.11.4,
torch 2.13.0).

fedca runs ``agg=composite`` with the same seeds' count of rounds under the default protocol
(``protocol=fedca``), in ``WORK_DIR/fedca/DATASET-seedS``; extra arguments are passed to every
fedca run as config overrides.

Resumable: a reference run whose log already holds ``ROUNDS`` test rounds and a fedca run whose
``status.json`` says complete are read, not rerun; an unfinished reference run starts over (the
official code cannot resume) and an unfinished fedca run resumes from its checkpoint.
``--table-only`` runs nothing and prints the table from whatever rounds exist.

The table has one row per round: each reference seed's test HR@10, fedca's mean, min and max
over its seeds, and whether every reference value lies within fedca's [min, max].
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REFERENCE_NAMES = {"ml100k": "ml-100k", "filmtrust": "filmtrust"}
"""fedca dataset name -> the reference's ``--dataset`` name (its folder under ``datasets/``)."""

SOURCE_FILES = {"ml100k": "ml-100k/u.data", "filmtrust": "filmtrust/ratings.txt"}
"""The file under the fedca data folder each reference dataset is made from."""

PY311_PATCH = (re.compile(r"random\.sample\((x), "), r"random.sample(tuple(\1), ")
"""``random.sample`` of a set raises under Python >= 3.11; sample from ``tuple(set)`` instead."""

TEST_LINE = re.compile(r"\[Epoch (\d+)/\d+\]\[Test\] HR@10 = ([0-9.]+), NDCG@10 = ([0-9.]+)")


def data_root() -> Path:
    root = os.environ.get("FEDCA_DATA_DIR")
    if not root:
        sys.exit("error: set FEDCA_DATA_DIR to the folder holding ml-100k/u.data and filmtrust/ratings.txt")
    return Path(root)


def convert_dataset(dataset: str, target: Path) -> None:
    """Write the reference's ``ratings.dat``: ML-100K comma-separated (its loader splits on ','),
    FilmTrust byte for byte (the reference ships the same space-separated file)."""
    source = data_root() / SOURCE_FILES[dataset]
    if not source.is_file():
        sys.exit(f"error: {source} not found")
    target.parent.mkdir(parents=True, exist_ok=True)
    if dataset == "ml100k":
        target.write_text(source.read_text().replace("\t", ","))
    else:
        shutil.copyfile(source, target)


def prepare_reference_run(reference: Path, folder: Path, dataset: str) -> None:
    """A fresh copy of the reference code with the Python 3.11 patch, the data and its output folders."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy2(reference / "train.py", folder / "train.py")
    for package in ("model", "utils"):
        shutil.copytree(reference / package, folder / package)
    data_py = folder / "utils" / "data.py"
    text, count = PY311_PATCH[0].subn(PY311_PATCH[1], data_py.read_text())
    if count != 3:
        sys.exit(f"error: expected 3 random.sample(x, ...) calls in {reference / 'utils/data.py'}, found {count}")
    data_py.write_text(text)
    convert_dataset(dataset, folder / "datasets" / REFERENCE_NAMES[dataset] / "ratings.dat")
    (folder / "logs").mkdir()
    (folder / "results").mkdir()


def reference_rounds(folder: Path) -> dict:
    """{round: (test HR@10, test NDCG@10)} from a reference run's console log."""
    log = folder / "run.log"
    if not log.is_file():
        return {}
    found = {}
    for match in TEST_LINE.finditer(log.read_text(errors="replace")):
        found[int(match.group(1))] = (float(match.group(2)), float(match.group(3)))
    return found


def fedca_rounds(folder: Path) -> dict:
    """{round: (test HR@10, test NDCG@10)} from a fedca run folder's rounds.csv."""
    import csv

    path = folder / "rounds.csv"
    if not path.is_file():
        return {}
    with path.open() as handle:
        return {int(row["round"]): (float(row["hr@10"]), float(row["ndcg@10"]))
                for row in csv.DictReader(handle) if row["split"] == "test"}


def fedca_complete(folder: Path) -> bool:
    try:
        return json.loads((folder / "status.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def reference_command(python: str, dataset: str, seed: int, rounds: int) -> list:
    return [python, "train.py", "--dataset", REFERENCE_NAMES[dataset], "--data_file", "ratings.dat",
            "--global_round", str(rounds), "--seed", str(seed)]


def run_reference(args, jobs: list) -> None:
    """Run the unfinished reference jobs [(dataset, seed, folder)], ``args.jobs`` at a time,
    one thread each (the reference's per-client loop gains nothing from more)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < args.jobs:
            dataset, seed, folder = pending.pop(0)
            prepare_reference_run(args.reference, folder, dataset)
            print(f"reference {dataset} seed {seed}: running in {folder}", file=sys.stderr, flush=True)
            log = (folder / "run.log").open("w")
            running.append((subprocess.Popen(reference_command(args.reference_python, dataset, seed, args.rounds),
                                             cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT), log, folder))
        time.sleep(5)
        for job in list(running):
            process, log, folder = job
            if process.poll() is not None:
                log.close()
                running.remove(job)
                if process.returncode:
                    print(f"reference run in {folder} failed (exit {process.returncode}); see run.log",
                          file=sys.stderr, flush=True)


def run_fedca(args, dataset: str, seed: int, folder: Path) -> None:
    command = [sys.executable, "-m", "fedca.cli", "run", f"dataset={dataset}", "agg=composite", f"seed={seed}",
               f"rounds={args.rounds}", "progress=false", "threads=1", f"hydra.run.dir={folder}",
               *(["resume=true"] if (folder / "checkpoint.pt").is_file() else []), *args.overrides]
    print(f"fedca {dataset} seed {seed}: running in {folder}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def table(args) -> str:
    """Markdown: round x (reference seeds, fedca mean / min / max, inside) per dataset."""
    lines = []
    for dataset in args.datasets:
        reference = {seed: reference_rounds(args.work / "reference" / f"{dataset}-seed{seed}")
                     for seed in args.reference_seeds}
        ours = {seed: fedca_rounds(args.work / "fedca" / f"{dataset}-seed{seed}") for seed in args.fedca_seeds}
        header = ([f"ref seed {seed}" for seed in args.reference_seeds]
                  + [f"fedca mean ({len(args.fedca_seeds)} seeds)", "fedca min", "fedca max", "ref inside"])
        lines += [f"{dataset}: test HR@10", "", "| round | " + " | ".join(header) + " |",
                  "| ---: | " + " | ".join("---:" for _ in header) + " |"]
        for round_number in range(1, args.rounds + 1):
            refs = [reference[seed].get(round_number, (None,))[0] for seed in args.reference_seeds]
            values = [ours[seed][round_number][0] for seed in args.fedca_seeds if round_number in ours[seed]]
            cells = [f"{value:.4f}" if value is not None else "" for value in refs]
            if values:
                low, high = min(values), max(values)
                known = [value for value in refs if value is not None]
                inside = "" if not known else ("yes" if all(low <= value <= high for value in known) else "no")
                cells += [f"{sum(values) / len(values):.4f}", f"{low:.4f}", f"{high:.4f}", inside]
            else:
                cells += ["", "", "", ""]
            lines.append(f"| {round_number} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="local checkout of hongleizhang/FedCA")
    parser.add_argument("--reference-python", default="python3",
                        help="the Python of the reference's environment (default: python3)")
    parser.add_argument("--work", type=Path, required=True, help="folder for both codes' runs (outside the repo)")
    parser.add_argument("--datasets", default="ml100k,filmtrust")
    parser.add_argument("--reference-seeds", default="0,1")
    parser.add_argument("--fedca-seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="reference runs at once (default 2)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; print the table from what exists")
    parser.add_argument("overrides", nargs="*", help="config overrides for every fedca run")
    args = parser.parse_args()
    args.datasets = args.datasets.split(",")
    unknown = [name for name in args.datasets if name not in REFERENCE_NAMES]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {sorted(REFERENCE_NAMES)}")
    args.reference_seeds = [int(seed) for seed in args.reference_seeds.split(",")]
    args.fedca_seeds = [int(seed) for seed in args.fedca_seeds.split(",")]
    if not (args.reference / "train.py").is_file():
        parser.error(f"{args.reference} is not a checkout of the reference code (no train.py)")
    args.reference = args.reference.resolve()
    args.work = args.work.resolve()
    return args


def main() -> int:
    args = parse_args()
    if not args.table_only:
        for dataset in args.datasets:
            for seed in args.fedca_seeds:
                folder = args.work / "fedca" / f"{dataset}-seed{seed}"
                if not fedca_complete(folder):
                    run_fedca(args, dataset, seed, folder)
        jobs = [(dataset, seed, args.work / "reference" / f"{dataset}-seed{seed}")
                for dataset in args.datasets for seed in args.reference_seeds]
        run_reference(args, [job for job in jobs if len(reference_rounds(job[2])) < args.rounds])
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
