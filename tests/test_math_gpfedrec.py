"""GPFedRec's server step and hooks (fedca/aggregators/gpfedrec.py) against a per-pair
transcription of the official code's graph, neighbourhood and message-passing loops
(tests/oracle.py), on random tables; no data, fast enough for mutation testing."""

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.gpfedrec import GPFedRec, neighbourhoods, relation_scores
from fedca.aggregators.gpfedrec import GPFedRecAggConfig
from fedca.federation.population import Population

from oracle import OracleSettings, gpfedrec_tables

SERVER_CASES = [("official", 0, 1.0, 1), ("official", 0, 0.6, 2), ("official", 3, 1.0, 1),
                ("cosine", 0, 1.0, 1), ("cosine", 4, 1.0, 3), ("euclidean", 0, 1.0, 1), ("euclidean", 2, 1.0, 2),
                ("official", 0, 50.0, 1)]  # threshold above every score: every row keeps only itself


def _uploads(tables: torch.Tensor, clients: torch.Tensor, num_clients: int) -> Uploads:
    items = torch.zeros(num_clients, *tables.shape[1:], dtype=tables.dtype)
    items[clients] = tables
    population = Population(user=torch.zeros(num_clients, tables.shape[2], dtype=tables.dtype), items=items,
                            mlp=torch.zeros(num_clients, 0, dtype=tables.dtype))
    counts = torch.arange(clients.numel()) + 5
    return Uploads(population, clients, counts, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("similarity,size,threshold,layers", SERVER_CASES)
def test_server_tables_equal_the_official_loops(similarity, size, threshold, layers):
    gen = torch.Generator().manual_seed(7)
    num_clients, clients = 15, torch.tensor([0, 2, 3, 5, 6, 8, 9, 11, 12, 14])
    tables = torch.randn(clients.numel(), 6, 3, generator=gen, dtype=torch.float64)
    initial = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    agg = GPFedRec(similarity=similarity, neighborhood_size=size, neighborhood_threshold=threshold, mp_layers=layers)
    state = agg.start(initial, torch.zeros(0, dtype=torch.float64))
    ctx = RoundContext(round=0, weights={}, generator=gen)
    downloads, state = agg.aggregate(_uploads(tables, clients, num_clients), state, ctx)
    settings = OracleSettings(epochs=1, batch_size=1, lr_embedding=0, lr_structure=0, weight_decay=0,
                              early_stop=False, threshold=0, mlp_layers=[], agg="gpfedrec", weighting="uniform",
                              similarity=similarity, neighborhood_size=size, neighborhood_threshold=threshold,
                              mp_layers=layers)
    personal, global_table = gpfedrec_tables([table.numpy() for table in tables], settings)
    # float64 sums over 10 tables of 18 entries in other orders: measured <= 9e-16
    assert np.abs(state["personal"][clients].numpy() - np.stack(personal)).max() <= 1e-14
    assert np.abs(state["global"].numpy() - global_table).max() <= 1e-14
    others = torch.tensor([c for c in range(num_clients) if c not in clients.tolist()])
    assert torch.equal(state["personal"][others], initial.expand(others.numel(), -1, -1))  # untouched targets
    assert downloads.kind == "none"
    if threshold == 50.0:
        assert torch.equal(state["personal"][clients], tables)


def test_the_official_similarity_is_a_distance_and_picks_the_least_similar_neighbour():
    near = torch.tensor([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.05]], dtype=torch.float64).unsqueeze(1)  # [3, 1, 2]
    clients = torch.arange(3)
    picked = {}
    for similarity in ("official", "cosine"):
        agg = GPFedRec(similarity=similarity, neighborhood_size=1)
        state = agg.start(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(0))
        _, state = agg.aggregate(_uploads(near, clients, 3), state, RoundContext(0, {}, torch.Generator()))
        picked[similarity] = state["personal"][0, 0]
    assert torch.equal(picked["official"], near[2, 0])  # client 0's farthest table
    assert torch.equal(picked["cosine"], near[0, 0])  # its own, the most similar




def _started(**knobs):
    agg = GPFedRec(**knobs)
    initial = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return agg, agg.start(initial, torch.zeros(0, dtype=torch.float64)), initial


def test_participants_load_the_global_table_and_are_pulled_to_their_own_personal_table():
    agg, state, initial = _started(reg=2.5)
    clients = torch.tensor([1, 4])
    loaded = agg.before_training(clients, state, 0)
    assert loaded.kind == "global" and torch.equal(loaded.items, initial) and torch.equal(loaded.clients, clients)
    assert loaded.keep_local == 0.0
    first = agg.proximal(clients, state)
    assert torch.equal(first.target, initial.expand(2, -1, -1)) and first.coef == 2.5 / initial.numel()
    tables = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, state = agg.aggregate(_uploads(tables, torch.arange(5), 5), state, RoundContext(0, {}, torch.Generator()))
    later = agg.proximal(clients, state)
    assert torch.equal(later.target, state["personal"][clients])
    assert not torch.equal(later.target[0], later.target[1])
    assert torch.equal(agg.before_training(clients, state, 1).items, state["global"])
    assert torch.equal(agg.cold_start(None, state, None).items, state["global"])


