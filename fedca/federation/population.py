"""Population: every client's state (N clients, I items, d dims, P MLP size): user vectors and
MLPs stacked in tensors, item tables in a client store (``fedca.federation.store``)."""

from pathlib import Path
from typing import Optional

import torch

from fedca.federation.store import DenseStore, ItemStore, build_store
from fedca.models.backbones import Backbone


class Population:
    """user [N, d] private user vectors; ``store`` every client's item table (logically
    [N, I, d]); mlp [N, P] each client's score-function MLP (P = 0 for FCF).

    ``Population(user=, items=, mlp=)`` takes the tables as one [N, I, d] tensor (a dense store
    over it); ``items`` gives them back as one tensor (the dense store's own, else a copy), for
    tests and small runs: engine code goes through ``store``."""

    def __init__(self, user: torch.Tensor, items: Optional[torch.Tensor] = None, mlp: Optional[torch.Tensor] = None,
                 store: Optional[ItemStore] = None):
        self.user, self.mlp = user, mlp
        self.store = store if store is not None else DenseStore(items)

    @property
    def items(self) -> torch.Tensor:
        return self.store.full()

    @property
    def num_clients(self) -> int:
        return self.user.shape[0]

    @classmethod
    def initial(cls, num_clients: int, num_items: int, dim: int, backbone: Backbone, *, init: str,
                user_init: str, generator: torch.Generator, device: torch.device, store: str = "dense",
                folder: Path = Path(".")) -> "Population":
        """The official start: one item table, one MLP and (``user_init=shared``) one user vector
        copied to every client. ``init=official`` draws N(0, 1) (PyTorch's Embedding default);
        ``init=small`` draws N(0, (0.01 / sqrt(d))^2), the reference's disabled initialiser.
        ``store``: which client store holds the tables (``folder``: the disk store's)."""
        std = 1.0 if init == "official" else 0.01 / dim ** 0.5
        table = torch.randn(num_items, dim, generator=generator) * std  # [I, d]
        user_rows = num_clients if user_init == "random" else 1
        user = backbone.init_user(user_rows, dim, std, generator)  # [1 or N, d]
        mlp = backbone.init_mlp(generator)  # [P]
        return cls(user=user.expand(num_clients, dim).contiguous().to(device),
                   store=build_store(store, table.to(device), num_clients, folder),
                   mlp=mlp.to(device).unsqueeze(0).repeat(num_clients, 1))
