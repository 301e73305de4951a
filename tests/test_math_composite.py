"""FedCA's composite weights and personal aggregates (aggregators/composite.py) on a two-client case
small enough to work out by hand.

Two clients, I = 3 items, d = 2. Client 0's item rows are (-1, 0), (1, 0), (0, 0), client 1's
(0, -2), (0, 2), (0, 0); each trained items 0 and 1 once (item 2 untrained).

* PC-1 scores (item mean 0): client 0 varies along x, so z_0 = (1, -1, 0) up to sign; the
  ``scores`` rule makes the first of the two largest-|.| entries positive. Client 1: z_1 = (2, -2, 0).
  ||z_0 - z_1|| = sqrt(1 + 1) = sqrt(2), so S_01 = -1 / (1 + sqrt(2)) = -(sqrt(2) - 1) =: -s,
  and S_00 = S_11 = -1.
* Top-1 bases: (1, 0) and (0, 1) up to sign; orthogonal, so C_01 = cos(arccos(0)) = 0, C_ii = 1.
* p = sample counts (1, 3) / 4 = (0.25, 0.75).
* A row (a, b) with |a - b| < 1 projects onto the simplex at ((1 + a - b) / 2, (1 - a + b) / 2).
"""

import math

import pytest
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.composite import Composite
from fedca.federation.population import Population

