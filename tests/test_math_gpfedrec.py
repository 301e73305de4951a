"""GPFedRec's server step and hooks (fedca/aggregators/gpfedrec.py) against a per-pair
transcription of the official code's graph, neighbourhood and message-passing loops
(tests/oracle.py), on random tables; no data, fast enough for mutation testing."""

import numpy as np
import pytest
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.gpfedrec import GPFedRec
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
