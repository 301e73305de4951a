"""Batched evaluation against a per-user loop on real ML-100K: full ranking and client subsets."""

import math

import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.federation.evaluate import evaluate
from fedca.federation.population import Population
from fedca.models.backbones import FCF


@pytest.fixture(scope="module")
def slice_40(real_data_env):
    cfg = compose_run_config(["dataset=ml100k"])
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(40)


def _population(data, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Population(user=torch.randn(data.num_users, 8, generator=gen),
                      items=torch.randn(data.num_users, data.num_items, 8, generator=gen),
                      mlp=torch.zeros(data.num_users, 0))


def _reference_full(population, data, users, k=10):
    """Per-user loop: the test item ranked (after ties) among the items the user never interacted with."""
    interacted = set(data.interacted_keys.tolist())
    hits, gains = [], []
    for user in users:
        scores = torch.sigmoid(population.items[user] @ population.user[user])
        target = int(data.test_items[user])
        others = [j for j in range(data.num_items) if user * data.num_items + j not in interacted]
        rank = 1 + sum(1 for j in others if scores[j] >= scores[target])
        hits.append(1.0 if rank <= k else 0.0)
        gains.append(1.0 / math.log2(rank + 1) if rank <= k else 0.0)
    return sum(hits) / len(hits), sum(gains) / len(gains)


def test_full_ranking_of_a_client_subset_matches_a_per_user_loop(slice_40):
    population = _population(slice_40)
    lifted = torch.tensor([3, 8, 22])
    population.items[lifted, slice_40.test_items[lifted]] = 3.0 * population.user[lifted]  # these users hit
    users = torch.tensor([3, 7, 8, 15, 22, 39])
    got = evaluate(population, FCF(), slice_40, "test", [10], "pessimistic", "full", clients=users)
    hr, ndcg = _reference_full(population, slice_40, users.tolist())
    assert got["hr@10"] == pytest.approx(hr) and got["ndcg@10"] == pytest.approx(ndcg)
    assert 0 < hr < 1


def test_sampled_metrics_of_a_subset_are_the_mean_over_its_users(slice_40):
    population = _population(slice_40, seed=1)
    per_user = [evaluate(population, FCF(), slice_40, "test", [10], "pessimistic", clients=torch.tensor([u]))
                for u in range(40)]
    subset = torch.tensor([0, 5, 6, 30])
    got = evaluate(population, FCF(), slice_40, "test", [10], "pessimistic", clients=subset)
    assert got["ndcg@10"] == pytest.approx(sum(per_user[u]["ndcg@10"] for u in subset.tolist()) / 4)
    everyone = evaluate(population, FCF(), slice_40, "test", [10], "pessimistic")
    assert everyone["hr@10"] == pytest.approx(sum(p["hr@10"] for p in per_user) / 40)