S = math.sqrt(2) - 1  # -S_01
TABLES = torch.tensor([[[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]],
                       [[0.0, -2.0], [0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)  # [m, I, d]
COUNTS = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)  # [m, I]
SAMPLES = torch.tensor([1, 3])


def two_row_projection(a: float, b: float) -> list:
    """Simplex projection of (a, b) when |a - b| < 1."""
    assert abs(a - b) < 1
    return [(1 + a - b) / 2, (1 - a + b) / 2]


def expected_weights(w_sim: float, w_comp: float, comp_sign: int, p=(0.25, 0.75)) -> torch.Tensor:
    """W from target_ij = w_comp * comp_sign * C_ij - w_sim * S_ij + p_j, with C = I and S as above."""
    c = [[1.0, 0.0], [0.0, 1.0]]
    s = [[-1.0, -S], [-S, -1.0]]
    rows = []
    for i in range(2):
        target = [w_comp * comp_sign * c[i][j] - w_sim * s[i][j] + p[j] for j in range(2)]
        rows.append(two_row_projection(*target))
    return torch.tensor(rows, dtype=torch.float64)


def test_weight_matrix_combines_similarity_complementarity_and_data_weights():
    weights, similarity, complementarity = Composite(k_principal=1).weight_matrix(
        TABLES, COUNTS, SAMPLES, w_sim=0.25, w_comp=0.25)
    torch.testing.assert_close(similarity, torch.tensor([[-1.0, -S], [-S, -1.0]], dtype=torch.float64),
                               rtol=0, atol=1e-15)  # eigh on a diagonal 2x2: exact up to rounding
    torch.testing.assert_close(complementarity, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-15)
    # row 0: a - b = 0.25 * (1 - 0) - 0.25 * (-1 + S) + (0.25 - 0.75) = -0.25 * S
    expected = expected_weights(0.25, 0.25, 1)
    assert expected[0, 0] == pytest.approx((1 - 0.25 * S) / 2, abs=1e-15)
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-14)


def test_negative_comp_sign_turns_complementarity_against_the_diagonal():
    weights, _, _ = Composite(k_principal=1, comp_sign=-1).weight_matrix(TABLES, COUNTS, SAMPLES, 0.25, 0.25)
    # row 0: a - b = -0.25 - 0.25 * (-1 + S) - 0.5 = -0.5 - 0.25 * S, so w_00 = (0.5 - 0.25 * S) / 2
    assert float(weights[0, 0]) == pytest.approx((0.5 - 0.25 * S) / 2, abs=1e-14)
    torch.testing.assert_close(weights, expected_weights(0.25, 0.25, -1), rtol=0, atol=1e-14)


def test_zero_weights_switch_their_matrices_off():
    weights, similarity, complementarity = Composite(k_principal=1).weight_matrix(TABLES, COUNTS, SAMPLES, 0.0, 0.0)
    assert torch.equal(similarity, torch.zeros(2, 2, dtype=torch.float64))
    assert torch.equal(complementarity, torch.zeros(2, 2, dtype=torch.float64))
    # target = p in every row, already on the simplex
    torch.testing.assert_close(weights, torch.tensor([[0.25, 0.75], [0.25, 0.75]], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_only_similarity_or_only_complementarity():
    weights, similarity, complementarity = Composite(k_principal=1).weight_matrix(TABLES, COUNTS, SAMPLES, 0.5, 0.0)
    assert torch.equal(complementarity, torch.zeros(2, 2, dtype=torch.float64))
    assert float(similarity[0, 1]) == pytest.approx(-S, abs=1e-15)
    torch.testing.assert_close(weights, expected_weights(0.5, 0.0, 1), rtol=0, atol=1e-14)
    weights, similarity, complementarity = Composite(k_principal=1).weight_matrix(TABLES, COUNTS, SAMPLES, 0.0, 0.375)
    assert torch.equal(similarity, torch.zeros(2, 2, dtype=torch.float64))
    torch.testing.assert_close(complementarity, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(weights, expected_weights(0.0, 0.375, 1), rtol=0, atol=1e-14)


def test_uniform_weighting_uses_equal_data_weights():
    weights, _, _ = Composite(k_principal=1, weighting="uniform").weight_matrix(TABLES, COUNTS, SAMPLES, 0.25, 0.25)
    torch.testing.assert_close(weights, expected_weights(0.25, 0.25, 1, p=(0.5, 0.5)), rtol=0, atol=1e-14)


def test_svd_metric_and_components_sign_rule_give_the_same_weights_here():
    # the bases are orthogonal, so every metric and sign convention gives C_01 = 0 and |S_01| = s
    weights, _, _ = Composite(k_principal=1, comp_metric="svd", pca_sign_rule="components").weight_matrix(
        TABLES, COUNTS, SAMPLES, 0.25, 0.25)
    torch.testing.assert_close(weights, expected_weights(0.25, 0.25, 1), rtol=0, atol=1e-14)


def uploads_for(tables: torch.Tensor, mlp: torch.Tensor, samples: torch.Tensor) -> Uploads:
    n, num_items, dim = tables.shape
    population = Population(user=torch.zeros(n, dim, dtype=tables.dtype), items=tables.clone(), mlp=mlp.clone())
    keys = torch.tensor([position * num_items + item for position in range(n) for item in (0, 1)])
    return Uploads(population, torch.arange(n), samples, keys, torch.ones(keys.numel(), dtype=torch.long))


def context(seed: int = 0, interpolation: float = 0.125) -> RoundContext:
    return RoundContext(round=0, weights={"w_sim": 0.25, "w_comp": 0.25, "interpolation": interpolation},
                        generator=torch.Generator().manual_seed(seed))


def test_aggregate_sends_each_picked_client_its_weighted_mix():
    mlp = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)  # [n, P]
    uploads = uploads_for(TABLES, mlp, SAMPLES)
    downloads, state = Composite(k_principal=1, agg_clients_ratio=1.0).aggregate(uploads, {"kept": 1}, context())
    assert state == {"kept": 1}
    assert downloads.kind == "personal"
    assert downloads.keep_local == 0.125
    assert sorted(downloads.clients.tolist()) == [0, 1]
    weights = expected_weights(0.25, 0.25, 1)  # rows and columns in client order
    for row, client in enumerate(downloads.clients.tolist()):
        w0, w1 = weights[client]
        torch.testing.assert_close(downloads.items[row], w0 * TABLES[0] + w1 * TABLES[1], rtol=0, atol=1e-14)
        # MLP: w0 * (1, 0) + w1 * (0, 4)
        torch.testing.assert_close(downloads.mlp[row], torch.stack([w0, 4 * w1]), rtol=0, atol=1e-14)
    stats = downloads.stats
    assert stats["aggregated"] == 2
    assert stats["untrained_share"] == pytest.approx(2 / 6)  # item 2 of both clients has count 0
    assert stats["s_mean"] == pytest.approx((-2 - 2 * S) / 4, abs=1e-15)
    assert stats["c_mean"] == pytest.approx(0.5, abs=1e-15)
    assert stats["w_self"] == pytest.approx(float(weights[0, 0] + weights[1, 1]) / 2, abs=1e-14)
    assert stats["w_nonzero"] == 2.0


@pytest.mark.parametrize("seed", [3, 11])
def test_aggregate_picks_a_uniform_subset_of_the_given_share(seed):
    n = 8
    tables = torch.cat([TABLES * (c + 1) for c in range(4)])  # clients 2c, 2c + 1 scale clients 0, 1
    mlp = torch.arange(16, dtype=torch.float64).reshape(8, 2)
    uploads = uploads_for(tables, mlp, torch.tensor([1, 3] * 4))
    downloads, _ = Composite(k_principal=1, agg_clients_ratio=0.5).aggregate(uploads, {}, context(seed=seed))
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:4]  # the same raw draw
    assert downloads.clients.tolist() == picked.tolist()  # 1 in 1680 to match by chance
    assert downloads.items.shape == (4, 3, 2) and downloads.mlp.shape == (4, 2)
    assert downloads.stats["aggregated"] == 4


def test_aggregate_of_float32_uploads_mixes_in_float32():
    uploads = uploads_for(TABLES.float(), torch.tensor([[1.0, 0.0], [0.0, 4.0]]), SAMPLES)
    downloads, _ = Composite(k_principal=1, agg_clients_ratio=1.0).aggregate(uploads, {}, context())
    assert downloads.items.dtype == torch.float32 and downloads.mlp.dtype == torch.float32
    weights = expected_weights(0.25, 0.25, 1).float()
    for row, client in enumerate(downloads.clients.tolist()):
        # float32 rounding of the table entries (at most 2 in magnitude): a few ulps of 2
        torch.testing.assert_close(downloads.items[row], weights[client, 0] * TABLES[0].float()
                                   + weights[client, 1] * TABLES[1].float(), rtol=0, atol=1e-6)


def test_aggregate_with_too_few_participants_sends_nothing():
    uploads = uploads_for(TABLES[:1], torch.zeros(1, 2, dtype=torch.float64), SAMPLES[:1])
    downloads, state = Composite(agg_clients_ratio=0.5).aggregate(uploads, {"s": 0}, context())
    assert downloads.kind == "none" and state == {"s": 0}  # int(1 * 0.5) = 0 clients


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.01])
def test_share_outside_zero_one_is_rejected(ratio):
    with pytest.raises(ValueError, match="agg_clients_ratio"):
        Composite(agg_clients_ratio=ratio)


