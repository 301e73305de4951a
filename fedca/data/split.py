"""Clean, filter, reindex and split interactions by leave-one-out over time.

Rules (each a protocol field, written into every result):

* implicit feedback: a row counts as an interaction when ``rating > binarize_threshold``;
* ``duplicates``: repeated (user, item) rows are all kept (``keep_all``, the official loader)
  or reduced to the first/last occurrence in file order;
* users with fewer than ``min_interactions`` interactions are dropped (one pass, items are
  not re-filtered), then users and items are renumbered 0.. in order of first appearance;
* each user's interactions are ordered by (time, file position): the last one is the test
  item, the one before it the validation item, the rest are training positives.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedca.errors import FedcaError


@dataclass
class Split:
    """A leave-one-out split over renumbered ids.

    ``train_items`` [T] holds every user's training positives (time order) back to back;
    user u owns ``train_items[train_offsets[u]:train_offsets[u + 1]]``. ``val_items`` and
    ``test_items`` are [N]. ``raw_user_ids`` [N] and ``raw_item_ids`` [I] map back to the file.
    """

    train_items: np.ndarray
    train_offsets: np.ndarray
    val_items: np.ndarray
    test_items: np.ndarray
    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.raw_user_ids)

    @property
    def num_items(self) -> int:
        return len(self.raw_item_ids)


def clean(frame: pd.DataFrame, *, binarize_threshold: float, duplicates: str, min_interactions: int,
          source: str) -> pd.DataFrame:
    """Apply binarisation, the duplicate policy and the user filter; renumber ids.

    ``frame`` has raw ``user, item, rating, time, pos``; the result adds ``uid``/``iid`` (0-based).
    """
    kept = frame[frame["rating"] > binarize_threshold]
    if duplicates != "keep_all":
        kept = kept.drop_duplicates(["user", "item"], keep="first" if duplicates == "keep_first" else "last")
    counts = kept.groupby("user", sort=False)["item"].transform("size")
    kept = kept[counts >= min_interactions]
    if kept.empty:
        raise FedcaError(f"{source}: no user has at least protocol.min_interactions={min_interactions} "
                         f"interactions with rating > {binarize_threshold}")
    kept = kept.copy()
    kept["uid"] = pd.factorize(kept["user"])[0]
    kept["iid"] = pd.factorize(kept["item"])[0]
    return kept


def leave_one_out(kept: pd.DataFrame, source: str) -> Split:
    """Split a cleaned frame: last = test, second last = validation, the rest = training."""
    per_user = kept.groupby("uid", sort=True)["iid"].size().to_numpy()
    short = np.flatnonzero(per_user < 3)
    if short.size:
        uid = int(short[0])
        raw = kept.loc[kept["uid"] == uid, "user"].iloc[0]
        raise FedcaError(f"{source}: user {raw} has {per_user[uid]} interactions; leave-one-out needs at least 3 "
                         f"(raise protocol.min_interactions to 3 or more)")
    ordered = kept.sort_values(["uid", "time", "pos"], kind="stable")
    users = ordered["uid"].to_numpy()
    items = ordered["iid"].to_numpy().astype(np.int64)
    ends = np.cumsum(per_user)
    test_pos = ends - 1
    val_pos = ends - 2
    train_mask = np.ones(len(items), dtype=bool)
    train_mask[test_pos] = False
    train_mask[val_pos] = False
    train_counts = per_user - 2
    offsets = np.concatenate([[0], np.cumsum(train_counts)]).astype(np.int64)
    raw_users = kept.drop_duplicates("uid").sort_values("uid")["user"].to_numpy()
    raw_items = kept.drop_duplicates("iid").sort_values("iid")["item"].to_numpy()
    assert users[train_mask].size == offsets[-1]
    return Split(train_items=items[train_mask], train_offsets=offsets, val_items=items[val_pos],
                 test_items=items[test_pos], raw_user_ids=raw_users, raw_item_ids=raw_items)
