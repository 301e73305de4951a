"""Negative sampling (data/negatives.py) on hand-sized interaction sets.

Exact expectations come from two facts: a user with exactly ``count`` items it never interacted
with must get exactly those items, and the eval sampler's rows are the ``count`` smallest of one
uniform key per cell drawn chunk by chunk (so the same raw draws, sorted, give the same rows).
"""

import pytest
import torch

from fedca.data.negatives import contains, pair_keys, sample_eval_negatives, sample_train_negatives
from fedca.errors import FedcaError


def test_pair_keys_are_sorted_unique_user_major_keys():
    users = torch.tensor([1, 0, 1, 1], dtype=torch.int32)
    items = torch.tensor([2, 2, 0, 2], dtype=torch.int32)
    keys = pair_keys(users, items, num_items=3)
    # (1, 2) -> 1 * 3 + 2 = 5; (0, 2) -> 2; (1, 0) -> 3; the repeated (1, 2) appears once
    assert keys.tolist() == [2, 3, 5]
    assert keys.dtype == torch.int64


def test_pair_keys_do_not_overflow_int32_ids():
    users = torch.tensor([70_000], dtype=torch.int32)
    items = torch.tensor([5], dtype=torch.int32)
    assert pair_keys(users, items, num_items=70_000).tolist() == [70_000 * 70_000 + 5]


def test_contains_answers_membership_for_every_key():
    sorted_keys = torch.tensor([2, 5, 9])
    keys = torch.tensor([[2, 3, 9], [10, 0, 5]])
    # 10 lies past the last key (searchsorted gives 3, clamped to 2 -> 9 != 10)
    assert contains(sorted_keys, keys).tolist() == [[True, False, True], [False, False, True]]


def test_contains_on_an_empty_key_set_is_all_false():
    keys = torch.tensor([0, 1, 7])
    out = contains(torch.zeros(0, dtype=torch.long), keys)
    assert out.tolist() == [False, False, False] and out.dtype == torch.bool


def interacted(pairs, num_items):
    users = torch.tensor([u for u, _ in pairs])
    items = torch.tensor([j for _, j in pairs])
    return pair_keys(users, items, num_items)


def expected_eval_rows(keys_per_chunk, seen, count):
    """The ``count`` smallest keys of each row among its never-seen items, from the raw draws."""
    rows = []
    for keys in keys_per_chunk:
        for row in keys:
            user = len(rows)
            candidates = [j for j in range(row.numel()) if (user, j) not in seen]
            rows.append(sorted(candidates, key=lambda j: float(row[j]))[:count])
    return rows


@pytest.mark.parametrize("chunk_cells", [1 << 24, 6, 5])
def test_eval_negatives_are_the_smallest_keys_among_never_seen_items(chunk_cells):
    num_users, num_items, count = 4, 6, 2
    seen = {(0, 1), (0, 4), (1, 0), (2, 5), (3, 0), (3, 1), (3, 2)}
    keys = interacted(seen, num_items)
    out = sample_eval_negatives(keys, num_users, num_items, count, torch.Generator().manual_seed(7),
                                chunk_cells=chunk_cells)
    rows_per_chunk = max(1, chunk_cells // num_items)  # 4 users at once, or one user per chunk
    generator = torch.Generator().manual_seed(7)
    draws = [torch.rand(min(rows_per_chunk, num_users - start), num_items, generator=generator)
             for start in range(0, num_users, rows_per_chunk)]
    assert out.tolist() == expected_eval_rows(draws, seen, count)
    assert out.shape == (4, 2) and out.dtype == torch.int64


def test_eval_negatives_take_every_free_item_when_exactly_count_are_free():
    num_items = 5
    seen = {(0, 0), (0, 1), (0, 2), (1, 4), (1, 3), (1, 0)}  # each user has items left: {3, 4} and {1, 2}
    out = sample_eval_negatives(interacted(seen, num_items), 2, num_items, 2, torch.Generator().manual_seed(0))
    assert sorted(out[0].tolist()) == [3, 4]
    assert sorted(out[1].tolist()) == [1, 2]


def test_eval_negatives_name_the_user_with_too_few_free_items():
    num_items = 4
    seen = {(0, 0), (1, 0), (1, 1), (1, 2)}  # user 1 has one free item, 2 are asked for
    keys = interacted(seen, num_items)
    with pytest.raises(FedcaError, match=r"ml-x: user u-b has only 1 items .* but 2 eval negatives"):
        sample_eval_negatives(keys, 2, num_items, 2, torch.Generator().manual_seed(0),
                              raw_user_ids=["u-a", "u-b"], source="ml-x")
    with pytest.raises(FedcaError, match="dataset: user 1 has only 1 items"):
        sample_eval_negatives(keys, 2, num_items, 2, torch.Generator().manual_seed(0))


def test_train_negatives_are_distinct_and_never_excluded():
    num_items, count = 8, 4
    users = torch.tensor([0, 0, 1, 2, 2, 2], dtype=torch.int32)
    excluded = interacted({(0, 0), (0, 1), (0, 2), (1, 7), (2, 3), (2, 4)}, num_items)
    out = sample_train_negatives(users, excluded, num_items, count, torch.Generator().manual_seed(1))
    assert out.shape == (6, 4) and out.dtype == torch.int64
    banned = {(0, 0), (0, 1), (0, 2), (1, 7), (2, 3), (2, 4)}
    for user, row in zip(users.tolist(), out.tolist()):
        assert len(set(row)) == count
        assert all(0 <= item < num_items and (user, item) not in banned for item in row)


def test_train_negatives_fill_every_free_item_when_exactly_count_are_free():
    # users 0 and 1 each have exactly three items they may get; the rejection loop must find them all
    num_items = 6
    excluded = interacted({(0, 0), (0, 2), (0, 4), (1, 1), (1, 2), (1, 3)}, num_items)
    users = torch.tensor([0, 1, 0, 1])
    out = sample_train_negatives(users, excluded, num_items, 3, torch.Generator().manual_seed(2))
    assert [sorted(row) for row in out.tolist()] == [[1, 3, 5], [0, 4, 5], [1, 3, 5], [0, 4, 5]]


def test_train_negatives_first_column_is_uniform_over_allowed_items():
    # one allowed set {1, 2, 3} out of 4 items; 3000 draws: each item ~1000 (binomial sd ~26)
    excluded = interacted({(0, 0)}, 4)
    out = sample_train_negatives(torch.zeros(3000, dtype=torch.long), excluded, 4, 1, torch.Generator().manual_seed(3))
    counts = torch.bincount(out[:, 0], minlength=4).tolist()
    assert counts[0] == 0
    assert all(850 < c < 1150 for c in counts[1:])  # about 5.7 sd either side


def test_train_negatives_with_nothing_excluded_still_differ_within_a_row():
    out = sample_train_negatives(torch.zeros(50, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3, 3,
                                 torch.Generator().manual_seed(4))
    assert all(sorted(row) == [0, 1, 2] for row in out.tolist())
