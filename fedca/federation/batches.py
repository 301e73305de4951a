"""A round's training instances for all participants, grouped by client, and their per-epoch order.

Each positive is followed by its K fresh negatives (label 1 then K zeros), as the official
code lays them out; DataLoader-style shuffling then permutes each client's instances anew every
epoch and cuts them into mini-batches of ``batch_size``.

Clients are put in *training order*: descending number of mini-batches, ties by population
index. Then the clients still busy at step s of an epoch are always a prefix of that order,
which keeps every per-step tensor a contiguous slice.
"""

from dataclasses import dataclass

import numpy as np
import torch

from fedca.data.fed_data import FedData
from fedca.data.negatives import sample_train_negatives


@dataclass
class RoundBatches:
    """clients [n] population indices in training order; offsets [n + 1] delimit each client's
    instances in items [T] (item ids) and labels [T] (1.0 positive, 0.0 negative);
    num_batches [n] mini-batches per epoch; batch_size instances per mini-batch."""

    clients: torch.Tensor
    offsets: torch.Tensor
    items: torch.Tensor
    labels: torch.Tensor
    num_batches: torch.Tensor
    batch_size: int

    @property
    def sizes(self) -> torch.Tensor:
        """[n] training instances per client (n_i of docs/methods/local_training.md §Instances)."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def owner(self) -> torch.Tensor:
        """[T] position (in training order) of each instance's client."""
        return torch.repeat_interleave(torch.arange(self.clients.numel()), self.sizes)


def build_round(data: FedData, participants: torch.Tensor, num_negatives: int, batch_size: int,
                generator: torch.Generator) -> RoundBatches:
    """Draw this round's negatives for ``participants`` [n] and lay out their instances."""
    positives_per_client = data.train_offsets[participants + 1] - data.train_offsets[participants]  # [n]
    sizes = positives_per_client * (1 + num_negatives)
    num_batches = (sizes + batch_size - 1) // batch_size
    key = -num_batches * (data.num_users + 1) + participants
    order = torch.argsort(key)
    clients = participants[order]
    counts = positives_per_client[order]
    starts = data.train_offsets[clients]
    owner = torch.repeat_interleave(torch.arange(clients.numel()), counts)  # [P]
    within = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    positives = data.train_items[starts[owner] + within]  # [P]
    negatives = sample_train_negatives(clients[owner], data.train_excluded_keys, data.num_items,
                                       num_negatives, generator)  # [P, K]
    items = torch.cat([positives.unsqueeze(1), negatives], dim=1).reshape(-1)  # [P * (1 + K)]
    labels = torch.zeros(positives.numel(), 1 + num_negatives)
    labels[:, 0] = 1.0
    offsets = torch.zeros(clients.numel() + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts * (1 + num_negatives), 0)
    return RoundBatches(clients=clients, offsets=offsets, items=items, labels=labels.reshape(-1),
                        num_batches=num_batches[order], batch_size=batch_size)


class EpochShuffle:
    """Per-epoch order of one round's instances: each client's block permuted uniformly at
    random, blocks kept in place (DataLoader ``shuffle=True``, one loader per client).

    Instance t gets noise ~ U{0, ..., 2^31 - 1} from the shuffle generator and each block is
    ordered by (noise, position in block). The key (block, noise, position) is packed into one
    int64 and sorted by value, several times faster than an argsort, and the position is read
    back from the sorted keys. Keys wider than ``key_bits`` (63) fall back to a stable argsort, which
    gives the same order.
    """

    NOISE_BITS = 31

    def __init__(self, batches: RoundBatches, key_bits: int = 63):
        sizes = batches.sizes
        self.count = batches.items.numel()
        owner = batches.owner  # [T]
        self.start = batches.offsets[:-1][owner]  # [T] first instance of each instance's block
        self.position_bits = max(1, int(sizes.max()) - 1).bit_length() if self.count else 1
        owner_bits = max(1, sizes.numel() - 1).bit_length()
        self.packed = owner_bits + self.NOISE_BITS + self.position_bits <= key_bits
        if self.packed:
            position = torch.arange(self.count) - self.start
            self.fixed = (owner << (self.NOISE_BITS + self.position_bits)) | position  # [T]
        else:
            self.fixed = owner << self.NOISE_BITS

    def noise(self, generator: torch.Generator) -> torch.Tensor:
        """[T] the next epoch's noise (int32), one draw from ``generator``."""
        return torch.randint(1 << self.NOISE_BITS, (self.count,), generator=generator, dtype=torch.int32)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """[T] instance indices for the next epoch."""
        noise = self.noise(generator)
        if not self.packed:
            return torch.sort(self.fixed | noise, stable=True).indices
        keys = noise.long().bitwise_left_shift_(self.position_bits).bitwise_or_(self.fixed)
        ordered = torch.from_numpy(np.sort(keys.numpy()))
        return ordered.bitwise_and_((1 << self.position_bits) - 1).add_(self.start)
