"""Server steps of the baselines against direct transcriptions of their equations, and one
property each that would fail if the method were silently FedAvg."""

import numpy as np
import pytest
import scipy.linalg
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.fedatt import FedAtt
from fedca.aggregators.fedper import FedPer, shared_mlp_columns
from fedca.federation.population import Population
from fedca.federation.merge import apply_downloads

LAYERS = [8, 6, 3, 1]  # d = 4: P = 8*6+6 + 6*3+3 + 3*1+1 = 79


def _population(n=5, items=7, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mlp_size = sum(o * i + o for i, o in zip(LAYERS[:-1], LAYERS[1:]))
    return Population(user=torch.randn(n, dim, generator=gen, dtype=torch.float64),
                      items=torch.randn(n, items, dim, generator=gen, dtype=torch.float64),
                      mlp=torch.randn(n, mlp_size, generator=gen, dtype=torch.float64))


def _uploads(population, sizes):
    n = population.num_clients
    return Uploads(population, torch.arange(n), torch.tensor(sizes), torch.arange(0), torch.arange(0))


def _context(seed=1):
    return RoundContext(round=0, weights={}, generator=torch.Generator().manual_seed(seed))


def test_fedper_averages_base_layers_by_data_size():
    population = _population()
    sizes = [10, 20, 30, 25, 15]
    weights = np.array(sizes) / sum(sizes)
    expected_items = sum(w * population.items[i].numpy() for i, w in enumerate(weights))
    base = 8 * 6 + 6  # the first layer only (personal_layers=2 of 3)
    expected_base = sum(w * population.mlp[i, :base].numpy() for i, w in enumerate(weights))
    downloads, _ = FedPer(mlp_layers=LAYERS, personal_layers=2).aggregate(_uploads(population, sizes), {}, _context())
    assert np.allclose(downloads.items.numpy(), expected_items, atol=1e-12)
    assert np.allclose(downloads.mlp.numpy(), expected_base, atol=1e-12)


def test_fedper_personal_layers_are_bit_identical_after_aggregation():
    population = _population()
    before = population.mlp.clone()
    downloads, _ = FedPer(mlp_layers=LAYERS, personal_layers=2).aggregate(
        _uploads(population, [1, 2, 3, 4, 5]), {}, _context())
    apply_downloads(population, downloads)
    base = shared_mlp_columns(LAYERS, 2).numel()
    assert torch.equal(population.mlp[:, base:], before[:, base:])
    assert not torch.equal(population.mlp[:, :base], before[:, :base])
    assert torch.equal(population.items[0], population.items[4])


def _fedatt_reference(server, clients, step_size, noise_draws, noise):
    """Direct transcription of the fed-att server loop for one layer (numpy, SciPy's ord-2 norm)."""
    distances = np.array([scipy.linalg.norm(server - c, ord=2) for c in clients])
    attention = np.exp(distances) / np.exp(distances).sum()
    step = sum(a * (server - c) for a, c in zip(attention, clients))
    return server - step_size * step + noise * noise_draws


@pytest.mark.parametrize("att_norm", ["spectral", "fro"])
def test_fedatt_step_matches_a_transcription_of_the_equations(att_norm):
    population = _population(seed=3)
    server_items = torch.randn(7, 4, dtype=torch.float64)
    server_mlp = torch.randn(population.mlp.shape[1], dtype=torch.float64)
    aggregator = FedAtt(mlp_layers=LAYERS, step_size=1.2, noise=0.01, att_norm=att_norm)
    state = aggregator.start(server_items, server_mlp)
    downloads, _ = aggregator.aggregate(_uploads(population, [1] * 5), state, _context(seed=7))
    draws = torch.Generator().manual_seed(7)
    first_draw = torch.randn(server_items.shape, generator=draws, dtype=torch.float64).numpy()
    clients = population.items.numpy()
    if att_norm == "fro":
        distances = np.array([np.linalg.norm(server_items.numpy() - c) for c in clients])
        attention = np.exp(distances) / np.exp(distances).sum()
        expected = server_items.numpy() - 1.2 * sum(a * (server_items.numpy() - c) for a, c in zip(attention, clients))
        expected += 0.01 * first_draw
    else:
        expected = _fedatt_reference(server_items.numpy(), clients, 1.2, first_draw, 0.01)
    assert np.allclose(downloads.items.numpy(), expected, atol=1e-6)
    bias = slice(8 * 6, 8 * 6 + 6)
    torch.randn(6, 8, generator=draws, dtype=torch.float64)  # the first MLP weight's noise comes before the bias's
    bias_noise = torch.randn(6, generator=draws, dtype=torch.float64).numpy()
    expected_bias = _fedatt_reference(server_mlp[bias].numpy()[None, :], population.mlp[:, bias].numpy()[:, None, :],
                                      1.2, bias_noise[None, :], 0.01)[0]
    assert np.allclose(downloads.mlp[bias].numpy(), expected_bias, atol=1e-6)


def test_fedatt_weighs_farther_clients_more_unlike_fedavg():
    population = _population(n=3, seed=5)
    server_items = population.items.mean(0)
    population.items[2] += 10.0  # one client far from the server
    aggregator = FedAtt(mlp_layers=LAYERS, noise=0.0)
    downloads, _ = aggregator.aggregate(_uploads(population, [1, 1, 1]),
                                        aggregator.start(server_items, population.mlp.mean(0)), _context())
    assert downloads.stats["att_max"] > 0.99
    assert float((downloads.items - population.items.mean(0)).abs().max()) > 1.0
