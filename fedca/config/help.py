"""``fedca run --help``, generated from the config tree and the declarations.

The config groups and their choices (the YAML files of conf/), then, for the config the
command line composes (so ``fedca run agg=gpfedrec --help`` lists GPFedRec's knobs), one line
per declared field: its dotted key, current value, range or choices, and the documentation
line it was declared with.
"""

from dataclasses import fields, is_dataclass
from typing import List

from fedca.config.fields import choices_of, doc_of, interval_of, plain


def key_lines(node, prefix: str = "") -> List[str]:
    """``key = value  [range | a, b]  doc`` for every field of dataclass instance ``node``."""
    lines = []
    for item in fields(node):
        key, value = f"{prefix}{item.name}", getattr(node, item.name)
        if is_dataclass(value):
            lines.extend(key_lines(value, f"{key}."))
            continue
        interval, allowed = interval_of(item), choices_of(item)
        bounds = f"  {interval.rule().removeprefix('must be ')}" if interval else ""
        bounds += f"  {{{', '.join(map(str, allowed))}}}" if allowed else ""
        doc = doc_of(item)
        lines.append(f"  {key} = {plain(value)!r}{bounds}" + (f"  # {doc}" if doc else ""))
    return lines


def keys_help(cfg) -> str:
    """The key reference of the composed RunConfig ``cfg``."""
    return "Keys of this config (KEY=VALUE; range or {choices}; from the declarations):\n" + "\n".join(key_lines(cfg))


HEADER = ("fedca run: simulate federated rounds and write HR/NDCG results into the run folder.\n"
          "Usage: fedca run [-m] [KEY=VALUE ...]   e.g. fedca run dataset=filmtrust agg=fedavg seed=1\n"
          "A group choice and its keys: fedca run agg=gpfedrec --help")
FOOTER = ("Output: hydra.run.dir (single run) or hydra.sweep.dir (with -m) holds config.yaml, rounds.csv,\n"
          "summary.json and status.json for each run. Hydra's own options: fedca run --hydra-help")


def run_help(overrides) -> str:
    """The whole help text for the config composed from ``overrides``."""
    from fedca.config.compose import GROUPS, PRESET_GROUPS, available, compose_run_config

    groups = [f"  {group}: {', '.join(available(group))}" for group in GROUPS]
    presets = [f"  +{group}: {', '.join(available(group))}" for group in PRESET_GROUPS]
    return "\n".join([HEADER, "", "Config groups (choose one with GROUP=NAME; presets with +GROUP=NAME):",
                      *groups, *presets, "", keys_help(compose_run_config(overrides, validated=False)), "", FOOTER])
