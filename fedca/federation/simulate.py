"""The round loop: sample ► local_train ► upload ► aggregate ► merge ► evaluate ► record."""

import time
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, Optional, Sequence

import torch

from fedca.aggregators.base import USER_VECTORS, Aggregator, Downloads, RoundContext, Uploads
from fedca.data.fed_data import FedData
from fedca.errors import FedcaError
from fedca.federation import distributed
from fedca.federation.batches import build_round
from fedca.federation.evaluate import evaluate, user_metrics
from fedca.federation.local_train import LocalSettings, local_train
from fedca.federation.merge import apply_downloads
from fedca.federation.population import Population
from fedca.federation.privacy import PrivacySettings, privatize
from fedca.federation.unseen import UnseenClients, UnseenSettings, holdout_clients
from fedca.metrics.means import exact_mean
from fedca.models.backbones import Backbone, NonFiniteScores
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
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    unseen: UnseenSettings = field(default_factory=UnseenSettings)


@dataclass
class UserMetrics:
    """Per-user metrics of one evaluation: clients [U] and {metric name: values [U]} in that order."""

    clients: torch.Tensor
    values: Dict[str, torch.Tensor]


def sample_participants(eligible: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """[n] participants of a round among ``eligible`` [E] (ascending): all of them when ratio is 1,
    else a uniform sample of floor(E * ratio)."""
    if ratio >= 1.0:
        return eligible
    count = max(1, int(eligible.numel() * ratio))
    return eligible[torch.sort(torch.randperm(eligible.numel(), generator=gen)[:count]).values]


GENERATORS = ("client_sampling", "train_negatives", "shuffle", "agg_sampling", "privacy", "adapt")


class Simulation:
    """A run between rounds: the clients, the server state, the schedule, the generators and
    the next round. ``state_dict`` holds all of it, so a run restored from a checkpoint goes on
    exactly as if it had never stopped."""

    def __init__(self, data: FedData, population: Population, backbone: Backbone, aggregator: Aggregator,
                 schedule, settings: SimulationSettings, seed: int, server_start: Optional[tuple] = None):
        """``server_start``: the server's initial block (items [I, d], mlp [P]); by default client 0's
        (every client starts from the same one)."""
        self.data, self.population, self.backbone = data, population, backbone
        self.aggregator, self.schedule, self.settings = aggregator, schedule, settings
        self.gens = {name: generator(seed, name) for name in GENERATORS}
        self.reveal_users = USER_VECTORS in aggregator.reveals
        users = population.user.clone() if self.reveal_users else None
        items0, mlp0 = server_start or (population.store.tables(torch.zeros(1, dtype=torch.long))[0], population.mlp[0])
        self.server_state: dict = aggregator.start(items0.clone(), mlp0.clone(), users)
        self.next_round = 0
        held_out = holdout_clients(data.num_users, settings.unseen.share, generator(seed, "holdout"))
        self.unseen = UnseenClients(population, held_out) if held_out.numel() else None
        eligible = torch.ones(data.num_users, dtype=torch.bool)
        eligible[held_out] = False
        self.training_clients = torch.nonzero(eligible).squeeze(1)  # [N - h]
        distributed.check_clients(self.training_clients.numel())
        self.cold_start = Downloads(kind="none")
        self.test_users: Optional[UserMetrics] = None  # per-user test metrics of the latest evaluation

    @property
    def finished(self) -> bool:
        return self.next_round >= self.settings.rounds

    def run_round(self) -> Dict:
        """Play round ``next_round``: sample ► local_train ► upload ► aggregate ► merge ► evaluate.

        Returns the record: round (1-based), train_loss, train/agg/eval/total seconds, schedule
        values, aggregation stats, and ``val``/``test`` metric dicts on evaluation rounds.
        """
        round_index, settings, gens = self.next_round, self.settings, self.gens
        started = time.perf_counter()
        participants = self._participants()
        apply_downloads(self.population, self.aggregator.before_training(participants, self.server_state,
                                                                         round_index))
        batches = build_round(self.data, participants, settings.num_train_negatives, settings.batch_size,
                              gens["train_negatives"])
        anchors = self.aggregator.anchors(batches.clients, self.server_state)
        proximal = self.aggregator.proximal(batches.clients, self.server_state)
        if settings.privacy.active:
            start_blocks = (self.population.store.tables(batches.clients), self.population.mlp[batches.clients])
        try:
            local = local_train(self.population, batches, self.backbone, settings.local, gens["shuffle"], anchors,
                                proximal)
            broken = int((~local.finite).sum())
        except NonFiniteScores as exc:
            broken = exc.clients
        if broken:
            raise FedcaError(f"round {round_index + 1}: the training loss or parameters are NaN or infinite for "
                             f"{broken} of {participants.numel()} clients; lower model.lr_embedding / "
                             f"model.lr_structure")
        trained = time.perf_counter()
        uploads, privacy_stats = self._uploads(batches, local, start_blocks if settings.privacy.active else None)
        weights = self.schedule.values(round_index)
        context = RoundContext(round=round_index, weights=weights, generator=gens["agg_sampling"])
        downloads, self.server_state = self.aggregator.aggregate(uploads, self.server_state, context)
        if self.unseen is not None:
            self.cold_start = self.aggregator.cold_start(uploads, self.server_state, downloads)
        apply_downloads(self.population, downloads)
        self.schedule.observe(round_index, downloads.stats)
        aggregated = time.perf_counter()
        record = {"round": round_index + 1, "train_loss": exact_mean(local.losses),
                  "local_epochs_mean": exact_mean(local.epochs), "schedule": weights,
                  "stats": downloads.stats, "privacy": privacy_stats}
        last = round_index == settings.rounds - 1
        if (round_index + 1) % settings.eval_every == 0 or last:
            record.update(self.evaluate(unseen=last or settings.unseen.every_eval))
        finished = time.perf_counter()
        record.update(train_seconds=trained - started, agg_seconds=aggregated - trained,
                      eval_seconds=finished - aggregated, seconds=finished - started)
        self.next_round += 1
        return record

    def _uploads(self, batches, local, start_blocks: Optional[tuple]) -> tuple:
        """(Uploads, privacy stats) of the trained participants; with privacy on, the uploads are
        privatized copies made from ``start_blocks`` (items [n, I, d], mlp [n, P] before training)."""
        shared, stats = None, {}
        if start_blocks is not None:
            *shared, stats = privatize(*start_blocks, self.population.store.tables(batches.clients),
                                       self.population.mlp[batches.clients], self.settings.privacy,
                                       self.gens["privacy"])
        uploads = Uploads(self.population, batches.clients, batches.sizes, local.row_keys, local.row_counts,
                          reveal_users=self.reveal_users, shared=shared)
        return uploads, stats

    def evaluate(self, unseen: bool = False) -> Dict[str, Dict[str, float]]:
        """val and test metrics of the training clients (with the aggregator's experts), and
        ``unseen_test`` of the held-out clients when ``unseen`` and there are any. The per-user
        test metrics behind the means are kept in ``test_users`` until the next evaluation."""
        settings = self.settings
        experts = self.aggregator.experts(self.server_state)
        clients = self.training_clients if self.unseen is not None else None
        metrics = {"val": evaluate(self.population, self.backbone, self.data, "val", settings.ks, settings.ties,
                                   settings.eval_mode, experts, clients)}
        test = user_metrics(self.population, self.backbone, self.data, "test", settings.ks, settings.ties,
                            settings.eval_mode, experts, clients)
        metrics["test"] = {name: exact_mean(values) for name, values in test.items()}
        self.test_users = UserMetrics(torch.arange(self.data.num_users) if clients is None else clients, test)
        if unseen and self.unseen is not None:
            metrics["unseen_test"] = self.unseen.evaluate(self.population, self.backbone, self.data,
                                                          self.cold_start, settings, self.gens["adapt"])
        return metrics

    def _participants(self) -> torch.Tensor:
        """[n] this round's participants: the server's pick, else a uniform sample; held-out
        (unseen) clients never take part."""
        eligible, ratio = self.training_clients, self.settings.clients_sample_ratio
        count = eligible.numel() if ratio >= 1.0 else max(1, int(eligible.numel() * ratio))
        chosen = self.aggregator.select(count, self.data.num_users, self.server_state, self.gens["client_sampling"])
        if chosen is None:
            return sample_participants(eligible, ratio, self.gens["client_sampling"])
        if self.unseen is not None:
            chosen = chosen[~torch.isin(chosen, self.unseen.clients)]
        return chosen

    def run(self, on_round: Callable[[Dict], None]) -> None:
        """Play every remaining round, calling ``on_round(record)`` after each."""
        while not self.finished:
            on_round(self.run_round())

    def state_dict(self) -> dict:
        """Plain data only (tensors, numbers, strings, lists, dicts), so a checkpoint loads with
        ``torch.load(weights_only=True)``: the cold-start ``Downloads`` is stored as its fields."""
        cold_start = {item.name: getattr(self.cold_start, item.name) for item in fields(Downloads)}
        return {"next_round": self.next_round, "user": self.population.user, **self.population.store.state(),
                "mlp": self.population.mlp, "server_state": self.server_state,
                "schedule": self.schedule.state_dict(), "cold_start": cold_start,
                "generators": {name: gen.get_state() for name, gen in self.gens.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict()``. A checkpoint from before the cold-start block or a
        generator existed leaves those at their fresh values: that code never used them."""
        self.next_round = int(state["next_round"])
        for name in ("user", "mlp"):
            getattr(self.population, name).copy_(state[name])
        self.population.store.load_state(state)
        self.server_state = state["server_state"]
        self.schedule.load_state_dict(state["schedule"])
        if "cold_start" in state:
            self.cold_start = Downloads(**state["cold_start"])
        for name, gen in self.gens.items():
            if name in state["generators"]:
                gen.set_state(state["generators"][name])
