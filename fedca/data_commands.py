"""``fedca data {list,fetch,stats,synth}``: see, download, inspect and generate datasets."""

import argparse
import sys
from dataclasses import asdict
from typing import List

from fedca.config.protocol import protocol_in_force
from fedca.config.compose import available, compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.data.download import fetch
from fedca.data.sources import dataset_path, remote_source
from fedca.data.synth import SHAPES, Shape, write_stand_in
from fedca.errors import FedcaError


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="list, download and inspect datasets",
                                 description="Manage the datasets fedca reads (found under dataset.root, "
                                             "default $FEDCA_DATA_DIR or the user cache).")
    verbs = data.add_subparsers(dest="verb", required=True, metavar="{list,fetch,stats,synth}")
    verbs.add_parser("list", help="datasets, where each file is expected, and whether it is there",
                     description="List the configured datasets and where their files are expected.")
    for verb, text in (("fetch", "download NAME from its official source, verify it and place it"),
                       ("stats", "users, items and interactions of NAME after the protocol's filter")):
        sub = verbs.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("name", help="dataset name (see `fedca data list`)")
        sub.add_argument("overrides", nargs="*", help="config overrides, e.g. protocol=strict dataset.root=DIR")
    _add_synth_parser(verbs)


def _add_synth_parser(verbs) -> None:
    text = "write a generated stand-in of a published shape (for scale work; never an accuracy result)"
    synth = verbs.add_parser("synth", help=text, description=text[0].upper() + text[1:] + ".")
    synth.add_argument("--shape", choices=sorted(SHAPES), help="a published shape; the options below override it")
    synth.add_argument("--out", required=True, help="folder for interactions.csv and its provenance note")
    synth.add_argument("--seed", type=int, default=0)
    for name, kind, text in (("users", int, "number of users"), ("items", int, "number of items"),
                             ("interactions", int, "distinct user-item interactions"),
                             ("min-per-user", int, "least interactions of a user (default 5)"),
                             ("popularity-exponent", float, "a of the item popularity power law r^-a (default 0.8)")):
        synth.add_argument(f"--{name}", type=kind, help=text)


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
    if args.verb == "synth":
        return _synth(args)
    cfg = _spec(args.name, args.overrides)
    if args.verb == "fetch":
        path = fetch(remote_source(cfg.dataset), dataset_path(cfg.dataset), progress=True)
        print(f"{cfg.dataset.name}: {path}")
        return 0
    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, progress=sys.stderr.isatty())
    print(f"dataset      {cfg.dataset.name} (protocol {cfg.protocol.name}, "
          f"min_interactions {protocol_in_force(cfg.dataset, cfg.protocol).min_interactions})")
    print(f"users        {data.num_users}")
    print(f"items        {data.num_items}")
    print(f"interactions {data.num_interactions}")
    print(f"density      {data.num_interactions / (data.num_users * data.num_items):.4%}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    explicit = {"users": args.users, "items": args.items, "interactions": args.interactions,
                "min_per_user": args.min_per_user, "popularity_exponent": args.popularity_exponent}
    base = asdict(SHAPES[args.shape]) if args.shape else {}
    fields = {**base, **{key: value for key, value in explicit.items() if value is not None}}
    missing = [f"--{key}" for key in ("users", "items", "interactions") if key not in fields]
    if missing:
        raise FedcaError(f"fedca data synth needs --shape or {', '.join(missing)}")
    shape = Shape(**fields)
    try:
        shape.check()
    except ValueError as error:
        raise FedcaError(f"fedca data synth: {error}") from None
    path = write_stand_in(shape, args.seed, args.out, args.shape or "custom")
    print(f"{path}: {shape.users} users, {shape.items} items, {shape.interactions} interactions (generated)")
    print(f"load it with: fedca run dataset=csv dataset.file={path} dataset.header=true dataset.user_col=user "
          "dataset.item_col=item dataset.timestamp_col=timestamp")
    return 0
