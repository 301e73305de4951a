"""A leaderboard preset: which datasets and methods, the search budget, the seeds and protocols.

``conf/leaderboard/<name>.yaml`` fills ``LeaderboardConfig`` (the one declaration of its fields,
defaults and rules); ``load`` merges a preset and ``KEY=VALUE`` overrides onto it and checks it
before anything runs.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedca.config.compose import one_line
from fedca.config.paths import conf_dir
from fedca.errors import FedcaError

# Keys the pipeline sets itself for every run; an override of them in a preset is refused.
OWNED_KEYS = ("dataset", "seed", "rounds", "threads", "progress", "resume", "skip_done", "agg", "model",
              "+tune", "tune", "+method", "method", "+experiment", "experiment")


@dataclass
class MethodEntry:
    """One leaderboard row: a search space and the overrides held fixed in the search and reruns."""

    tune: str = MISSING  # conf/tune/<tune>.yaml: the method (agg, model) and its search space
    fixed: List[str] = field(default_factory=list)  # KEY=VALUE held fixed (removed from the search space)


@dataclass
class LeaderboardConfig:
    """Everything a leaderboard run depends on; the pipeline reads nothing else."""

    name: str = MISSING  # the preset's name; names the output folder
    datasets: List[str] = MISSING  # conf/dataset choices
    methods: Dict[str, MethodEntry] = MISSING  # row label -> entry, in table order
    baseline: str = "fedavg"  # the row label every other row is compared with
    trials: int = 8  # Optuna trials per dataset x method, the same for every method (>= 1)
    tune_seed: int = 100  # the seed of every trial; not among `seeds`, so reruns are fresh draws
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # rerun seeds (>= 2 for a std)
    rounds: int = 100  # rounds of every trial and rerun (>= 1)
    protocols: Dict[str, List[str]] = MISSING  # column label -> overrides that set the protocol
    tune_protocol: str = "strict"  # the key of `protocols` the search runs under (selects on val)
    common: List[str] = field(default_factory=list)  # overrides for every trial and rerun
    jobs: int = 1  # dataset x method cells worked on at once
    threads: int = 0  # threads of each trial and rerun; 0: the machine's cores // jobs
    out: str = "outputs/leaderboard/${name}"  # scratch: the studies and run folders (checkpoints included)
    ledger: str = "docs/results/leaderboard/${name}"  # what is kept (committed): tuned configs, per-run
    # metrics, per-user test metrics, significance, tables, plot; a cell recorded here is not redone

    def check(self) -> None:
        """FedcaError naming the first rule broken; nothing is read or written."""
        if self.baseline not in self.methods:
            raise FedcaError(f"leaderboard baseline {self.baseline!r} is not one of its methods: "
                             f"{', '.join(self.methods)}")
        if self.tune_protocol not in self.protocols:
            raise FedcaError(f"leaderboard tune_protocol {self.tune_protocol!r} is not one of its protocols: "
                             f"{', '.join(self.protocols)}")
        for key, low in (("trials", 1), ("rounds", 1), ("jobs", 1), ("threads", 0)):
            if getattr(self, key) < low:
                raise FedcaError(f"leaderboard {key} must be >= {low}, got {getattr(self, key)}")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise FedcaError(f"leaderboard seeds must be at least two distinct seeds, got {list(self.seeds)}")
        if self.tune_seed in self.seeds:
            raise FedcaError(f"leaderboard tune_seed {self.tune_seed} is one of the rerun seeds; the reruns "
                             "must be draws the search did not see")
        for choice, group in [(d, "dataset") for d in self.datasets] + [(m.tune, "tune") for m in
                                                                          self.methods.values()]:
            if not (conf_dir() / group / f"{choice}.yaml").is_file():
                raise FedcaError(f"leaderboard: unknown {group} {choice!r}")
        lists = [("common", self.common)] + [(f"protocols.{k}", v) for k, v in self.protocols.items()] + \
                [(f"methods.{k}.fixed", m.fixed) for k, m in self.methods.items()]
        for where, overrides in lists:
            for override in overrides:
                key, equals, value = override.partition("=")
                if not equals or not key:
                    raise FedcaError(f"leaderboard {where}: {override!r} is not KEY=VALUE")
                if key in OWNED_KEYS or key.startswith(("hydra", "+hydra")):
                    raise FedcaError(f"leaderboard {where}: {key} is set by the pipeline itself")
                if "," in value and not value.startswith(("[", "{")):
                    raise FedcaError(f"leaderboard {where}: {override!r} is a sweep; give one value")
        searched = self.protocols[self.tune_protocol] + self.common
        if any(o.replace(" ", "") == "protocol.select_by=test" for o in searched):
            raise FedcaError("leaderboard: the search selects rounds on validation; protocol.select_by=test "
                             "in its protocol or common overrides would tune on the test set")

    def run_threads(self) -> int:
        """Threads of each run: ``threads``, else the machine's cores shared among the cells."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.jobs)

    def recorded(self) -> dict:
        """The fields a ledger's numbers depend on (two configs with different values here must
        not write to one ledger)."""
        return {"rounds": self.rounds, "trials": self.trials, "tune_seed": self.tune_seed, "seeds": list(self.seeds),
                "tune_protocol": self.tune_protocol, "common": list(self.common), "baseline": self.baseline}


def preset_path(name: str):
    return conf_dir() / "leaderboard" / f"{name}.yaml"


def available() -> List[str]:
    return sorted(path.stem for path in (conf_dir() / "leaderboard").glob("*.yaml"))


def load(name: str, overrides: Sequence[str] = ()) -> LeaderboardConfig:
    """The preset ``name`` with ``overrides`` (``KEY=VALUE``, OmegaConf dot-list syntax; a dict or
    list value replaces the preset's whole, e.g. ``'methods={fedavg: {tune: fedavg}}'``) applied
    and checked; FedcaError with one line on any problem."""
    path = preset_path(name)
    if not path.is_file():
        raise FedcaError(f"unknown leaderboard {name!r}; choose one of: {', '.join(available())}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(LeaderboardConfig), OmegaConf.load(path))
        for override in overrides:  # a dict or list given whole replaces the preset's (merge=False)
            key, equals, _ = override.partition("=")
            if not equals:
                raise FedcaError(f"leaderboard override {override!r} is not KEY=VALUE")
            given = OmegaConf.from_dotlist([override])
            if OmegaConf.is_config(OmegaConf.select(given, key)):
                OmegaConf.update(merged, key, {} if OmegaConf.is_dict(OmegaConf.select(given, key)) else [],
                                 merge=False)
            merged = OmegaConf.merge(merged, given)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise FedcaError(f"leaderboard {name}: {one_line(exc)}") from None
    cfg.check()
    return cfg
