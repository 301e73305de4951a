"""Unseen clients: users kept out of every training round, then evaluated as new devices.

A seeded share of the users never trains. When they are evaluated, each starts from the
state a fresh device has (the initial template: user vector, personal layers), loads what the
server gives a new client under the method (``Aggregator.cold_start``), fine-tunes locally on
its own training data only for ``adapt_epochs`` passes with the method's own local training,
and is evaluated on its test item. Their rows are then put back, so nothing of this reaches
the federation.

Shapes: N clients, h held-out clients, I items, d dims, P MLP size.
"""

from dataclasses import dataclass, replace

import torch

from fedca.aggregators.base import Downloads
from fedca.data.fed_data import FedData
from fedca.federation.batches import build_round
from fedca.federation.evaluate import evaluate
from fedca.federation.local_train import local_train
from fedca.federation.merge import apply_downloads
from fedca.federation.population import Population
from fedca.models.backbones import Backbone


@dataclass
class UnseenSettings:
    """share: fraction of users held out (0: none); adapt_epochs: local passes before evaluation;
    every_eval: also evaluate them on every evaluation round (else after the last round only)."""

    share: float = 0.0
    adapt_epochs: int = 5
    every_eval: bool = False


def holdout_clients(num_clients: int, share: float, generator: torch.Generator) -> torch.Tensor:
    """[h] ascending ids of floor(N * share) users drawn uniformly with ``generator``."""
    count = int(num_clients * share)
    return torch.sort(torch.randperm(num_clients, generator=generator)[:count]).values


def _blocks(population: Population, clients: torch.Tensor) -> tuple:
    """Copies of the state of ``clients`` [h]: (user [h, d], items [h, I, d], mlp [h, P])."""
    return population.user[clients].clone(), population.store.tables(clients), population.mlp[clients].clone()


def _put_blocks(population: Population, clients: torch.Tensor, blocks: tuple) -> None:
    user, items, mlp = blocks
    population.user[clients] = user
    population.store.write_tables(clients, items)
    population.mlp[clients] = mlp


class UnseenClients:
    """The held-out users with their template rows (user [h, d], items [h, I, d], mlp [h, P])."""

    def __init__(self, population: Population, clients: torch.Tensor):
        self.clients = clients
        self.template = _blocks(population, clients)

    def evaluate(self, population: Population, backbone: Backbone, data: FedData, cold_start: Downloads,
                 settings, generator: torch.Generator) -> dict:
        """Test HR/NDCG of the held-out users after a cold start and ``settings.unseen.adapt_epochs``
        local passes (``settings``: the run's SimulationSettings)."""
        clients = self.clients
        saved = _blocks(population, clients)
        _put_blocks(population, clients, self.template)
        if cold_start.kind != "none":
            apply_downloads(population, replace(cold_start, clients=clients, keep_local=0.0, user_clients=None,
                                                user_delta=None))
        batches = build_round(data, clients, settings.num_train_negatives, settings.batch_size, generator)
        adapt = replace(settings.local, epochs=settings.unseen.adapt_epochs, early_stop=False)
        local_train(population, batches, backbone, adapt, generator)
        metrics = evaluate(population, backbone, data, "test", settings.ks, settings.ties, settings.eval_mode,
                           clients=clients)
        _put_blocks(population, clients, saved)
        return metrics
