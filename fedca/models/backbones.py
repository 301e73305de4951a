"""Backbones as pure score functions over stacked per-client parameters (ALGORITHMS.md §0.2).

Shapes: a = clients in the batch, B = items scored per client, d = latent dim, P = MLP size.
The MLP of client c is one flat row ``mlp[c]`` [P] holding, layer by layer, the weight
[out, in] then the bias [out] (the order of ``torch.nn.Linear`` state dicts).
"""

import math
from typing import List, Optional

import torch


class Backbone:
    """``score(user [a, d], items [a, B, d], mlp [a, P] | None) -> logits [a, B]``."""

    name = "backbone"

    def mlp_size(self) -> int:
        return 0

    def init_mlp(self, generator: torch.Generator) -> torch.Tensor:
        """[P] initial MLP parameters (empty when the backbone has none)."""
        return torch.zeros(0)

    def score(self, user: torch.Tensor, items: torch.Tensor, mlp: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class FCF(Backbone):
    """Matrix factorisation: logit = u . V[j], no biases."""

    name = "fcf"

    def score(self, user, items, mlp=None):
        return (user.unsqueeze(1) * items).sum(-1)  # [a, B]


class NCF(Backbone):
    """FedNCF (FedCA flavour): logit = MLP([u ; V[j]]), ReLU between layers, none after the last."""

    name = "ncf"

    def __init__(self, layers: List[int]):
        self.layers = list(layers)
        self.shapes = list(zip(self.layers[1:], self.layers[:-1]))  # (out, in) per layer

    def mlp_size(self) -> int:
        return sum(out * inp + out for out, inp in self.shapes)

    def init_mlp(self, generator):
        """PyTorch's Linear default: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in))."""
        parts = []
        for out, inp in self.shapes:
            bound = 1.0 / math.sqrt(inp)
            parts.append((torch.rand(out * inp, generator=generator) * 2 - 1) * bound)
            parts.append((torch.rand(out, generator=generator) * 2 - 1) * bound)
        return torch.cat(parts)

    def unflatten(self, mlp: torch.Tensor) -> list:
        """mlp [a, P] -> [(weight [a, out, in], bias [a, out]) per layer], as views."""
        views, start = [], 0
        for out, inp in self.shapes:
            weight = mlp[:, start: start + out * inp].view(-1, out, inp)  # [a, out, in]
            start += out * inp
            bias = mlp[:, start: start + out]  # [a, out]
            start += out
            views.append((weight, bias))
        return views

    def score(self, user, items, mlp):
        hidden = torch.cat([user.unsqueeze(1).expand(-1, items.shape[1], -1), items], dim=-1)  # [a, B, 2d]
        layers = self.unflatten(mlp)
        for index, (weight, bias) in enumerate(layers):
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))  # [a, B, out]
            if index < len(layers) - 1:
                hidden = torch.relu(hidden)
        return hidden.squeeze(-1)  # [a, B]


def build_backbone(name: str, mlp_layers: List[int]) -> Backbone:
    """The backbone called ``name`` (``fcf`` or ``ncf``)."""
    if name == "fcf":
        return FCF()
    if name == "ncf":
        return NCF(mlp_layers)
    raise ValueError(f"unknown backbone {name!r}")
