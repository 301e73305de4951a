"""Side-by-side trajectories of the official FedCA code and fedca: test HR@10 per round.

Usage:
    python scripts/parity.py --reference REF_CHECKOUT --reference-python REF_VENV/bin/python \\
        --work WORK_DIR [--datasets ml100k,filmtrust] [--reference-seeds 0,1] [--fedca-seeds 0,1,2] \\
        [--rounds 10] [--jobs 2] [--from-reference-init [--from-init-seeds 0,1,2]] \\
        [--no-reference-runs | --table-only] [fedca overrides ...]

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

fedca runs ``agg=composite`` for the same number of rounds under its default protocol
(``protocol=fedca``), one run per fedca seed, in ``WORK_DIR/fedca/DATASET-seedS``; extra
arguments are passed to every fedca run as config overrides.

Resumable: a reference run whose log already holds ``ROUNDS`` test rounds and a fedca run whose
``status.json`` says complete are read, not rerun; an unfinished reference run starts over (the
official code cannot resume) and an unfinished fedca run resumes from its checkpoint.
``--table-only`` runs nothing and prints the table from whatever rounds exist;
``--no-reference-runs`` runs only fedca. A reference run still going (its ``pid`` file names a
live process, e.g. started by an earlier call) is waited for, not restarted.

``--from-reference-init`` adds, for every reference seed S, fedca runs (seeds
``--from-init-seeds``) that start from the reference's own initial state of seed S instead of
fedca's draw: the shared user vector u0 and the N(0, 1) item table, drawn by the reference's
code in its order (``setSeed(S)``, the engine's model, then the clients' initial table) and
written to
``WORK_DIR/reference-init/DATASET-seedS.pt``. Everything after the start (negatives,
shuffles, aggregation subset, eval negatives) stays fedca's, seeded by the fedca seed. Those
runs go to ``WORK_DIR/fedca-from-ref-init/DATASET-refS-seedF``; their columns show how far the two
codes' trajectories agree once the initial draw is the same.

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

DUMP_INITIAL_STATE = """
import sys
import torch
sys.path.insert(0, ".")
from utils.utils import loadData, setSeed
from utils.data import SampleGenerator
from model.model import ModelEngine
dataset, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
setSeed(seed)
config = dict(backbone="FCF", latent_dim=16, use_cuda=False, top_k=10, train_frac=1.0)
ratings, config["num_users"], config["num_items"] = loadData("./datasets", dataset, config, "ratings.dat")
engine = ModelEngine(config)
SampleGenerator(ratings=ratings, config=config)
table = torch.nn.Embedding(num_embeddings=config["num_items"], embedding_dim=config["latent_dim"])
pairs = torch.tensor(ratings["userId"].to_numpy() * config["num_items"] + ratings["itemId"].to_numpy())
torch.save({"user": engine.model.user_embedding.weight.detach().clone(), "items": table.weight.detach().clone(),
            "pair_keys": torch.unique(pairs)}, out)
"""
"""Run inside a prepared reference folder with the reference's Python: draws the initial state
in train.py's order (setSeed, the engine's FCF model with its u0, SampleGenerator, then the
clients' shared initial item table) and saves u0 [1, d], the table [I, d] and the sorted keys
user * I + item of the reference's renumbered interactions (to check both codes number alike)."""

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


