"""One run across processes: ``torchrun --nproc-per-node=R $(command -v fedca) run ...``.

Every rank holds the whole federation and runs every step of a round the same way, except
local training: the compiled kernel (``fused.train_round``) trains only this rank's shard of
the round's participants (cost-balanced groups, as its threads take them), and the ranks then
exchange what each trained (the shard's compact rows, user vectors, MLPs, losses and epochs:
one all-gather per round). A client's training does not depend on which process or thread
runs it, and the server step and the evaluation are deterministic, so every rank ends each
round with the same state and the metrics equal the single-process run's bit for bit. Rank 0
alone writes the run folder and checkpoints; the other ranks read the checkpoint to resume.

The process group is gloo (the exchanged tensors are CPU tensors from the compiled kernel).
``start()`` joins it when torchrun's variables (``WORLD_SIZE`` > 1) are set; ``ranks()`` is
None in a plain single-process run.
"""

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import List, Optional

import torch

from fedca.errors import FedcaError


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among ``world`` processes of one run."""

    rank: int
    world: int


_RANKS: Optional[Ranks] = None


def requested() -> Optional[Ranks]:
    """The ranks torchrun asked for (its environment variables), or None outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Ranks(rank=int(os.environ["RANK"]), world=world)


def start() -> Optional[Ranks]:
    """Join torchrun's process group (gloo) when there is one; the ranks, or None."""
    global _RANKS
    wanted = requested()
    if wanted is None or _RANKS is not None:
        return _RANKS
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(minutes=30))
    _RANKS = Ranks(rank=dist.get_rank(), world=dist.get_world_size())
    return _RANKS


def ranks() -> Optional[Ranks]:
    return _RANKS


def check_clients(num_clients: int) -> None:
    """FedcaError when the run has fewer training clients than ranks."""
    wanted = _RANKS or requested()
    if wanted is not None and num_clients < wanted.world:
        raise FedcaError(f"torchrun started {wanted.world} ranks but the run has {num_clients} training clients; "
                         f"use at most {num_clients} ranks (--nproc-per-node)")


def all_gather(value) -> List:
    """Every rank's ``value`` (picklable: tensors, numbers), in rank order."""
    import torch.distributed as dist

    gathered: List = [None] * _RANKS.world
    dist.all_gather_object(gathered, value)
    return gathered


def shard_of(groups_offsets, groups_clients, rank: int) -> torch.Tensor:
    """The positions of group ``rank`` of a cost-balanced grouping (``fused.thread_groups``)."""
    return torch.from_numpy(groups_clients[groups_offsets[rank]:groups_offsets[rank + 1]])