def test_share_of_one_and_both_signs_are_accepted():
    assert Composite(agg_clients_ratio=1.0, comp_sign=-1).agg_clients_ratio == 1.0


@pytest.mark.parametrize("sign", [0, 2, -2])
def test_comp_sign_other_than_plus_minus_one_is_rejected(sign):
    with pytest.raises(ValueError, match="comp_sign"):
        Composite(comp_sign=sign)


def test_constructor_keeps_every_setting():
    agg = Composite(k_principal=3, agg_clients_ratio=0.2, comp_sign=-1, comp_metric="svd",
                    pca_sign_rule="components", weighting="uniform")
    assert (agg.k_principal, agg.agg_clients_ratio, agg.comp_sign, agg.comp_metric, agg.pca_sign_rule,
            agg.weighting) == (3, 0.2, -1, "svd", "components", "uniform")


def test_the_sign_rule_reaches_the_similarity():
    # client 1's rows in the other order: (0, 2), (0, -2), (0, 0). Its PC-1 scores are (2, -2, 0) under
    # both rules (component (0, 1) and first score positive). Client 0's are (1, -1, 0) under "scores"
    # but (-1, 1, 0) under "components" (component (1, 0)): distance sqrt(2) or sqrt(9 + 9) = 3 sqrt(2).
    tables = TABLES.clone()
    tables[1, :2] = tables[1, :2].flip(0)
    _, by_scores, _ = Composite(k_principal=1).weight_matrix(tables, COUNTS, SAMPLES, 0.25, 0.25)
    _, by_components, _ = Composite(k_principal=1, pca_sign_rule="components").weight_matrix(
        tables, COUNTS, SAMPLES, 0.25, 0.25)
    assert float(by_scores[0, 1]) == pytest.approx(-1 / (1 + math.sqrt(2)), abs=1e-15)
    assert float(by_components[0, 1]) == pytest.approx(-1 / (1 + 3 * math.sqrt(2)), abs=1e-15)


def test_switched_off_matrices_are_float64_zeros():
    _, similarity, complementarity = Composite(k_principal=1).weight_matrix(TABLES.float(), COUNTS, SAMPLES, 0.0, 0.0)
    assert similarity.dtype == torch.float64 and complementarity.dtype == torch.float64


def test_the_sign_rule_and_metric_reach_the_complementarity():
    # client 1 now varies along the diagonal: rows (1, 1), (-1, -1), (0, 0), top direction +-(1, 1) / sqrt(2).
    # "scores" makes the first trained item's score positive: b_0 = (-1, 0), b_1 = (1, 1) / sqrt(2), so the
    # signed cosine is -1 / sqrt(2); "components" makes the largest entry positive: b_0 = (1, 0), +1 / sqrt(2).
    # The svd metric takes the singular value, |cosine| = 1 / sqrt(2), whatever the signs.
    tables = TABLES.clone()
    tables[1] = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    expected = {("greedy_signed", "scores"): -1 / math.sqrt(2), ("greedy_signed", "components"): 1 / math.sqrt(2),
                ("svd", "scores"): 1 / math.sqrt(2)}
    for (metric, rule), cosine in expected.items():
        agg = Composite(k_principal=1, comp_metric=metric, pca_sign_rule=rule)
        _, _, complementarity = agg.weight_matrix(tables, COUNTS, SAMPLES, 0.25, 0.25)
        assert float(complementarity[0, 1]) == pytest.approx(cosine, abs=1e-12), (metric, rule)


def test_constructor_defaults_are_the_official_settings():
    agg = Composite()
    assert (agg.k_principal, agg.agg_clients_ratio, agg.comp_sign, agg.comp_metric, agg.pca_sign_rule,
            agg.weighting) == (4, 0.1, 1, "greedy_signed", "scores", "samples")
