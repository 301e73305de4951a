"""Batched evaluation of every client with its own current state.

Scores are the sigmoid outputs in float32, as the official code compares them: large logits
saturate to exactly 1.0 there, and those ties are then broken by the protocol's tie policy.
When the aggregator names experts (PerFedRec), a client's score is the mean of the sigmoid
scores of its own model and of each expert's model, all with the client's own user vector.
"""

from typing import Dict, Optional, Sequence

import torch

from fedca.aggregators.base import Experts
from fedca.data.fed_data import FedData
from fedca.federation.population import Population
from fedca.metrics.means import exact_mean
from fedca.metrics.ranking import ranking_metrics
from fedca.models.backbones import Backbone


def client_scores(population: Population, backbone: Backbone, clients: torch.Tensor, items: torch.Tensor,
                  experts: Sequence[Experts] = ()) -> torch.Tensor:
    """Sigmoid scores [U, C] of ``items`` [U, C] for ``clients`` [U] under each client's own state
    (averaged with the experts' scores when there are any)."""
    vectors = population.store.rows(clients.unsqueeze(1), items)  # [U, C, d]
    user = population.user[clients]  # [U, d]
    scores = torch.sigmoid(backbone.score(user, vectors, population.mlp[clients]))  # [U, C]
    for expert in experts:
        model = expert.assignment.to(clients.device)[clients]  # [U]
        expert_vectors = expert.items[model.unsqueeze(1), items]  # [U, C, d]
        scores = scores + torch.sigmoid(backbone.score(user, expert_vectors, expert.mlp[model]))
    return scores / (1 + len(experts))


def _sampled(population, backbone, data, split, ks, ties, chunks, experts):
    targets = (data.val_items if split == "val" else data.test_items).to(population.store.device)
    negatives = (data.val_negatives if split == "val" else data.test_negatives).to(population.store.device)
    parts = []
    for clients in chunks:
        candidates = torch.cat([targets[clients].unsqueeze(1), negatives[clients]], dim=1)  # [U, 1 + C]
        scores = client_scores(population, backbone, clients, candidates, experts)
        parts.append(ranking_metrics(scores[:, 0], scores[:, 1:], ks, ties))
    return parts


def interacted_mask(data: FedData, clients: torch.Tensor) -> torch.Tensor:
    """[U, I] bool: True where client ``clients[u]`` interacted with the item (any split)."""
    num_items = data.num_items
    keys = data.interacted_keys
    lo = torch.searchsorted(keys, clients * num_items)  # [U]
    hi = torch.searchsorted(keys, (clients + 1) * num_items)
    counts = hi - lo
    within = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    found = keys[torch.repeat_interleave(lo, counts) + within]  # keys of every interaction of the chunk
    mask = torch.zeros(clients.numel(), num_items, dtype=torch.bool)
    mask[torch.repeat_interleave(torch.arange(clients.numel()), counts), found % num_items] = True
    return mask


def _full(population, backbone, data, split, ks, ties, chunks, experts):
    targets = (data.val_items if split == "val" else data.test_items).to(population.store.device)
    all_items = torch.arange(data.num_items, device=population.store.device)
    parts = []
    for clients in chunks:
        scores = client_scores(population, backbone, clients, all_items.expand(clients.numel(), -1), experts)  # [U, I]
        counted = ~interacted_mask(data, clients.cpu())
        target_scores = scores.gather(1, targets[clients].unsqueeze(1)).squeeze(1)
        parts.append(ranking_metrics(target_scores, scores, ks, ties, other_mask=counted.to(scores.device)))
    return parts


def user_metrics(population: Population, backbone: Backbone, data: FedData, split: str, ks: Sequence[int],
                 ties: str, mode: str = "sampled", experts: Sequence[Experts] = (),
                 clients: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Per-user HR@K / NDCG@K [U] (float64, CPU) of ``clients`` [U] (default: all users, in
    order) for ``split`` ('val' or 'test').

    ``mode='sampled'`` ranks the held-out item against the user's eval negatives;
    ``mode='full'`` against every item the user never interacted with.
    """
    everyone = torch.arange(data.num_users) if clients is None else clients.cpu()
    chunk = 4096 if mode == "sampled" else max(1, (1 << 22) // data.num_items)
    chunks = [part.to(population.store.device) for part in torch.split(everyone, chunk)]
    with torch.no_grad():
        if mode == "sampled":
            parts = _sampled(population, backbone, data, split, ks, ties, chunks, experts)
        else:
            parts = _full(population, backbone, data, split, ks, ties, chunks, experts)
    return {name: torch.cat([part[name] for part in parts]).cpu().double() for name in parts[0]}


def evaluate(population: Population, backbone: Backbone, data: FedData, split: str, ks: Sequence[int],
             ties: str, mode: str = "sampled", experts: Sequence[Experts] = (),
             clients: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Mean over ``clients`` of ``user_metrics`` (same arguments)."""
    values = user_metrics(population, backbone, data, split, ks, ties, mode, experts, clients)
    return {name: exact_mean(per_user) for name, per_user in values.items()}
