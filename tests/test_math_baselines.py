"""The baselines' server rules (FedAvg, FedPer, LocalOnly, PFedRec, FedAtt) on two-client cases
whose results are worked out by hand."""

import math

import pytest
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.fedatt import FedAtt, attentive_step, layer_distances
from fedca.aggregators.fedavg import FedAvg
from fedca.aggregators.fedper import FedPer, shared_mlp_columns
from fedca.aggregators.local import LocalOnly
from fedca.aggregators.pfedrec import PFedRec
from fedca.federation.population import Population


def uploads(items, mlp, samples=(30, 10)):
    """Participants = every client of a population with these item tables [n, I, d] and MLPs [n, P]."""
    n = items.shape[0]
    population = Population(user=torch.zeros(n, items.shape[2], dtype=items.dtype), items=items.clone(),
                            mlp=mlp.clone())
    return Uploads(population, torch.arange(n), torch.tensor(samples), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0, dtype=torch.long))


def ctx(seed=0):
    return RoundContext(round=0, weights={}, generator=torch.Generator().manual_seed(seed))


ITEMS = torch.tensor([[[4.0, 0.0]], [[0.0, 8.0]]], dtype=torch.float64)  # [2, I=1, d=2]
MLP = torch.tensor([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]], dtype=torch.float64)  # [2, P=3]


@pytest.mark.parametrize("weighting, w0", [("samples", 0.75), ("uniform", 0.5)])
def test_fedavg_sends_everyone_the_weighted_mean(weighting, w0):
    downloads, state = FedAvg(weighting=weighting).aggregate(uploads(ITEMS, MLP), {"s": 1}, ctx())
    assert downloads.kind == "global" and downloads.clients is None and state == {"s": 1}
    # samples: 0.75 * (4, 0) + 0.25 * (0, 8) = (3, 2); uniform: (2, 4)
    assert downloads.items.tolist() == [[4 * w0, 8 * (1 - w0)]]
    assert downloads.mlp.tolist() == [1 * w0 + 5 * (1 - w0), 2 * w0 + 6 * (1 - w0), 3 * w0 + 7 * (1 - w0)]


def test_fedavg_rejects_an_unknown_weighting():
    with pytest.raises(ValueError, match="weighting"):
        FedAvg(weighting="sizes")


def test_shared_mlp_columns_are_the_flat_entries_of_the_base_layers():
    # layers 4 -> 3 -> 2 -> 1: sizes 3 * 4 + 3 = 15, 2 * 3 + 2 = 8, 1 * 2 + 1 = 3
    assert shared_mlp_columns([4, 3, 2, 1], 1).tolist() == list(range(23))
    assert shared_mlp_columns([4, 3, 2, 1], 2).tolist() == list(range(15))
    assert shared_mlp_columns([4, 3, 2, 1], 0).tolist() == list(range(26))
    assert shared_mlp_columns([4, 3, 2, 1], 5).tolist() == []  # more personal layers than layers


def test_fedper_averages_only_the_base_columns():
    agg = FedPer(mlp_layers=[1, 1, 1], personal_layers=1)  # two layers of 1 * 1 + 1 = 2 entries; base = [0, 1]
    mlp = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], dtype=torch.float64)
    downloads, _ = agg.aggregate(uploads(ITEMS, mlp), {}, ctx())
    assert downloads.kind == "global" and downloads.mlp_columns.tolist() == [0, 1]
    assert downloads.mlp.tolist() == [0.75 * 1 + 0.25 * 5, 0.75 * 2 + 0.25 * 6]
    assert downloads.items.tolist() == [[3.0, 2.0]]
    uniform, _ = FedPer(mlp_layers=[1, 1, 1], personal_layers=1, weighting="uniform").aggregate(
        uploads(ITEMS, mlp), {}, ctx())
    assert uniform.mlp.tolist() == [3.0, 4.0]


