"""The one aggregator interface: ``aggregate(uploads, state, ctx) -> (downloads, state)``.

Shapes: n participants (training order), m clients in a personalised download, I items,
d dims, P MLP size.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from fedca.federation.population import Population


class Uploads:
    """What the participants send: their trained item tables and MLPs, sample counts and
    per-item training counts. User vectors are not reachable from here."""

    def __init__(self, population: Population, clients: torch.Tensor, sample_counts: torch.Tensor,
                 row_keys: torch.Tensor, row_counts: torch.Tensor):
        self._population = population
        self.clients = clients  # [n] population indices
        self.sample_counts = sample_counts  # [n] training instances per client
        self._row_keys = row_keys  # [R] position * I + item
        self._row_counts = row_counts  # [R] how often that item occurred in the client's instances

    @property
    def num_items(self) -> int:
        return self._population.items.shape[1]

    def item_tables(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, I, d] trained item tables of the participants at ``positions`` [m]."""
        return self._population.items[self.clients[positions]]

    def mlp(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, P] trained MLP parameters of the participants at ``positions`` [m]."""
        return self._population.mlp[self.clients[positions]]

    def weighted_items(self, weights: torch.Tensor) -> torch.Tensor:
        """[I, d] = sum_i weights[i] * V_i over all participants (weights [n]), without copying tables."""
        full = torch.zeros(self._population.num_clients, dtype=self._population.items.dtype,
                           device=self._population.items.device)
        full[self.clients] = weights.to(full)
        return torch.einsum("n,nid->id", full, self._population.items)  # [I, d]

    def weighted_mlp(self, weights: torch.Tensor) -> torch.Tensor:
        """[P] = sum_i weights[i] * Theta_i over all participants."""
        return weights.to(self._population.mlp) @ self._population.mlp[self.clients]

    def item_counts(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, I] multiplicity of each item in the training instances of the participants at ``positions``."""
        lookup = torch.full((self.clients.numel(),), -1, dtype=torch.long)
        lookup[positions] = torch.arange(positions.numel())
        owner = lookup[self._row_keys // self.num_items]
        keep = owner >= 0
        counts = torch.zeros(positions.numel(), self.num_items, dtype=torch.float64)
        counts[owner[keep], self._row_keys[keep] % self.num_items] = self._row_counts[keep].double()
        return counts


@dataclass
class RoundContext:
    """round (0-based); weights from the schedule (e.g. w_sim, w_comp, interpolation);
    generator for the aggregator's own randomness."""

    round: int
    weights: Dict[str, float]
    generator: torch.Generator


@dataclass
class Downloads:
    """What the server sends back and how clients merge it.

    kind 'none': nothing. kind 'global': items [I, d] (and mlp [P]) for every client.
    kind 'personal': items [m, I, d] (and mlp [m, P]) for ``clients`` [m].
    A receiving client keeps ``keep_local`` of its own block: new = keep_local * own + (1 - keep_local) * sent.
    mlp_columns [S]: when set, only these MLP entries are sent (``mlp`` holds just them, [S] or
    [m, S]); the rest of every client's MLP never changes (personal layers).
    stats: per-round diagnostics of the aggregation weights, written into rounds.csv.
    """

    kind: str
    items: Optional[torch.Tensor] = None
    mlp: Optional[torch.Tensor] = None
    clients: Optional[torch.Tensor] = None
    keep_local: float = 0.0
    mlp_columns: Optional[torch.Tensor] = None
    stats: Dict[str, float] = field(default_factory=dict)


class Aggregator:
    """Base class. ``reveals`` names what the server sees beyond the shared block (for the
    protocol record); it is empty when only item tables, MLPs and counts are uploaded."""

    name = "aggregator"
    reveals: Tuple[str, ...] = ()

    def start(self, items: torch.Tensor, mlp: torch.Tensor) -> dict:
        """The server state before round 1, given the initial shared block every client starts
        from: items [I, d], mlp [P]. Stateless aggregators keep nothing."""
        return {}

    def aggregate(self, uploads: Uploads, state: dict, ctx: RoundContext) -> Tuple[Downloads, dict]:
        raise NotImplementedError


def data_weights(sample_counts: torch.Tensor, weighting: str) -> torch.Tensor:
    """p [n] float64: data-size weights n_i / sum n (``samples``) or 1/n (``uniform``)."""
    if weighting == "uniform":
        return torch.full((sample_counts.numel(),), 1.0 / sample_counts.numel(), dtype=torch.float64)
    counts = sample_counts.double()
    return counts / counts.sum()


def weight_stats(weights: torch.Tensor) -> Dict[str, float]:
    """Diagnostics of a row-stochastic matrix W [m, m]: mean self-weight, row entropy, nonzeros per row."""
    safe = weights.clamp(min=1e-300)
    entropy = -(weights * safe.log()).sum(1)
    return {"w_self": float(weights.diagonal().mean()), "w_entropy": float(entropy.mean()),
            "w_nonzero": float((weights > 0).sum(1).double().mean())}
