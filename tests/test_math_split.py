"""Cleaning and the leave-one-out split (data/split.py) on frames small enough to follow by hand."""

import numpy as np
import pandas as pd
import pytest

from fedca.data.split import Split, clean, leave_one_out
from fedca.errors import FedcaError


def frame(rows):
    """rows of (user, item, rating, time); pos is the file position."""
    out = pd.DataFrame(rows, columns=["user", "item", "rating", "time"])
    out["pos"] = np.arange(len(out))
    return out


RAW = frame([
    ("b", "x", 5, 10),
    ("a", "y", 4, 3),
    ("b", "y", 1, 11),   # rating 1: not above the threshold 1, dropped
    ("a", "x", 2, 1),
    ("b", "z", 3, 12),
    ("a", "z", 5, 2),
    ("b", "x", 4, 13),   # repeat of (b, x)
    ("c", "x", 5, 1),    # user c has one interaction
])


def test_clean_keeps_ratings_above_the_threshold_and_renumbers_by_first_appearance():
    kept = clean(RAW, binarize_threshold=1, duplicates="keep_all", min_interactions=2, source="t")
    assert kept["pos"].tolist() == [0, 1, 3, 4, 5, 6]  # rating 1 and the single-interaction user c dropped
    assert kept["uid"].tolist() == [0, 1, 1, 0, 1, 0]  # b first, then a
    assert kept["iid"].tolist() == [0, 1, 0, 2, 2, 0]  # x, y, z in order of first appearance
    assert "uid" not in RAW.columns  # the caller's frame is left alone


def test_clean_threshold_is_strict():
    kept = clean(RAW, binarize_threshold=4, duplicates="keep_all", min_interactions=1, source="t")
    assert kept["pos"].tolist() == [0, 5, 7]  # only the 5s: 4 is not above 4


@pytest.mark.parametrize("policy, positions", [("keep_first", [0, 1, 3, 4, 5]), ("keep_last", [1, 3, 4, 5, 6])])
def test_duplicate_policies_keep_one_occurrence(policy, positions):
    kept = clean(RAW, binarize_threshold=1, duplicates=policy, min_interactions=2, source="t")
    assert kept["pos"].tolist() == positions


def test_min_interactions_counts_after_duplicates_are_removed():
    # b has x, z (and x again): 3 rows with keep_all, 2 with keep_first
    assert 6 in clean(RAW, binarize_threshold=1, duplicates="keep_all", min_interactions=3, source="t")["pos"].tolist()
    kept = clean(RAW, binarize_threshold=1, duplicates="keep_first", min_interactions=3, source="t")
    assert kept["user"].unique().tolist() == ["a"]
    assert kept["uid"].tolist() == [0, 0, 0]


def test_clean_names_the_source_and_settings_when_nothing_is_left():
    with pytest.raises(FedcaError, match=r"^src: no user has at least protocol.min_interactions=9 .*rating > 1$"):
        clean(RAW, binarize_threshold=1, duplicates="keep_all", min_interactions=9, source="src")


def test_leave_one_out_holds_out_the_last_two_interactions_in_time_order():
    # user a (uid 1 after b): x at t=1, z at t=2, y at t=3, then w at t=4 and v at t=4 (file order breaks ties)
    raw = frame([("b", "x", 5, 10), ("a", "y", 5, 3), ("b", "y", 5, 11), ("a", "x", 5, 1), ("b", "z", 5, 12),
                 ("a", "z", 5, 2), ("a", "w", 5, 4), ("a", "v", 5, 4)])
    split = leave_one_out(clean(raw, binarize_threshold=0, duplicates="keep_all", min_interactions=3, source="t"), "t")
    # items: x 0, y 1, z 2, w 3, v 4; users: b 0, a 1
    assert split.test_items.tolist() == [2, 4]  # b's last is z (t=12); a's last is v (t=4, later in the file)
    assert split.val_items.tolist() == [1, 3]  # b: y (t=11); a: w
    assert split.train_offsets.tolist() == [0, 1, 4]
    assert split.train_items.tolist() == [0, 0, 2, 1]  # b: x; a: x, z, y
    assert split.raw_user_ids.tolist() == ["b", "a"]
    assert split.raw_item_ids.tolist() == ["x", "y", "z", "w", "v"]
    assert (split.num_users, split.num_items) == (2, 5)
    assert split.train_items.dtype == np.int64 and split.train_offsets.dtype == np.int64


def test_leave_one_out_needs_three_interactions_per_user():
    raw = frame([("a", "x", 5, 1), ("a", "y", 5, 2), ("a", "z", 5, 3), ("b", "x", 5, 1), ("b", "y", 5, 2)])
    kept = clean(raw, binarize_threshold=0, duplicates="keep_all", min_interactions=1, source="t")
    with pytest.raises(FedcaError, match=r"^ml: user b has 2 interactions; leave-one-out needs at least 3"):
        leave_one_out(kept, "ml")


def test_exactly_three_interactions_leave_one_training_item():
    raw = frame([("a", "x", 5, 3), ("a", "y", 5, 1), ("a", "z", 5, 2)])
    split = leave_one_out(clean(raw, binarize_threshold=0, duplicates="keep_all", min_interactions=3, source="t"), "t")
    assert (split.train_items.tolist(), split.val_items.tolist(), split.test_items.tolist()) == ([1], [2], [0])
    assert isinstance(split, Split) and split.train_offsets.tolist() == [0, 1]
