"""Backbones as pure score functions over stacked per-client parameters (docs/methods/backbones.md).

Shapes: a = clients in the batch, B = items scored per client, d = latent dim, P = MLP size.
The MLP of client c is one flat row ``mlp[c]`` [P] holding, layer by layer, the weight
[out, in] then the bias [out] (the order of ``torch.nn.Linear`` state dicts).
"""

import math
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from fedca.models.config import ModelConfig, NCFModelConfig, PFedRecModelConfig


class NonFiniteScores(ArithmeticError):
    """Training produced NaN or infinite scores for ``clients`` clients of the batch."""

    def __init__(self, clients: int):
        super().__init__(f"non-finite scores for {clients} clients")
        self.clients = clients


def checked_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid(logits) [a, B], raising NonFiniteScores when a score is NaN (diverged parameters)."""
    prob = torch.sigmoid(logits)
    bad = torch.isnan(prob)
    if bool(bad.any()):
        raise NonFiniteScores(int(bad.any(dim=1).sum()))
    return prob


def binary_cross_entropy(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PyTorch's BCE for 0/1 targets, -max(log p, -100) or -max(log(1 - p), -100) [a, B], with
    vectorised logarithms: several times faster on a CPU than ``F.binary_cross_entropy``, whose
    scalar logarithms it matches to one ulp."""
    return -torch.where(target > 0, torch.log(prob).clamp_(min=-100), torch.log1p(-prob).clamp_(min=-100))