def test_fedper_without_mlp_sends_no_columns_and_rejects_negative_layers():
    assert FedPer(mlp_layers=[], personal_layers=2).columns.tolist() == []
    with pytest.raises(ValueError, match="personal_layers"):
        FedPer(mlp_layers=[2, 1], personal_layers=-1)
    assert FedPer(mlp_layers=[2, 1], personal_layers=0).columns.tolist() == [0, 1, 2]


def test_local_only_sends_nothing_ever():
    agg = LocalOnly()
    downloads, state = agg.aggregate(uploads(ITEMS, MLP), {"k": 2}, ctx())
    assert downloads.kind == "none" and state == {"k": 2}
    assert agg.cold_start(uploads(ITEMS, MLP), {}, downloads).kind == "none"


def test_pfedrec_keeps_the_mean_table_for_the_next_participants():
    agg = PFedRec()
    start = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    state = agg.start(start, MLP[0])
    start[0, 0] = 99.0  # the state holds its own copy
    assert state["items"].tolist() == [[1.0, 1.0]]
    before = agg.before_training(torch.tensor([1]), state, 0)
    assert before.kind == "global" and before.clients.tolist() == [1] and before.items is state["items"]
    downloads, new_state = agg.aggregate(uploads(ITEMS, MLP), state, ctx())
    # unweighted mean (2, 4); change from (1, 1): sqrt(1 + 9)
    assert downloads.kind == "none" and new_state["items"].tolist() == [[2.0, 4.0]]
    assert downloads.stats == {"global_change": pytest.approx(math.sqrt(10), abs=1e-15)}
    cold = agg.cold_start(uploads(ITEMS, MLP), new_state, downloads)
    assert cold.kind == "global" and cold.items is new_state["items"] and cold.mlp is None
    weighted, _ = PFedRec(weighting="samples").aggregate(uploads(ITEMS, MLP), state, ctx())
    assert weighted.stats["global_change"] == pytest.approx(math.sqrt(2 ** 2 + 1 ** 2), abs=1e-15)  # (3, 2)


def test_layer_distances_spectral_or_frobenius():
    differences = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    assert layer_distances(differences, "spectral").tolist() == pytest.approx([1.0, 2.0], abs=1e-15)
    assert layer_distances(differences, "fro").tolist() == pytest.approx([math.sqrt(2), 2.0], abs=1e-15)
    vectors = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)  # 2-D: L2 of each row
    assert layer_distances(vectors, "spectral").tolist() == [5.0, 1.0]


def test_attentive_step_weighs_farther_clients_more():
    server = torch.zeros(2, 2, dtype=torch.float64)
    clients = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    new, attention = attentive_step(server, clients, step_size=0.5, noise=0.0, norm="spectral",
                                    generator=torch.Generator().manual_seed(0))
    a1 = math.exp(2) / (math.exp(1) + math.exp(2))  # softmax of the distances (1, 2)
    assert attention.tolist() == pytest.approx([1 - a1, a1], abs=1e-15)
    # new = 0 - 0.5 * sum_i a_i (0 - W_i) = 0.5 * ((1 - a1) * I + a1 * diag(2, 0))
    expected = 0.5 * torch.tensor([[(1 - a1) + 2 * a1, 0.0], [0.0, 1 - a1]], dtype=torch.float64)
    torch.testing.assert_close(new, expected, rtol=0, atol=1e-15)


