"""``fedca data {list,fetch,stats}``: see, download and inspect datasets."""

import argparse
import sys
from typing import List

from fedca.config.compose import available, compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.data.download import fetch
from fedca.data.sources import dataset_path, remote_source


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="list, download and inspect datasets",
                                 description="Manage the datasets fedca reads (found under dataset.root, "
                                             "default $FEDCA_DATA_DIR or the user cache).")
    verbs = data.add_subparsers(dest="verb", required=True, metavar="{list,fetch,stats}")
    verbs.add_parser("list", help="datasets, where each file is expected, and whether it is there",
                     description="List the configured datasets and where their files are expected.")
    for verb, text in (("fetch", "download NAME from its official source, verify it and place it"),
                       ("stats", "users, items and interactions of NAME after the protocol's filter")):
        sub = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("name", help="dataset name (see `fedca data list`)")
        sub.add_argument("overrides", nargs="*", help="config overrides, e.g. protocol=strict dataset.root=DIR")


def _spec(name: str, overrides: List[str]):
    return compose_run_config([f"dataset={name}", *overrides])


def command(args: argparse.Namespace) -> int:
    if args.verb == "list":
        names = available("dataset")
        width = max(map(len, names))
        for name in names:
            if name == "csv":
                print(f"{name:{width}s} any delimited file: set dataset.file (see conf/dataset/csv.yaml)")
                continue
            path = dataset_path(_spec(name, []).dataset)
            print(f"{name:{width}s} {path} ({'present' if path.is_file() else 'missing'})")
        return 0
    cfg = _spec(args.name, args.overrides)
    if args.verb == "fetch":
        path = fetch(remote_source(cfg.dataset), dataset_path(cfg.dataset), progress=True)
        print(f"{cfg.dataset.name}: {path}")
        return 0
    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, progress=sys.stderr.isatty())
    print(f"dataset      {cfg.dataset.name} (protocol {cfg.protocol.name}, "
          f"min_interactions {cfg.protocol.min_interactions})")
    print(f"users        {data.num_users}")
    print(f"items        {data.num_items}")
    print(f"interactions {data.num_interactions}")
    print(f"density      {data.num_interactions / (data.num_users * data.num_items):.4%}")
    return 0
