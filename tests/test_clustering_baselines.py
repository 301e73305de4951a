"""FedFast and PerFedRec: server steps against transcriptions of docs/methods/fedfast.md and perfedrec.md, the
seeded k-means and stratified sampling, and one property each that FedAvg would not have."""

import numpy as np
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.clustering import kmeans, proportional_quotas, stratified_sample
from fedca.aggregators.fedfast import FedFast
from fedca.aggregators.perfedrec import PerFedRec, code_sample
from fedca.federation.evaluate import client_scores
from fedca.federation.population import Population
from fedca.federation.merge import apply_downloads
from fedca.models.backbones import FCF


def _population(n=8, items=6, dim=3, mlp=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Population(user=torch.randn(n, dim, generator=gen, dtype=torch.float64),
                      items=torch.randn(n, items, dim, generator=gen, dtype=torch.float64),
                      mlp=torch.randn(n, mlp, generator=gen, dtype=torch.float64))


def _context(round_index=0, seed=0):
    return RoundContext(round=round_index, weights={}, generator=torch.Generator().manual_seed(seed))


def test_kmeans_separates_blobs_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = centres.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2, generator=gen)
    first = kmeans(points, 3, torch.Generator().manual_seed(5))
    second = kmeans(points, 3, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    for blob in range(3):
        assert first[blob * 20:(blob + 1) * 20].unique().numel() == 1
    assert first.unique().numel() == 3


def test_kmeans_of_identical_points_puts_everyone_in_one_cluster():
    assignment = kmeans(torch.ones(10, 4), 3, torch.Generator().manual_seed(0))
    assert assignment.unique().numel() == 1


def test_stratified_sample_takes_each_cluster_in_proportion():
    assignment = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    assert proportional_quotas(torch.tensor([50, 30, 20]), 10).tolist() == [5, 3, 2]
    chosen = stratified_sample(assignment, 10, torch.Generator().manual_seed(1))
    assert torch.bincount(assignment[chosen], minlength=3).tolist() == [5, 3, 2]
    assert chosen.unique().numel() == 10


def test_perfedrec_code_sampling_returns_distinct_clients_of_the_requested_count():
    assignment = torch.tensor([0] * 90 + [1] * 10)
    chosen = code_sample(assignment, 40, torch.Generator().manual_seed(2))
    assert chosen.numel() == 40 and chosen.unique().numel() == 40


def _fedfast_reference(tables, server_items, sizes, mlps):
    """Per-row and per-client loops of FedFast's ActvAGG for (V, Theta)."""
    n, items, dim = tables.shape
    new_items = server_items.copy()
    for j in range(items):
        g = np.array([np.linalg.norm(tables[k, j] - server_items[j]) for k in range(n)])
        if g.sum() > 0:
            new_items[j] = sum(g[k] / g.sum() * tables[k, j] for k in range(n))
    p = np.array(sizes, dtype=float) / sum(sizes)
    return new_items, sum(p[k] * mlps[k] for k in range(n))


def test_fedfast_server_step_matches_a_transcription_and_propagates_to_non_delegates():
    population = _population(n=8)
    server_items = population.items.mean(0)
    aggregator = FedFast(delegates_ratio=0.25, clusters=2, gamma0=0.5, gamma_decay=0.9)
    state = aggregator.start(server_items, population.mlp.mean(0), population.user.clone())
    state["assignment"] = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    delegates = torch.tensor([1, 5])  # one per cluster
    population.items[1, 2] = server_items[2]  # delegate 1 left row 2 as it was
    old_users = population.user.clone()
    population.user[delegates] += torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    uploads = Uploads(population, delegates, torch.tensor([10, 30]), torch.arange(0), torch.arange(0),
                      reveal_users=True)
    downloads, new_state = aggregator.aggregate(uploads, state, _context(round_index=2))
    expected_items, expected_mlp = _fedfast_reference(population.items[delegates].numpy(), server_items.numpy(),
                                                      [10, 30], population.mlp[delegates].numpy())
    assert np.abs(downloads.items.numpy() - expected_items).max() <= 1e-6
    assert np.abs(downloads.mlp.numpy() - expected_mlp).max() <= 1e-6
    assert torch.allclose(downloads.items[2], population.items[5, 2])  # only delegate 5 moved row 2
    apply_downloads(population, downloads)
    gamma = 0.5 * 0.9 ** 2
    for client in (0, 2, 3):
        assert torch.allclose(population.user[client], old_users[client] + gamma * torch.tensor([1.0, 0, 0],
                                                                                                dtype=torch.float64))
    for client in (4, 6, 7):
        assert torch.allclose(population.user[client], old_users[client] + gamma * torch.tensor([0, 2.0, 0],
                                                                                                dtype=torch.float64))
    assert torch.equal(new_state["users"], population.user)  # the server's copy follows the clients


def test_fedfast_selects_delegates_from_every_cluster():
    population = _population(n=40, seed=3)
    population.user[:20] += 20.0
    aggregator = FedFast(delegates_ratio=0.1, clusters=2)
    state = aggregator.start(population.items[0], population.mlp[0], population.user.clone())
    chosen = aggregator.select(40, 40, state, torch.Generator().manual_seed(0))
    assert chosen.numel() == 4
    assert int((chosen < 20).sum()) == 2


def test_perfedrec_server_keeps_global_and_cluster_means_and_starts_clients_from_their_cluster():
    population = _population(n=6)
    aggregator = PerFedRec(clusters=2, cluster_on="user")
    state = aggregator.start(population.items[0].clone(), population.mlp[0].clone(), population.user.clone())
    state["assignment"] = torch.tensor([0, 0, 0, 1, 1, 1])
    participants = torch.tensor([0, 1, 3])
    uploads = Uploads(population, participants, torch.tensor([5, 50, 9]), torch.arange(0), torch.arange(0),
                      reveal_users=True)
    before = population.items.clone()
    downloads, state = aggregator.aggregate(uploads, state, _context())
    apply_downloads(population, downloads)
    assert torch.equal(population.items, before)  # clients keep their own trained blocks
    tables = before.numpy()
    assert np.abs(state["items"].numpy() - (tables[0] + tables[1] + tables[3]) / 3).max() <= 1e-12
    assert np.abs(state["cluster_items"][0].numpy() - (tables[0] + tables[1]) / 2).max() <= 1e-12
    assert np.abs(state["cluster_items"][1].numpy() - tables[3]).max() <= 1e-12
    start = aggregator.before_training(torch.tensor([2, 4]), state, round_index=2)
    apply_downloads(population, start)
    assert torch.equal(population.items[2], state["cluster_items"][0])
    assert torch.equal(population.items[4], state["cluster_items"][1])
    global_start = aggregator.before_training(torch.tensor([5]), state, round_index=1)
    apply_downloads(population, global_start)
    assert torch.equal(population.items[5], state["items"])


def test_perfedrec_scores_average_own_cluster_and_global_models():
    population = _population(n=4)
    aggregator = PerFedRec(clusters=2)
    state = aggregator.start(population.items[0].clone(), population.mlp[0].clone(), population.user.clone())
    state["assignment"] = torch.tensor([0, 0, 1, 1])
    uploads = Uploads(population, torch.arange(4), torch.tensor([1, 1, 1, 1]), torch.arange(0), torch.arange(0),
                      reveal_users=True)
    _, state = aggregator.aggregate(uploads, state, _context())
    clients, items = torch.tensor([0, 3]), torch.tensor([[0, 1, 2], [3, 4, 5]])
    scores = client_scores(population, FCF(), clients, items, aggregator.experts(state))
    for row, client in enumerate(clients.tolist()):
        user = population.user[client]
        own = torch.sigmoid(population.items[client][items[row]] @ user)
        cluster = torch.sigmoid(state["cluster_items"][state["model_of"][client]][items[row]] @ user)
        overall = torch.sigmoid(state["items"][items[row]] @ user)
        assert torch.allclose(scores[row], (own + cluster + overall) / 3, atol=1e-12)
    assert not torch.allclose(state["cluster_items"][0], state["cluster_items"][1])


def test_perfedrec_can_cluster_on_trained_item_rows_without_seeing_user_vectors():
    population = _population(n=4, items=6)
    aggregator = PerFedRec(clusters=2, cluster_on="trained_items")
    assert aggregator.reveals == ("mean trained item row per client",)
    state = aggregator.start(population.items[0].clone(), population.mlp[0].clone())
    row_keys = torch.tensor([0 * 6 + 1, 0 * 6 + 2, 1 * 6 + 0, 2 * 6 + 5, 3 * 6 + 3, 3 * 6 + 4])
    row_counts = torch.tensor([1, 3, 2, 1, 1, 1])
    uploads = Uploads(population, torch.arange(4), torch.tensor([4, 2, 1, 2]), row_keys, row_counts)
    _, state = aggregator.aggregate(uploads, state, _context())
    expected = (1 * population.items[0, 1] + 3 * population.items[0, 2]) / 4
    assert torch.allclose(state["features"][0], expected)
    assert torch.allclose(state["features"][3], (population.items[3, 3] + population.items[3, 4]) / 2)
    assert state["assignment"].shape == (4,)
