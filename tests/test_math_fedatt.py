"""FedAtt (aggregators/fedatt.py, docs/methods/fedatt.md): the code's defaults, and the spectral
norm reaching every matrix layer of a round, on a case worked out by hand.

Two clients, server at zero, step_size 1, no noise. Each matrix layer (the item table and the
MLP's 2 x 2 weight) is W_0 = I for client 0 and W_1 = diag(2, 0) for client 1: spectral norms
(1, 2) but Frobenius norms (sqrt 2, 2), so a round that fell back to Frobenius on either layer
weighs the clients differently. With a = softmax(1, 2) the new layer is
0 - 1 * sum_i a_i (0 - W_i) = a_0 I + a_1 diag(2, 0) = diag(a_0 + 2 a_1, a_0).
"""

import math

import pytest
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.fedatt import FedAtt
from fedca.federation.population import Population

A1 = math.exp(2) / (math.exp(1) + math.exp(2))  # softmax of the spectral distances (1, 2)
A0 = 1 - A1
IDENTITY = [[1.0, 0.0], [0.0, 1.0]]
DIAG_2_0 = [[2.0, 0.0], [0.0, 0.0]]


def uploads(items, mlp):
    n = items.shape[0]
    population = Population(user=torch.zeros(n, items.shape[2], dtype=items.dtype), items=items.clone(),
                            mlp=mlp.clone())
    return Uploads(population, torch.arange(n), torch.tensor([1, 1]), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0, dtype=torch.long))


def test_fedatt_defaults_are_the_codes():
    # docs/methods/fedatt.md §Switches: epsilon = 1.2, beta = 0.001 (the code's dp), spectral norm
    agg = FedAtt(mlp_layers=[2, 1])
    assert (agg.step_size, agg.noise, agg.att_norm) == (1.2, 0.001, "spectral")


def test_spectral_norm_weighs_the_item_table_and_the_mlp_weights():
    agg = FedAtt(mlp_layers=[2, 2, 1], step_size=1.0, noise=0.0, att_norm="spectral")
    # flat MLP (P = 9): weight (2, 2) [0, 4), bias [4, 6), weight (1, 2) [6, 8), bias [8, 9)
    items = torch.tensor([IDENTITY, DIAG_2_0], dtype=torch.float64)  # [n=2, I=2, d=2]
    mlp = torch.zeros(2, 9, dtype=torch.float64)
    mlp[0, 0:4] = torch.tensor(IDENTITY, dtype=torch.float64).reshape(-1)
    mlp[1, 0:4] = torch.tensor(DIAG_2_0, dtype=torch.float64).reshape(-1)  # other layers: both clients at 0
    state = agg.start(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(9, dtype=torch.float64))
    downloads, _ = agg.aggregate(uploads(items, mlp), state, RoundContext(round=0, weights={},
                                                                          generator=torch.Generator().manual_seed(0)))
    new_layer = [[A0 + 2 * A1, 0.0], [0.0, A0]]
    # values below 2 built from a softmax and one SVD of a diagonal matrix: a few ulp (2.2e-16) at most
    torch.testing.assert_close(downloads.items, torch.tensor(new_layer, dtype=torch.float64), rtol=0, atol=1e-15)
    expected_mlp = torch.zeros(9, dtype=torch.float64)
    expected_mlp[0:4] = torch.tensor(new_layer, dtype=torch.float64).reshape(-1)
    torch.testing.assert_close(downloads.mlp, expected_mlp, rtol=0, atol=1e-15)
    assert downloads.stats["att_max"] == pytest.approx(A1, abs=1e-15)
