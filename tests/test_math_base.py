"""The aggregator interface's shared math (aggregators/base.py): uploads, data weights, weight stats
and the default hooks, on a three-client population with values chosen to be read off by eye."""

import math

import pytest
import torch

from fedca.aggregators.base import (Aggregator, Downloads, Uploads, USER_VECTORS, data_weights,
                                    weight_stats)
from fedca.federation.population import Population

# 4 clients, I = 3 items, d = 2; client c's item j row is (10c + j, -(10c + j)); its MLP (c, 2c)
ITEMS = torch.tensor([[[10.0 * c + j, -(10.0 * c + j)] for j in range(3)] for c in range(4)], dtype=torch.float64)
MLP = torch.tensor([[float(c), 2.0 * c] for c in range(4)], dtype=torch.float64)
USER = torch.tensor([[float(c), 1.0] for c in range(4)], dtype=torch.float64)


def uploads(shared=None, reveal_users=False):
    population = Population(user=USER.clone(), items=ITEMS.clone(), mlp=MLP.clone())
    clients = torch.tensor([3, 1])  # participants in training order
    # position 0 (client 3) trained item 2 twice and item 0 once; position 1 (client 1) item 1 five times
    row_keys = torch.tensor([0 * 3 + 0, 0 * 3 + 2, 1 * 3 + 1])
    row_counts = torch.tensor([1, 2, 5])
    return Uploads(population, clients, torch.tensor([30, 10]), row_keys, row_counts,
                   reveal_users=reveal_users, shared=shared)


def test_uploads_read_the_participants_blocks_by_position():
    up = uploads()
    assert torch.equal(up.item_tables(torch.tensor([1, 0])), ITEMS[[1, 3]])
    assert torch.equal(up.mlp(torch.tensor([0])), MLP[[3]])
    assert up.num_items == 3 and up.num_clients == 4


def test_uploads_prefer_the_shared_blocks_when_given():
    shared_items = torch.full((2, 3, 2), 7.0, dtype=torch.float64)
    shared_items[1] = -1.0
    shared_mlp = torch.tensor([[5.0, 6.0], [8.0, 9.0]], dtype=torch.float64)
    up = uploads(shared=(shared_items, shared_mlp))
    assert torch.equal(up.item_tables(torch.tensor([1])), shared_items[[1]])
    assert torch.equal(up.mlp(torch.tensor([1, 0])), shared_mlp[[1, 0]])
    # 0.25 * 7 + 0.75 * (-1) = 1.0 everywhere
    torch.testing.assert_close(up.weighted_items(torch.tensor([0.25, 0.75])), torch.ones(3, 2, dtype=torch.float64),
                               rtol=0, atol=0)
    # 0.5 * (5, 6) + 0.5 * (8, 9) = (6.5, 7.5)
    assert up.weighted_mlp(torch.tensor([0.5, 0.5])).tolist() == [6.5, 7.5]


def test_weighted_items_sum_over_the_participants_only():
    up = uploads()
    out = up.weighted_items(torch.tensor([0.25, 0.75], dtype=torch.float32))
    # item j: 0.25 * (30 + j) + 0.75 * (10 + j) = 15 + j, second coordinate negated
    expected = torch.tensor([[15.0 + j, -(15.0 + j)] for j in range(3)], dtype=torch.float64)
    assert torch.equal(out, expected) and out.dtype == torch.float64
    # MLP: 0.25 * (3, 6) + 0.75 * (1, 2) = (1.5, 3)
    assert up.weighted_mlp(torch.tensor([0.25, 0.75])).tolist() == [1.5, 3.0]


def test_item_counts_place_each_participants_counts_at_its_position():
    up = uploads()
    assert up.item_counts(torch.tensor([0, 1])).tolist() == [[1.0, 0.0, 2.0], [0.0, 5.0, 0.0]]
    # a subset, in the order asked for: position 1 first
    counts = up.item_counts(torch.tensor([1]))
    assert counts.tolist() == [[0.0, 5.0, 0.0]] and counts.dtype == torch.float64
    assert up.item_counts(torch.tensor([1, 0])).tolist() == [[0.0, 5.0, 0.0], [1.0, 0.0, 2.0]]


def test_user_vectors_need_the_declaration():
    with pytest.raises(PermissionError, match="user vectors"):
        uploads().user_vectors(torch.tensor([0]))
    assert torch.equal(uploads(reveal_users=True).user_vectors(torch.tensor([1, 0])), USER[[1, 3]])


@pytest.mark.parametrize("weighting, expected", [("samples", [0.75, 0.25]), ("uniform", [0.5, 0.5])])
def test_data_weights(weighting, expected):
    weights = data_weights(torch.tensor([30, 10]), weighting)
    assert weights.tolist() == expected and weights.dtype == torch.float64


def test_uniform_data_weights_over_three():
    assert data_weights(torch.tensor([1, 1, 7]), "uniform").tolist() == [1 / 3] * 3


def test_weight_stats_of_a_row_stochastic_matrix():
    weights = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]], dtype=torch.float64)
    stats = weight_stats(weights)
    # diagonal mean (0.5 + 1 + 0.5) / 3; entropies ln 2, 0, 1.5 ln 2 (0 log 0 taken as 0)
    assert stats["w_self"] == pytest.approx(2 / 3, abs=1e-15)
    assert stats["w_entropy"] == pytest.approx((math.log(2) + 0 + 1.5 * math.log(2)) / 3, abs=1e-15)
    assert stats["w_nonzero"] == pytest.approx((2 + 1 + 3) / 3, abs=1e-15)


def test_default_hooks_are_neutral():
    agg = Aggregator()
    assert agg.start(ITEMS[0], MLP[0]) == {}
    assert agg.select(2, 4, {}, torch.Generator()) is None
    assert agg.before_training(torch.tensor([0]), {}, 0).kind == "none"
    assert agg.anchors(torch.tensor([0]), {}) is None
    assert agg.experts({}) == []
    assert agg.reveals == () and USER_VECTORS == "user vectors"
    with pytest.raises(NotImplementedError):
        agg.aggregate(uploads(), {}, None)


def test_cold_start_passes_a_global_download_on():
    sent = Downloads(kind="global", items=ITEMS[0], mlp=MLP[0], mlp_columns=torch.tensor([1]))
    out = Aggregator().cold_start(uploads(), {}, sent)
    assert out.kind == "global" and out.items is sent.items and out.mlp is sent.mlp
    assert out.mlp_columns is sent.mlp_columns and out.clients is None


def test_cold_start_after_a_personal_round_is_the_data_weighted_mean():
    sent = Downloads(kind="personal", items=ITEMS[:2], clients=torch.tensor([3, 1]))
    out = Aggregator().cold_start(uploads(), {}, sent)
    # weights 30 / 40 and 10 / 40: item j = 0.75 * (30 + j) + 0.25 * (10 + j) = 25 + j
    assert out.kind == "global" and out.clients is None
    assert torch.equal(out.items, torch.tensor([[25.0 + j, -(25.0 + j)] for j in range(3)], dtype=torch.float64))
    assert out.mlp.tolist() == [2.5, 5.0]  # 0.75 * (3, 6) + 0.25 * (1, 2)
    # a global download for only some clients is not what a new device gets either
    partial = Downloads(kind="global", items=ITEMS[0], clients=torch.tensor([1]))
    assert torch.equal(Aggregator().cold_start(uploads(), {}, partial).items, out.items)