def alive(folder: Path) -> bool:
    """Whether the reference process recorded in ``folder/pid`` is still running."""
    try:
        os.kill(int((folder / "pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def run_reference(args, jobs: list) -> None:
    """Run the unfinished reference jobs [(dataset, seed, folder)], ``args.jobs`` at a time,
    one thread each (the reference's per-client loop gains nothing from more). A job whose
    process (``pid`` file) is still running, e.g. from an earlier call, is waited for, not restarted."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    waiting = [job for job in jobs if alive(job[2])]
    pending, running = [job for job in jobs if job not in waiting], []
    for dataset, seed, folder in waiting:
        print(f"reference {dataset} seed {seed}: waiting for the run in {folder}", file=sys.stderr, flush=True)
    while pending or running or waiting:
        waiting = [job for job in waiting if alive(job[2])]
        while pending and len(running) + len(waiting) < args.jobs:
            dataset, seed, folder = pending.pop(0)
            prepare_reference_run(args.reference, folder, dataset)
            print(f"reference {dataset} seed {seed}: running in {folder}", file=sys.stderr, flush=True)
            log = (folder / "run.log").open("w")
            process = subprocess.Popen(reference_command(args.reference_python, dataset, seed, args.rounds),
                                       cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
            (folder / "pid").write_text(str(process.pid))
            running.append((process, log, folder))
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


def dump_initial_state(args, dataset: str, seed: int) -> Path:
    """The reference's initial state of ``seed`` (see DUMP_INITIAL_STATE), written once."""
    folder = args.work / "reference-init" / dataset
    out = args.work / "reference-init" / f"{dataset}-seed{seed}.pt"
    if not out.is_file():
        if not (folder / "train.py").is_file():
            prepare_reference_run(args.reference, folder, dataset)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([args.reference_python, "-c", DUMP_INITIAL_STATE, REFERENCE_NAMES[dataset], str(seed),
                        str(out)], cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    return out


def run_fedca_from_state(args, dataset: str, fedca_seed: int, state_file: Path, folder: Path) -> None:
    """One fedca run (in this process) whose initial population is the reference's state: every
    client starts from its u0 and item table, as in the reference's first round."""
    import torch

    from fedca.config.compose import compose_run_config
    from fedca.data.fed_data import load_fed_data
    from fedca.federation.population import Population
    from fedca.run import run

    state = torch.load(state_file)
    overrides = [f"dataset={dataset}", "agg=composite", f"seed={fedca_seed}", f"rounds={args.rounds}",
                 "progress=false", "threads=1", *(["resume=true"] if (folder / "checkpoint.pt").is_file() else []),
                 *args.overrides]
    cfg = compose_run_config(overrides)
    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)
    if not torch.equal(data.interacted_keys, state["pair_keys"]):
        sys.exit(f"error: the reference and fedca number the users and items of {dataset} differently, so the "
                 f"reference's item table cannot be given to fedca row by row")
    original = Population.__dict__["initial"]

    def initial(cls, num_clients, num_items, dim, backbone, **kwargs):
        population = original.__func__(cls, num_clients, num_items, dim, backbone, **kwargs)
        if tuple(population.items.shape[1:]) != tuple(state["items"].shape):
            sys.exit(f"error: the reference's item table is {tuple(state['items'].shape)}, fedca's "
                     f"{tuple(population.items.shape[1:])}; the two codes read {dataset} differently")
        population.items.copy_(state["items"].unsqueeze(0).expand_as(population.items))
        population.user.copy_(state["user"].expand_as(population.user))
        return population

    print(f"fedca {dataset} seed {fedca_seed} from {state_file}: running in {folder}", file=sys.stderr, flush=True)
    Population.initial = classmethod(initial)
    try:
        run(cfg, folder)
    finally:
        Population.initial = original


def from_init_folder(args, dataset: str, reference_seed: int, fedca_seed: int) -> Path:
    return args.work / "fedca-from-ref-init" / f"{dataset}-ref{reference_seed}-seed{fedca_seed}"


def table(args) -> str:
    """Markdown: round x (reference seeds, fedca mean / min / max, inside) per dataset."""
    lines = []
    for dataset in args.datasets:
        reference = {seed: reference_rounds(args.work / "reference" / f"{dataset}-seed{seed}")
                     for seed in args.reference_seeds}
        ours = {seed: fedca_rounds(args.work / "fedca" / f"{dataset}-seed{seed}") for seed in args.fedca_seeds}
        header = ([f"ref seed {seed}" for seed in args.reference_seeds]
                  + [f"fedca mean ({len(args.fedca_seeds)} seeds)", "fedca min", "fedca max", "ref inside"])
        started = {}
        if args.from_reference_init:
            started = {seed: [fedca_rounds(from_init_folder(args, dataset, seed, fedca_seed))
                              for fedca_seed in args.from_init_seeds] for seed in args.reference_seeds}
            header += [f"fedca from ref seed {seed}'s start (mean, min-max)" for seed in args.reference_seeds]
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
            for seed in started:
                runs = [found[round_number][0] for found in started[seed] if round_number in found]
                cells.append(f"{sum(runs) / len(runs):.4f} ({min(runs):.4f}-{max(runs):.4f})" if runs else "")
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
    parser.add_argument("--from-reference-init", action="store_true",
                        help="also run fedca from each reference seed's own initial state")
    parser.add_argument("--from-init-seeds", default="0,1,2",
                        help="fedca seeds of the runs from each reference start (default 0,1,2)")
    parser.add_argument("--no-reference-runs", action="store_true",
                        help="start no reference run (read what exists); fedca runs as usual")
    parser.add_argument("--table-only", action="store_true", help="run nothing; print the table from what exists")
    parser.add_argument("overrides", nargs="*", help="config overrides for every fedca run")
    args = parser.parse_args()
    args.datasets = args.datasets.split(",")
    unknown = [name for name in args.datasets if name not in REFERENCE_NAMES]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {sorted(REFERENCE_NAMES)}")
    args.reference_seeds = [int(seed) for seed in args.reference_seeds.split(",")]
    args.fedca_seeds = [int(seed) for seed in args.fedca_seeds.split(",")]
    args.from_init_seeds = [int(seed) for seed in args.from_init_seeds.split(",")]
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
        if args.from_reference_init:
            for dataset in args.datasets:
                for seed in args.reference_seeds:
                    state_file = dump_initial_state(args, dataset, seed)
                    for fedca_seed in args.from_init_seeds:
                        folder = from_init_folder(args, dataset, seed, fedca_seed)
                        if not fedca_complete(folder):
                            run_fedca_from_state(args, dataset, fedca_seed, state_file, folder)
        if not args.no_reference_runs:
            run_reference(args, [job for job in jobs if len(reference_rounds(job[2])) < args.rounds])
    print(table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