def test_no_proximal_term_without_weight():
    agg, state, _ = _started(reg=0.0)
    assert agg.proximal(torch.tensor([0]), state) is None


def test_global_table_weighs_by_samples_when_asked():
    tables = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    uploads = _uploads(tables, torch.arange(4), 4)  # sample counts 5, 6, 7, 8
    agg, state, _ = _started(weighting="samples", neighborhood_threshold=50.0)  # every row keeps itself
    _, state = agg.aggregate(uploads, state, RoundContext(0, {}, torch.Generator()))
    weights = torch.tensor([5.0, 6.0, 7.0, 8.0], dtype=torch.float64) / 26
    assert torch.allclose(state["global"], torch.einsum("n,nid->id", weights, tables), rtol=0, atol=1e-15)


@pytest.mark.parametrize("knobs", [{"similarity": "dot"}, {"neighborhood_size": -1}, {"mp_layers": 0}, {"reg": -1.0}])
def test_bad_knobs_are_refused(knobs):
    with pytest.raises(ValueError):
        GPFedRec(**knobs)


def test_threshold_rows_keep_scores_strictly_above_the_mean_times_threshold():
    scores = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 2.0, -1.0]], dtype=torch.float64)  # mean 1
    graph = neighbourhoods(scores, 0, 1.0)
    expected = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    assert torch.equal(graph, expected)  # 1.0 == t is left out; a lone neighbour gets weight 1
    assert torch.equal(neighbourhoods(scores, 0, 5.0), torch.eye(3, dtype=torch.float64))  # nobody above: itself
    top = neighbourhoods(scores, 2, 1.0)
    assert torch.equal(top, torch.tensor([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]], dtype=torch.float64))


def test_scores_of_small_and_of_identical_or_opposite_tables():
    small = torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.1, 0.0], [0.1, 0.1]], dtype=torch.float64)
    euclidean = relation_scores(small, "euclidean")
    assert euclidean[0, 1] == pytest.approx(-0.5, abs=1e-15) and euclidean[2, 3] == pytest.approx(-0.1, abs=1e-15)
    cosine = relation_scores(small[2:], "cosine")
    assert cosine[0, 1] == pytest.approx(0.5 ** 0.5, abs=1e-15)
    draws = torch.randn(300, 7, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    draws = draws * torch.rand(300, 1, generator=torch.Generator().manual_seed(12), dtype=torch.float64) * 10
    tables = torch.stack([draws, draws, -draws], 1).reshape(900, 7)  # a, a, -a per draw
    official = relation_scores(tables, "official")
    assert float(official.min()) >= 0.0 and float(official.max()) <= 2.0  # sklearn clips rounding to [0, 2]
    same, opposite = official[0::3, 1::3].diagonal(), official[0::3, 2::3].diagonal()
    assert bool((same == 0).any()) and bool((opposite == 2).any())  # clipping happened at both ends


def test_constructor_defaults_are_the_declared_ones():
    declared = {item.name: item.default for item in dataclasses.fields(GPFedRecAggConfig) if item.name != "name"}
    taken = {name: parameter.default for name, parameter in inspect.signature(GPFedRec.__init__).parameters.items()
             if name != "self"}
    assert taken == declared


def test_float32_tables_statistics_and_kept_targets():
    gen = torch.Generator().manual_seed(9)
    agg, state, initial = _started()
    state = agg.start(initial.float(), torch.zeros(0))
    first = torch.randn(3, 6, 3, generator=gen)
    downloads, state = agg.aggregate(_uploads(first, torch.tensor([0, 1, 2]), 5), state,
                                     RoundContext(0, {}, torch.Generator()))
    assert state["personal"].dtype == torch.float32 and state["global"].dtype == torch.float32
    assert downloads.stats["global_change"] == pytest.approx(float((state["global"] - initial.float()).norm()),
                                                             rel=1e-6)
    assert {"w_self", "w_entropy", "w_nonzero"} <= set(downloads.stats)
    kept = state["personal"][0].clone()
    _, state = agg.aggregate(_uploads(torch.randn(2, 6, 3, generator=gen), torch.tensor([3, 4]), 5), state,
                             RoundContext(1, {}, torch.Generator()))
    assert torch.equal(state["personal"][0], kept)  # client 0 sat out: its target stays
    assert agg.cold_start(None, state, None).kind == "global"


def test_the_defaults_are_the_official_code_s_threshold_and_weight():
    agg = GPFedRec()
    initial = torch.randn(6, 3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    state = agg.start(initial, torch.zeros(0, dtype=torch.float64))
    assert agg.proximal(torch.tensor([0]), state).coef == 1.0 / initial.numel()  # reg = 1
    tables = torch.randn(6, 6, 3, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    _, state = agg.aggregate(_uploads(tables, torch.arange(6), 6), state, RoundContext(0, {}, torch.Generator()))
    graph = neighbourhoods(relation_scores(tables.reshape(6, -1), "official"), 0, 1.0)
    assert torch.allclose(state["personal"], torch.einsum("ij,jad->iad", graph, tables), rtol=0, atol=1e-14)
