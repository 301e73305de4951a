"""Population: every client's state stacked in tensors (N clients, I items, d dims, P MLP size)."""

from dataclasses import dataclass

import torch

from fedca.models.backbones import Backbone


@dataclass
class Population:
    """user [N, d] private user vectors; items [N, I, d] each client's item table (contiguous:
    local training reads and writes it through an [N * I, d] view);
    mlp [N, P] each client's score-function MLP (P = 0 for FCF)."""

    user: torch.Tensor
    items: torch.Tensor
    mlp: torch.Tensor

    @property
    def num_clients(self) -> int:
        return self.user.shape[0]

    @classmethod
    def initial(cls, num_clients: int, num_items: int, dim: int, backbone: Backbone, *, init: str,
                user_init: str, generator: torch.Generator, device: torch.device) -> "Population":
        """The official start: one item table, one MLP and (``user_init=shared``) one user vector
        copied to every client. ``init=official`` draws N(0, 1) (PyTorch's Embedding default);
        ``init=small`` draws N(0, (0.01 / sqrt(d))^2), the reference's disabled initialiser."""
        std = 1.0 if init == "official" else 0.01 / dim ** 0.5
        table = torch.randn(num_items, dim, generator=generator) * std  # [I, d]
        user_rows = num_clients if user_init == "random" else 1
        user = backbone.init_user(user_rows, dim, std, generator)  # [1 or N, d]
        mlp = backbone.init_mlp(generator)  # [P]
        return cls(user=user.expand(num_clients, dim).contiguous().to(device),
                   items=table.to(device).unsqueeze(0).repeat(num_clients, 1, 1),
                   mlp=mlp.to(device).unsqueeze(0).repeat(num_clients, 1))