def bce_and_logit_grad(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple:
    """Per-instance BCE [a, B] of sigmoid(logits) and d sum(weight * BCE) / d logits [a, B], in the
    closed form of PyTorch's BCE and sigmoid backward: (p - y) / max(p (1 - p), 1e-12) * p (1 - p)."""
    prob = checked_sigmoid(logits)  # [a, B]
    loss = binary_cross_entropy(prob, target)
    slope = (1 - prob) * prob
    return loss, weight * (prob - target) / slope.clamp(min=1e-12) * slope


@dataclass
class ItemGrads:
    """Gradient w.r.t. a batch's item vectors [a, B, d]: ``dense``, or, for backbones whose logit
    is u . v (+ b), the rank-one product of its factors ``logit`` [a, B] (d loss / d logit) and
    ``user`` [a, d] (d logit / d v), which lets the engine scatter one number per instance."""

    dense: Optional[torch.Tensor] = None
    logit: Optional[torch.Tensor] = None
    user: Optional[torch.Tensor] = None

    def part(self, first: int, end: int) -> "ItemGrads":
        """The gradient of batch clients [first, end)."""
        if self.dense is not None:
            return ItemGrads(dense=self.dense[first:end])
        return ItemGrads(logit=self.logit[first:end], user=self.user[first:end])

    def full(self) -> torch.Tensor:
        """The gradient [a, B, d]."""
        if self.dense is not None:
            return self.dense
        return self.logit.unsqueeze(2) * self.user.unsqueeze(1)


class Backbone:
    """``score(user [a, d], items [a, B, d], mlp [a, P] | None) -> logits [a, B]``.
    ``rank_one_item_grads``: ``loss_and_grads`` returns the item gradient as rank-one factors.
    ``fused_kernel``: the compiled CPU kernel (``fedca/federation/fused.py``) implements this
    score function and its gradients (through ``layout``)."""

    name = "backbone"
    rank_one_item_grads = False
    fused_kernel: ClassVar[bool] = False
    config: ClassVar[type] = ModelConfig
    personal_mlp: ClassVar[bool] = False  # the MLP block is the client's own (an aggregator must not average it)

    @classmethod
    def from_config(cls, mlp_layers: Sequence[int], dim: int) -> "Backbone":
        """The backbone for ``model.mlp_layers`` and ``model.latent_dim`` (each takes what it needs)."""
        return cls()

    def layout(self) -> list:
        """[(in, out, weight offset, bias offset)] of each MLP layer in the flat MLP row (none here)."""
        return []

    def mlp_size(self) -> int:
        return 0

    def init_mlp(self, generator: torch.Generator) -> torch.Tensor:
        """[P] initial MLP parameters (empty when the backbone has none)."""
        return torch.zeros(0)

    def init_user(self, rows: int, dim: int, std: float, generator: torch.Generator) -> torch.Tensor:
        """[rows, d] initial user vectors: N(0, std^2), as an Embedding row."""
        return torch.randn(rows, dim, generator=generator) * std

    def score(self, user: torch.Tensor, items: torch.Tensor, mlp: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss_and_grads(self, user: torch.Tensor, items: torch.Tensor, mlp: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor) -> tuple:
        """BCE on sigmoid scores and the gradients of sum(weight * BCE).

        user [a, d], items [a, B, d], mlp [a, P], target and weight [a, B]. Returns the
        per-instance loss [a, B] and the gradients w.r.t. user, items (``ItemGrads``) and mlp
        (None when P = 0).
        """
        leaves = [user.detach().requires_grad_(True), items.detach().requires_grad_(True)]
        has_mlp = mlp.shape[1] > 0
        leaves.append(mlp.detach().requires_grad_(has_mlp))
        with torch.enable_grad():
            loss = F.binary_cross_entropy(checked_sigmoid(self.score(*leaves)), target, reduction="none")
            (loss * weight).sum().backward()
        return loss.detach(), leaves[0].grad, ItemGrads(dense=leaves[1].grad), leaves[2].grad if has_mlp else None


class FCF(Backbone):
    """Matrix factorisation: logit = u . V[j], no biases."""

    name = "fcf"
    rank_one_item_grads = True
    fused_kernel = True

    def score(self, user, items, mlp=None):
        return torch.einsum("abd,ad->ab", items, user)  # [a, B]

    def loss_and_grads(self, user, items, mlp, target, weight):
        loss, grad_logit = bce_and_logit_grad(self.score(user, items, mlp), target, weight)
        grad_user = torch.einsum("ab,abd->ad", grad_logit, items)  # [a, d]
        return loss, grad_user, ItemGrads(logit=grad_logit, user=user), None


class PFedRecHead(FCF):
    """PFedRec (Zhang et al., IJCAI 2023; docs/methods/backbones.md §PFedRec): logit = w_i . V[j] + b_i, no
    user embedding. The personal score function lives in the user slot (w_i [d]) and the
    one-entry MLP (b_i [1]); both start as PyTorch's Linear(d, 1) default, U(-1/sqrt(d), 1/sqrt(d))."""

    name = "pfedrec"
    fused_kernel = False
    config = PFedRecModelConfig
    personal_mlp = True  # b_i

    def __init__(self, dim: int):
        self.bound = 1.0 / math.sqrt(dim)

    @classmethod
    def from_config(cls, mlp_layers, dim):
        return cls(dim)

    def mlp_size(self) -> int:
        return 1

    def init_mlp(self, generator):
        return (torch.rand(1, generator=generator) * 2 - 1) * self.bound

    def init_user(self, rows, dim, std, generator):
        return (torch.rand(rows, dim, generator=generator) * 2 - 1) * self.bound

    def score(self, user, items, mlp):
        return torch.einsum("abd,ad->ab", items, user) + mlp  # [a, B]

    def loss_and_grads(self, user, items, mlp, target, weight):
        loss, grad_logit = bce_and_logit_grad(self.score(user, items, mlp), target, weight)
        grad_user = torch.einsum("ab,abd->ad", grad_logit, items)  # [a, d]
        return loss, grad_user, ItemGrads(logit=grad_logit, user=user), grad_logit.sum(1, keepdim=True)  # bias [a, 1]


class NCF(Backbone):
    """FedNCF (FedCA flavour): logit = MLP([u ; V[j]]), ReLU between layers, none after the last."""

    name = "ncf"
    fused_kernel = True
    config = NCFModelConfig

    def __init__(self, layers: List[int]):
        self.layers = list(layers)
        self.shapes = list(zip(self.layers[1:], self.layers[:-1]))  # (out, in) per layer

    @classmethod
    def from_config(cls, mlp_layers, dim):
        return cls(mlp_layers)

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

    def layout(self) -> list:
        """[(in, out, weight offset, bias offset)] of each layer in the flat MLP row."""
        layers, start = [], 0
        for out, inp in self.shapes:
            layers.append((inp, out, start, start + out * inp))
            start += out * inp + out
        return layers

    def unflatten(self, mlp: torch.Tensor) -> list:
        """mlp [a, P] -> [(weight [a, out, in], bias [a, out]) per layer], as views."""
        return [(mlp[:, at: at + out * inp].view(-1, out, inp), mlp[:, bias_at: bias_at + out])
                for inp, out, at, bias_at in self.layout()]

    def score(self, user, items, mlp):
        hidden = torch.cat([user.unsqueeze(1).expand(-1, items.shape[1], -1), items], dim=-1)  # [a, B, 2d]
        layers = self.unflatten(mlp)
        for index, (weight, bias) in enumerate(layers):
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))  # [a, B, out]
            if index < len(layers) - 1:
                hidden = torch.relu(hidden)
        return hidden.squeeze(-1)  # [a, B]


BACKBONES: Dict[str, type] = {backbone.name: backbone for backbone in (FCF, NCF, PFedRecHead)}


def build_backbone(name: str, mlp_layers: List[int], dim: int = 16) -> Backbone:
    """The backbone called ``name`` (a key of ``BACKBONES``; ``dim`` = latent_dim)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}")
    return BACKBONES[name].from_config(mlp_layers, dim)
