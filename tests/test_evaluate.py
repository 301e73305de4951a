"""Batched evaluation against per-user loops on the generated tiny dataset (tests/conftest.py): sampled
and full ranking, client subsets."""

import math

import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.federation.evaluate import evaluate
from fedca.federation.population import Population
from fedca.models.backbones import FCF, NCF

from oracle import ClientModel

NCF_LAYERS = [16, 8, 1]


@pytest.fixture(scope="module")
def slice_40(tiny_data_env):
    cfg = compose_run_config(tiny_data_env)
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(40)


@pytest.fixture(scope="module")
def strict_40(tiny_data_env):
    """Separate val and test negatives, so a mix-up of the two shows."""
    cfg = compose_run_config([*tiny_data_env, "protocol=strict"])
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(40)


def _scored_population(data, model: str, seed: int) -> Population:
    """float32 states small enough that no score saturates; users 0-9 get their val and test item
    lifted (hits) and users 10-19 have two of their eval negatives copied from the held-out item's
    row (exact ties)."""
    gen = torch.Generator().manual_seed(seed)
    size = sum(out * inp + out for out, inp in zip(NCF_LAYERS[1:], NCF_LAYERS[:-1])) if model == "ncf" else 0
    population = Population(user=0.5 * torch.randn(data.num_users, 8, generator=gen),
                            items=0.5 * torch.randn(data.num_users, data.num_items, 8, generator=gen),
                            mlp=0.5 * torch.randn(data.num_users, size, generator=gen))
    lifted = torch.arange(10)
    for held_out in (data.val_items, data.test_items):
        population.items[lifted, held_out[lifted]] = 2.0 * population.user[lifted]
    for user in range(10, 20):
        for held_out, negatives in ((data.val_items, data.val_negatives), (data.test_items, data.test_negatives)):
            population.items[user, negatives[user, [3, 40]]] = population.items[user, held_out[user]].clone()
    return population


def _per_user_sampled(population, data, split: str, model: str, ks, ties: str) -> dict:
    """Score each candidate of each user with its own model (float64), rank the held-out item
    among its eval negatives (pessimistic: after every tie; optimistic: before; average: every
    rank of the tie equally likely) and average HR@K / NDCG@K over the users by hand."""
    held_out = data.val_items if split == "val" else data.test_items
    negatives = data.val_negatives if split == "val" else data.test_negatives
    layers = NCF_LAYERS if model == "ncf" else []
    totals = {f"{metric}@{k}": 0.0 for k in ks for metric in ("hr", "ndcg")}
    for user in range(data.num_users):
        client = ClientModel(population.user[user].double(), population.items[user].double(),
                             population.mlp[user].double(), layers)
        with torch.no_grad():  # one candidate at a time, so equal inputs give equal scores
            target = float(client(held_out[user: user + 1])[0])
            others = [float(client(negatives[user, j: j + 1])[0]) for j in range(negatives.shape[1])]
        equal = sum(1 for score in others if score == target)
        greater = sum(1 for score in others if score > target)
        assert all(score == target or abs(score - target) > 1e-6 for score in others)  # float32 ranks agree
        ranks = {"pessimistic": [greater + equal + 1], "optimistic": [greater + 1],
                 "average": list(range(greater + 1, greater + equal + 2))}[ties]
        for k in ks:
            totals[f"hr@{k}"] += sum(1.0 for rank in ranks if rank <= k) / len(ranks)
            totals[f"ndcg@{k}"] += sum(1.0 / math.log2(rank + 1) for rank in ranks if rank <= k) / len(ranks)
    return {name: total / data.num_users for name, total in totals.items()}


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("model", ["fcf", "ncf"])
def test_sampled_evaluation_matches_a_per_user_loop(strict_40, model, split, ties):
    population = _scored_population(strict_40, model, seed=3)
    backbone = FCF() if model == "fcf" else NCF(NCF_LAYERS)
    ks = [1, 5, 10]
    got = evaluate(population, backbone, strict_40, split, ks, ties, "sampled")
    expected = _per_user_sampled(population, strict_40, split, model, ks, ties)
    assert got.keys() == expected.keys()
    for name in expected:  # means of 40 per-user values, summed in another order
        assert got[name] == pytest.approx(expected[name], rel=0, abs=1e-12), name
    assert 0 < expected["hr@10"] < 1


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
