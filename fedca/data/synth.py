"""Generated stand-in interaction files of a published shape, for scale work only.

A stand-in has the user, item and interaction counts of a real dataset and its broad form:
every user has at least ``min_per_user`` distinct items, user activity is long-tailed
(``min_per_user`` plus a lognormal share of the remaining interactions), item popularity
follows a power law (the item of popularity rank r is drawn with probability ∝ r^-a,
a = ``popularity_exponent``), and each user's interactions have distinct, increasing
timestamps (one a day from a random start, in Unix seconds). It holds no real user's data:
accuracy measured on it says nothing about the dataset whose shape it copies.

``write_stand_in`` writes ``interactions.csv`` (header ``user,item,timestamp``, loadable with
``dataset=csv dataset.header=true dataset.user_col=user dataset.item_col=item
dataset.timestamp_col=timestamp``) and ``interactions.csv.provenance.json`` beside it, which
says that the file is generated and with which parameters.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from fedca.results.atomic import write_atomically, write_text

PROVENANCE_SUFFIX = ".provenance.json"
DAY = 86_400
START = 1_546_300_800  # 2019-01-01, the first possible timestamp
START_SPREAD = 365 * DAY  # users start uniformly within a year


@dataclass(frozen=True)
class Shape:
    """Counts of a stand-in: users, items, interactions (distinct user-item pairs), the least
    interactions of a user, and the exponent of the item popularity power law."""

    users: int
    items: int
    interactions: int
    min_per_user: int = 5
    popularity_exponent: float = 0.8
    activity_sigma: float = 1.0  # std of the log of a user's share of the interactions above the minimum

    def check(self) -> None:
        """ValueError naming the first count that cannot describe a dataset."""
        if self.users < 1 or self.items < 2:
            raise ValueError("a stand-in needs at least 1 user and 2 items")
        if self.min_per_user < 1:
            raise ValueError("min_per_user must be at least 1")
        if self.interactions < self.users * self.min_per_user:
            raise ValueError(f"{self.interactions} interactions cannot give each of {self.users} users "
                             f"{self.min_per_user}")
        if self.interactions > self.users * (self.items // 2):
            raise ValueError(f"{self.interactions} interactions exceed half of every user's {self.items} items")
        if self.interactions < self.items:
            raise ValueError(f"{self.interactions} interactions cannot cover {self.items} items")
        if self.popularity_exponent < 0 or self.activity_sigma < 0:
            raise ValueError("popularity_exponent and activity_sigma must be ≥ 0")


# MicroLens-100K as published: 100,000 users, 19,738 items, 719,405 interactions (every user has ≥ 5).
SHAPES = {"microlens100k": Shape(users=100_000, items=19_738, interactions=719_405, min_per_user=5)}


def user_counts(shape: Shape, generator: torch.Generator) -> torch.Tensor:
    """[users] int64 interactions per user, each in [min_per_user, items // 2], summing to
    ``shape.interactions``."""
    cap = shape.items // 2
    counts = torch.full((shape.users,), shape.min_per_user, dtype=torch.int64)
    share = torch.exp(torch.randn(shape.users, generator=generator, dtype=torch.float64) * shape.activity_sigma)
    remaining = shape.interactions - int(counts.sum())
    while remaining:
        room = (counts < cap).double()
        draws = torch.multinomial(share * room, remaining, replacement=True, generator=generator)
        counts += torch.bincount(draws, minlength=shape.users)
        counts.clamp_(max=cap)
        remaining = shape.interactions - int(counts.sum())
    return counts


def popularity(shape: Shape, generator: torch.Generator) -> torch.Tensor:
    """[items] float64 draw probabilities: rank r (1-based) gets r^-a, ranks shuffled over the ids."""
    weights = torch.arange(1, shape.items + 1, dtype=torch.float64).pow(-shape.popularity_exponent)
    return (weights / weights.sum())[torch.randperm(shape.items, generator=generator)]


def distinct_items(counts: torch.Tensor, probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sorted keys user * I + item [sum(counts)]: for each user ``counts[u]`` distinct items.
    Every item first goes to the owner of a uniformly drawn interaction slot (so each item
    occurs, and no user gets more than its count); the remaining slots draw items by
    ``probabilities`` [I], and repeats are drawn again until every user has its count."""
    num_items = probabilities.numel()
    cdf = torch.cumsum(probabilities, 0)
    cdf[-1] = 1.0
    slots = torch.randperm(int(counts.sum()), generator=generator)[:num_items]  # [I] distinct slots
    owners = torch.searchsorted(torch.cumsum(counts, 0), slots, right=True)  # [I] the user of each slot
    keys = torch.sort(owners * num_items + torch.arange(num_items)).values
    need = counts - torch.bincount(owners, minlength=counts.numel())
    while int(need.sum()):
        users = torch.repeat_interleave(torch.arange(counts.numel()), need)  # [sum(need)]
        items = torch.searchsorted(cdf, torch.rand(users.numel(), generator=generator, dtype=torch.float64))
        keys = torch.unique(torch.cat([keys, users * num_items + items.clamp_(max=num_items - 1)]))
        need = counts - torch.bincount(keys // num_items, minlength=counts.numel())  # repeats collapsed
    return keys


def timestamps(keys: torch.Tensor, num_items: int, generator: torch.Generator) -> torch.Tensor:
    """[R] int64 Unix seconds for the sorted keys: each user's items in a random order, one a day
    (at a random second of it) from the user's random start."""
    users = keys // num_items
    order = torch.argsort(users * 2 ** 31 + torch.randint(2 ** 31, (keys.numel(),), generator=generator))
    counts = torch.bincount(users)
    first = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(keys)
    position[order] = torch.arange(keys.numel()) - torch.repeat_interleave(first, counts)  # day of each key
    start = START + torch.randint(START_SPREAD, (counts.numel(),), generator=generator)
    return start[users] + position * DAY + torch.randint(DAY, (keys.numel(),), generator=generator)


def stand_in(shape: Shape, seed: int) -> dict:
    """{"user", "item", "timestamp"}: int64 tensors [interactions], sorted by user then item."""
    shape.check()
    generator = torch.Generator().manual_seed(seed)
    counts = user_counts(shape, generator)
    keys = distinct_items(counts, popularity(shape, generator), generator)
    return {"user": keys // shape.items, "item": keys % shape.items,
            "timestamp": timestamps(keys, shape.items, generator)}


def write_stand_in(shape: Shape, seed: int, out_dir: Path, name: str) -> Path:
    """Write ``out_dir/interactions.csv`` and its provenance note; return the csv's path."""
    columns = stand_in(shape, seed)
    out_dir = Path(out_dir)
    path = out_dir / "interactions.csv"
    frame = pd.DataFrame({name: values.numpy() for name, values in columns.items()})
    write_atomically(path, lambda out: frame.to_csv(out, index=False))
    note = {"synthetic": True, "shape": name, "seed": seed, **asdict(shape),
            "note": "Generated by `fedca data synth`; no real user's data. Accuracy on this file says "
                    "nothing about the dataset whose shape it copies."}
    write_text(path.with_name(path.name + PROVENANCE_SUFFIX), json.dumps(note, indent=2) + "\n")
    return path


def read_provenance(path: Path) -> dict | None:
    """The provenance note beside a data file, or None when it has none."""
    note = Path(str(path) + PROVENANCE_SUFFIX)
    if not note.is_file():
        return None
    try:
        value = json.loads(note.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