def test_attentive_step_adds_scaled_gaussian_jitter():
    server = torch.ones(3, dtype=torch.float32)
    clients = torch.ones(2, 3, dtype=torch.float32)  # no difference: only the jitter moves the server
    new, attention = attentive_step(server, clients, 1.2, noise=0.25, norm="spectral",
                                    generator=torch.Generator().manual_seed(4))
    jitter = torch.randn(3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(new, 1 + 0.25 * jitter, rtol=0, atol=1e-7)  # float32 rounding
    assert attention.tolist() == [0.5, 0.5] and new.dtype == torch.float32


def test_fedatt_updates_the_table_and_every_mlp_layer():
    agg = FedAtt(mlp_layers=[2, 1], step_size=1.0, noise=0.0, att_norm="fro")  # weight [1, 2] then bias [1]
    server_items = torch.zeros(1, 2, dtype=torch.float64)
    state = agg.start(server_items, torch.zeros(3, dtype=torch.float64))
    server_items[0, 0] = 5.0  # start copies
    assert state["items"].tolist() == [[0.0, 0.0]]
    mlp = torch.tensor([[3.0, 4.0, 1.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    downloads, new_state = agg.aggregate(uploads(ITEMS, mlp), state, ctx())
    # items: distances ||(4, 0)|| = 4 and ||(0, 8)|| = 8; a = softmax(4, 8); new = a0 * (4, 0) + a1 * (0, 8)
    a0 = 1 / (1 + math.exp(4))
    torch.testing.assert_close(downloads.items, torch.tensor([[4 * a0, 8 * (1 - a0)]], dtype=torch.float64),
                               rtol=0, atol=1e-14)
    # weight layer: distances 5 and 0 -> b0 = e^5 / (e^5 + 1); bias: distances 1 and 2 -> c1 = e^2 / (e + e^2)
    b0 = math.exp(5) / (math.exp(5) + 1)
    c1 = math.exp(2) / (math.exp(1) + math.exp(2))
    expected_mlp = [3 * b0, 4 * b0, (1 - c1) * 1 + c1 * 2]
    torch.testing.assert_close(downloads.mlp, torch.tensor(expected_mlp, dtype=torch.float64), rtol=0, atol=1e-14)
    assert downloads.kind == "global" and new_state["items"] is downloads.items and new_state["mlp"] is downloads.mlp
    assert state["mlp"].tolist() == [0.0, 0.0, 0.0]  # the old state is not modified in place
    assert downloads.stats["att_max"] == pytest.approx(1 - a0, abs=1e-15)
    entropy = -(a0 * math.log(a0) + (1 - a0) * math.log(1 - a0))
    assert downloads.stats["att_entropy"] == pytest.approx(entropy, abs=1e-14)


def test_fedatt_draws_the_jitter_for_items_then_each_weight_and_bias():
    agg = FedAtt(mlp_layers=[2, 1], step_size=0.0, noise=0.5)  # step 0: the server moves by jitter alone
    state = agg.start(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    downloads, _ = agg.aggregate(uploads(ITEMS, MLP), state, ctx(seed=9))
    generator = torch.Generator().manual_seed(9)
    item_jitter = torch.randn((1, 2), generator=generator, dtype=torch.float64)
    weight_jitter = torch.randn((1, 2), generator=generator, dtype=torch.float64)
    bias_jitter = torch.randn((1,), generator=generator, dtype=torch.float64)
    torch.testing.assert_close(downloads.items, 0.5 * item_jitter, rtol=0, atol=1e-15)
    torch.testing.assert_close(downloads.mlp, 0.5 * torch.cat([weight_jitter[0], bias_jitter]), rtol=0, atol=1e-15)


def test_fedatt_rejects_an_unknown_norm_and_keeps_its_settings():
    with pytest.raises(ValueError, match="att_norm"):
        FedAtt(mlp_layers=[2, 1], att_norm="nuclear")
    agg = FedAtt(mlp_layers=[4, 2, 1], step_size=0.7, noise=0.01, att_norm="fro")
    assert (agg.step_size, agg.noise, agg.att_norm) == (0.7, 0.01, "fro")
    # layer 4 -> 2: weight [0, 8) shape (2, 4), bias [8, 10); layer 2 -> 1: weight [10, 12), bias [12, 13)
    assert list(agg._mlp_layers()) == [(0, 8, (2, 4)), (8, 10, (2,)), (10, 12, (1, 2)), (12, 13, (1,))]


def test_fedavg_and_fedper_defaults():
    assert FedAvg().weighting == "samples"
    agg = FedPer(mlp_layers=[4, 3, 2, 1])  # two personal layers by default: only the first layer is shared
    assert agg.weighting == "samples" and agg.columns.tolist() == list(range(15))
