"""The round loop: sample ► local_train ► upload ► aggregate ► merge ► evaluate ► record."""

import time
from dataclasses import dataclass
from typing import Callable, Dict, Sequence

import torch

from fedca.aggregators.base import Aggregator, Downloads, RoundContext, Uploads
from fedca.data.fed_data import FedData
from fedca.federation.batches import build_round
from fedca.federation.evaluate import evaluate
from fedca.federation.local_train import LocalSettings, local_train
from fedca.federation.population import Population
from fedca.models.backbones import Backbone
from fedca.seeding import generator


@dataclass
class SimulationSettings:
    """Round-level settings (local ones live in ``local``)."""

    rounds: int
    clients_sample_ratio: float
    num_train_negatives: int
    batch_size: int
    local: LocalSettings
    eval_every: int
    ks: Sequence[int]
    ties: str
    eval_mode: str


def apply_downloads(population: Population, downloads: Downloads) -> None:
    """Merge what the server sent into the clients' state (user vectors never change here)."""
    mu = downloads.keep_local
    if downloads.kind == "global":
        for own, sent in ((population.items, downloads.items), (population.mlp, downloads.mlp)):
            if mu:
                own.mul_(mu).add_(sent.unsqueeze(0), alpha=1 - mu)
            else:
                own.copy_(sent.unsqueeze(0).expand_as(own))
    elif downloads.kind == "personal":
        clients = downloads.clients
        population.items[clients] = mu * population.items[clients] + (1 - mu) * downloads.items
        population.mlp[clients] = mu * population.mlp[clients] + (1 - mu) * downloads.mlp


def sample_participants(num_clients: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """[n] participants of a round: everyone when ratio is 1, else a uniform sample of floor(N * ratio)."""
    if ratio >= 1.0:
        return torch.arange(num_clients)
    count = max(1, int(num_clients * ratio))
    return torch.sort(torch.randperm(num_clients, generator=gen)[:count]).values


def simulate(data: FedData, population: Population, backbone: Backbone, aggregator: Aggregator, schedule,
             settings: SimulationSettings, seed: int, on_round: Callable[[Dict], None]) -> None:
    """Run every round, calling ``on_round(record)`` after each one.

    record: round (1-based), train_loss, train/agg/eval/total seconds, schedule values,
    aggregation stats, and ``val``/``test`` metric dicts on evaluation rounds.
    """
    gens = {name: generator(seed, name) for name in ("client_sampling", "train_negatives", "shuffle",
                                                     "agg_sampling")}
    state: dict = {}
    for round_index in range(settings.rounds):
        started = time.perf_counter()
        participants = sample_participants(data.num_users, settings.clients_sample_ratio, gens["client_sampling"])
        batches = build_round(data, participants, settings.num_train_negatives, settings.batch_size,
                              gens["train_negatives"])
        local = local_train(population, batches, backbone, settings.local, gens["shuffle"])
        trained = time.perf_counter()
        uploads = Uploads(population, batches.clients, batches.sizes, local.row_keys, local.row_counts)
        weights = schedule.values(round_index)
        context = RoundContext(round=round_index, weights=weights, generator=gens["agg_sampling"])
        downloads, state = aggregator.aggregate(uploads, state, context)
        apply_downloads(population, downloads)
        schedule.observe(round_index, downloads.stats)
        aggregated = time.perf_counter()
        record = {"round": round_index + 1, "train_loss": float(local.losses.mean()),
                  "local_epochs_mean": float(local.epochs.double().mean()), "schedule": weights,
                  "stats": downloads.stats}
        last = round_index == settings.rounds - 1
        if (round_index + 1) % settings.eval_every == 0 or last:
            for split in ("val", "test"):
                record[split] = evaluate(population, backbone, data, split, settings.ks, settings.ties,
                                         settings.eval_mode)
        finished = time.perf_counter()
        record.update(train_seconds=trained - started, agg_seconds=aggregated - trained,
                      eval_seconds=finished - aggregated, seconds=finished - started)
        on_round(record)
