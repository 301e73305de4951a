"""Negative sampling: eval candidates once per (dataset, protocol, seed), training negatives every round.

Membership ("did user u interact with item j?") is answered by binary search over sorted keys
``u * I + j``, so no dense [N, I] matrix is needed in the training loop.
"""

import torch

from fedca.errors import FedcaError


def pair_keys(users: torch.Tensor, items: torch.Tensor, num_items: int) -> torch.Tensor:
    """Sorted unique int64 keys ``user * num_items + item`` for the pairs given ([P] each)."""
    return torch.unique(users.long() * num_items + items.long())


def contains(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Bool tensor shaped like ``keys``: which keys occur in ``sorted_keys`` [K] (ascending)."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    where = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[where] == keys


def sample_eval_negatives(interacted_keys: torch.Tensor, num_users: int, num_items: int, count: int,
                          generator: torch.Generator, raw_user_ids=None, source: str = "dataset",
                          chunk_cells: int = 1 << 24) -> torch.Tensor:
    """Draw ``count`` distinct items per user, uniformly among the items the user never interacted with.

    Returns [N, count] int64. Users are processed in chunks of about ``chunk_cells`` user-item
    cells: each cell gets a uniform key, interacted cells get key 2, and the ``count`` smallest
    keys of a row are a uniform sample without replacement.
    """
    per_user_interacted = torch.bincount(interacted_keys // num_items, minlength=num_users)
    available = num_items - per_user_interacted
    worst = int(torch.argmin(available))
    if int(available[worst]) < count:
        raw = raw_user_ids[worst] if raw_user_ids is not None else worst
        raise FedcaError(f"{source}: user {raw} has only {int(available[worst])} items it never interacted with, "
                         f"but {count} eval negatives are requested (lower protocol.num_eval_negatives)")
    rows_per_chunk = max(1, chunk_cells // num_items)
    out = torch.empty(num_users, count, dtype=torch.long)
    for start in range(0, num_users, rows_per_chunk):
        stop = min(num_users, start + rows_per_chunk)
        keys = torch.rand(stop - start, num_items, generator=generator)  # [chunk, I]
        lo, hi = torch.searchsorted(interacted_keys, torch.tensor([start * num_items, stop * num_items]))
        inside = interacted_keys[lo:hi] - start * num_items
        keys.view(-1)[inside] = 2.0
        out[start:stop] = torch.topk(keys, count, dim=1, largest=False, sorted=True).indices
    return out


def sample_train_negatives(users: torch.Tensor, excluded_keys: torch.Tensor, num_items: int, count: int,
                           generator: torch.Generator) -> torch.Tensor:
    """For every positive (its user in ``users`` [P]), draw ``count`` distinct negatives.

    Each column is drawn uniformly from the items whose key ``user * I + item`` is not in
    ``excluded_keys`` (sorted) and not already taken by an earlier column of the same row, by
    redrawing rejected entries until none is left: a uniform sample without replacement.
    Returns [P, count] int64.
    """
    users = users.long()
    out = torch.empty(users.numel(), count, dtype=torch.long)
    base = users * num_items
    for column in range(count):
        draw = torch.randint(num_items, (users.numel(),), generator=generator)
        pending = torch.arange(users.numel())
        while pending.numel():
            bad = contains(excluded_keys, base[pending] + draw)
            if column:
                bad |= (out[pending, :column] == draw.unsqueeze(1)).any(dim=1)
            out[pending[~bad], column] = draw[~bad]
            pending = pending[bad]
            draw = torch.randint(num_items, (pending.numel(),), generator=generator)
    return out
