"""Tests for fedca.aggregators.subspace: batched FedCA similarity, bases and complementarity.

The reference is a NumPy transcription of the official FedCA loops (hongleizhang/FedCA
``model/tools.py``: ``calculate_l2_similarity``, ``get_principal``, ``calculate_complementary``,
``compute_principal_angles``, ``optimizing_composite_matrix_neighbor``, ``sub_matrix_shift``), with
scikit-learn 1.0.2's exact PCA (centred SVD plus the u-based ``svd_flip``) written out via ``eigh``
and the per-row cvxpy QP solved by SLSQP and certified by its KKT conditions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedca.aggregators.composite import Composite
from qp_reference import kkt_simplex_qp
from fedca.aggregators.subspace import (
    complementarity_matrix,
    pca1_scores,
    principal_bases,
    similarity_matrix,
)

M, NUM_ITEMS, D, K = 6, 60, 8, 4


# --- NumPy transcription of the reference loops ----------------------------------------------


def _ref_pca_fit_transform(rows: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn 1.0.2 PCA(n_components).fit_transform with an exact solver: (scores [n, k], components [k, d])."""
    centred = rows - rows.mean(axis=0)
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    components = eigenvectors[:, ::-1][:, :n_components].T  # [k, d]
    scores = centred @ components.T
    largest = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[largest, np.arange(n_components)])
    return scores * signs, components * signs[:, np.newaxis]


def _ref_similarity(tables: np.ndarray, init_table: np.ndarray) -> np.ndarray:
    """calculate_l2_similarity: PC-1 scores minus the template's, per-pair distance, clamp at -0.9."""
    n = len(tables)
    similarity = np.zeros((n, n))
    init_scores = _ref_pca_fit_transform(init_table, 1)[0]
    for i in range(n):
        z_i = (_ref_pca_fit_transform(tables[i], 1)[0] - init_scores).reshape(1, -1)  # [1, I]
        for j in range(i, n):
            z_j = (_ref_pca_fit_transform(tables[j], 1)[0] - init_scores).reshape(1, -1)  # [1, I]
            distance = np.linalg.norm(z_i - z_j)
            average_similarity = np.mean(-1 / (1 + distance))
            if average_similarity < -0.9:
                average_similarity = -1.0
            similarity[i][j] = average_similarity
            similarity[j][i] = average_similarity
    return similarity


def _ref_principal(table: np.ndarray, item_ids: np.ndarray, k: int) -> np.ndarray:
    """get_principal: PCA components of the rows of the client's training item ids."""
    return _ref_pca_fit_transform(table[item_ids], k)[1]


def _ref_principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """compute_principal_angles, verbatim in logic: greedy argmax with -inf masking."""
    k = a.shape[0]
    norm_a = np.linalg.norm(a, axis=1)[:, np.newaxis]
    norm_b = np.linalg.norm(b, axis=1)
    cosine_matrix = np.dot(a, b.T) / (norm_a * norm_b)
    cos_phi_values = []
    for _ in range(k):
        i, j = np.unravel_index(np.argmax(cosine_matrix, axis=None), cosine_matrix.shape)
        cos_phi_values.append(cosine_matrix[i, j])
        cosine_matrix[i, :] = -np.inf
        cosine_matrix[:, j] = -np.inf
    return np.arccos(np.clip(cos_phi_values, -1, 1))


def _ref_complementarity(principal_list: list[np.ndarray]) -> np.ndarray:
    """calculate_complementary: upper triangle by pairs, mirrored."""
    n = len(principal_list)
    k = principal_list[0].shape[0]
    complementarity = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            phi = _ref_principal_angles(principal_list[i], principal_list[j])
            complementarity[i][j] = complementarity[j][i] = np.cos((1 / k) * np.sum(phi))
    return complementarity


def _ref_weights(
    similarity: np.ndarray, complementarity: np.ndarray, sample_num: np.ndarray, w_comp: float, w_sim: float
) -> np.ndarray:
    """optimizing_composite_matrix_neighbor + sub_matrix_shift, with SLSQP + KKT in place of cvxpy."""
    n = similarity.shape[0]
    p = sample_num / sample_num.sum()
    graph = np.zeros((n, n))
    for i in range(n):
        q = -w_comp * 2 * complementarity[i] + w_sim * 2 * similarity[i] - 2 * p
        graph[i] = kkt_simplex_qp(q)
    graph[np.abs(graph) < 1e-20] = 0
    return graph / graph.sum(axis=1, keepdims=True)


# --- fixtures ----------------------------------------------------------------------------------


def _random_instance(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tables [M, I, D] float64, init table [I, D], counts [M, I] int64 with some zeros).

    Client 1's table is a near-copy of client 0's, so their distance falls under the -0.9 clamp.
    """
    generator = torch.Generator().manual_seed(seed)
    init_table = torch.randn(NUM_ITEMS, D, generator=generator, dtype=torch.float64)
    scale = 0.5 + torch.rand(M, 1, D, generator=generator, dtype=torch.float64)
    tables = init_table + scale * torch.randn(M, NUM_ITEMS, D, generator=generator, dtype=torch.float64)
    tables[1] = tables[0] + 1e-4 * torch.randn(NUM_ITEMS, D, generator=generator, dtype=torch.float64)
    counts = torch.randint(0, 4, (M, NUM_ITEMS), generator=generator)
    counts[torch.rand(M, NUM_ITEMS, generator=generator) < 0.4] = 0
    return tables, init_table, counts


def _random_bases(m: int, k: int, d: int, seed: int) -> torch.Tensor:
    """[m, k, d] random orthonormal rows."""
    gaussian = torch.randn(m, d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(gaussian).Q.transpose(1, 2)  # [m, k, d]


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "w_comp", "w_sim"), [(0, 0.3, 0.3), (1, 1.0, 0.2), (2, 0.1, 1.5)])
def test_batched_similarity_complementarity_and_weights_match_reference_loops(seed, w_comp, w_sim):
    tables, init_table, counts = _random_instance(seed)
    tables_np, counts_np = tables.numpy(), counts.numpy()
    rng = np.random.default_rng(seed)
    item_ids = [rng.permutation(np.repeat(np.arange(NUM_ITEMS), counts_np[i])) for i in range(M)]
    ref_bases = [_ref_principal(tables_np[i], item_ids[i], K) for i in range(M)]
    ref_s = _ref_similarity(tables_np, init_table.numpy())
    ref_c = _ref_complementarity(ref_bases)
    sample_num = counts_np.sum(axis=1).astype(np.float64)
    ref_w = _ref_weights(ref_s, ref_c, sample_num, w_comp, w_sim)

    bases = principal_bases(tables, counts, K)
    w, s, c = Composite(k_principal=K, agg_clients_ratio=1.0).weight_matrix(tables, counts, counts.sum(1),
                                                                            w_sim, w_comp)

    # Both sides use exact float64 eigensolvers and the reference QP is solved to rounding (KKT), so
    # the gaps are rounding. Measured over the three seeds: bases 2e-14 (eigenvectors of d x d
    # scatters, error ~ eps * lambda_max / eigengap), S 5e-17, C 3.4e-15, W 2.2e-15; bounds ~10x.
    np.testing.assert_allclose(bases.numpy(), np.stack(ref_bases), rtol=0, atol=2e-13)
    np.testing.assert_allclose(s.numpy(), ref_s, rtol=0, atol=1e-15)
    np.testing.assert_allclose(c.numpy(), ref_c, rtol=0, atol=3e-14)
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=0, atol=3e-14)
    assert s[0, 1].item() == -1.0  # the near-copy pair hits the clamp
    assert bool((w == 0).any())  # the simplex constraint is active somewhere


@pytest.mark.parametrize("metric", ["greedy_signed", "svd"])
def test_complementarity_is_symmetric_with_unit_diagonal(metric):
    c = complementarity_matrix(_random_bases(9, 3, 7, seed=3), metric=metric)
    assert c.dtype == torch.float64 and c.shape == (9, 9)
    assert torch.equal(c, c.T)
    torch.testing.assert_close(torch.diagonal(c), torch.ones(9, dtype=torch.float64), rtol=0, atol=1e-12)
    assert bool((c.abs() <= 1.0 + 1e-12).all())


def test_svd_metric_ignores_basis_signs_but_greedy_signed_does_not():
    bases = _random_bases(1, 4, 8, seed=4)
    flipped = bases.clone()
    flipped[0, 2] = -flipped[0, 2]
    pair = torch.cat([bases, flipped])  # [2, k, d]: the same subspace, one basis vector negated
    svd = complementarity_matrix(pair, metric="svd")
    greedy = complementarity_matrix(pair, metric="greedy_signed")
    assert svd[0, 1].item() == pytest.approx(1.0, abs=1e-12)
    assert greedy[0, 1].item() < 0.99
    # Greedy angles (0, 0, 0, pi): C = cos(pi / 4); arccos near 1 amplifies rounding to ~1e-8.
    assert greedy[0, 1].item() == pytest.approx(np.cos(np.pi / 4), abs=1e-7)


def test_svd_complementarity_exceeds_greedy_on_average_for_random_subspaces():
    bases = _random_bases(30, 4, 16, seed=5)
    off_diagonal = ~torch.eye(30, dtype=torch.bool)
    gap = complementarity_matrix(bases, metric="svd") - complementarity_matrix(bases, metric="greedy_signed")
    assert gap[off_diagonal].mean().item() > 0.1


@pytest.mark.parametrize("metric", ["greedy_signed", "svd"])
@pytest.mark.parametrize("block_rows", [1, 3, 7])
def test_row_blocks_smaller_than_m_give_the_same_complementarity(metric, block_rows):
    bases = _random_bases(11, 4, 8, seed=6)
    whole = complementarity_matrix(bases, metric=metric)
    blocked = complementarity_matrix(bases, metric=metric, block_rows=block_rows)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sign_rule", ["scores", "components"])
def test_principal_bases_have_orthonormal_rows_in_descending_variance(sign_rule):
    tables, _, counts = _random_instance(7)
    bases = principal_bases(tables, counts, K, sign_rule=sign_rule)
    assert bases.shape == (M, K, D) and bases.dtype == torch.float64
    gram = bases @ bases.transpose(1, 2)  # [m, k, k]
    torch.testing.assert_close(gram, torch.eye(K, dtype=torch.float64).expand(M, K, K), rtol=0, atol=1e-12)
    weights = counts.to(torch.float64)
    mean = torch.einsum("mi,mid->md", weights, tables) / weights.sum(1, keepdim=True)  # [m, d]
    centred = tables - mean.unsqueeze(1)  # [m, I, d]
    variance = torch.einsum("mi,mik->mk", weights, torch.einsum("mid,mkd->mik", centred, bases) ** 2)  # [m, k]
    assert bool((variance[:, :-1] >= variance[:, 1:]).all())


@pytest.mark.parametrize("sign_rule", ["scores", "components"])
def test_count_weighted_bases_equal_bases_of_explicitly_repeated_rows(sign_rule):
    tables, _, counts = _random_instance(8)
    batched = principal_bases(tables, counts, K, sign_rule=sign_rule)
    for i in range(M):
        rows = torch.repeat_interleave(tables[i], counts[i], dim=0)  # [n_i, d]
        ones = torch.ones(1, rows.shape[0], dtype=torch.int64)
        explicit = principal_bases(rows.unsqueeze(0), ones, K, sign_rule=sign_rule)  # [1, k, d]
        torch.testing.assert_close(batched[i], explicit[0], rtol=0, atol=1e-10)


def test_principal_bases_sign_rules_fix_the_largest_entry_positive():
    tables, _, counts = _random_instance(9)
    by_components = principal_bases(tables, counts, K, sign_rule="components")
    largest = by_components.abs().argmax(dim=2, keepdim=True)  # [m, k, 1]
    assert bool((by_components.gather(2, largest) > 0).all())
    by_scores = principal_bases(tables, counts, K, sign_rule="scores")
    torch.testing.assert_close(by_scores.abs(), by_components.abs(), rtol=0, atol=1e-12)
    mean = torch.einsum("mi,mid->md", counts.double(), tables) / counts.double().sum(1, keepdim=True)  # [m, d]
    scores = torch.einsum("mid,mkd->mik", tables - mean.unsqueeze(1), by_scores)  # [m, I, k]
    scores = scores.masked_fill((counts == 0).unsqueeze(2), 0.0)
    largest_score = scores.abs().argmax(dim=1, keepdim=True)  # [m, 1, k]
    assert bool((scores.gather(1, largest_score) > 0).all())


def test_pca1_scores_follow_the_chosen_sign_rule_and_agree_up_to_sign():
    tables, _, _ = _random_instance(10)
    by_scores = pca1_scores(tables, sign_rule="scores")
    by_components = pca1_scores(tables, sign_rule="components")
    assert by_scores.shape == (M, NUM_ITEMS) and by_scores.dtype == torch.float64
    torch.testing.assert_close(by_scores.abs(), by_components.abs(), rtol=0, atol=1e-12)
    assert bool((by_scores.gather(1, by_scores.abs().argmax(1, keepdim=True)) > 0).all())
    centred = tables - tables.mean(dim=1, keepdim=True)  # [m, I, d]
    directions = torch.linalg.lstsq(centred, by_components.unsqueeze(2)).solution.squeeze(2)  # [m, d]
    torch.testing.assert_close(torch.linalg.vector_norm(directions, dim=1), torch.ones(M, dtype=torch.float64))
    assert bool((directions.gather(1, directions.abs().argmax(1, keepdim=True)) > 0).all())


def test_similarity_is_negated_inverse_distance_clamped_below_minus_point_nine():
    scores = torch.tensor([[0.0, 0.0], [0.05, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    s = similarity_matrix(scores)
    expected = torch.tensor(
        [
            [-1.0, -1.0, -1 / 6, -1 / 2],
            [-1.0, -1.0, -1 / (1 + np.hypot(2.95, 4.0)), -1 / (1 + np.hypot(0.05, 1.0))],
            [-1 / 6, -1 / (1 + np.hypot(2.95, 4.0)), -1.0, -1 / (1 + np.hypot(3.0, 3.0))],
            [-1 / 2, -1 / (1 + np.hypot(0.05, 1.0)), -1 / (1 + np.hypot(3.0, 3.0)), -1.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(s, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "call",
    [
        lambda t, c: pca1_scores(t, sign_rule="sklearn"),
        lambda t, c: principal_bases(t, c, K, sign_rule="u_based"),
        lambda t, c: principal_bases(t, c, 0),
        lambda t, c: principal_bases(t, c, D + 1),
        lambda t, c: principal_bases(t, c[:, :-1], K),
        lambda t, c: principal_bases(t, -c, K),
        lambda t, c: principal_bases(t, torch.zeros_like(c), K),
        lambda t, c: complementarity_matrix(principal_bases(t, c, K), metric="principal_angles"),
        lambda t, c: complementarity_matrix(principal_bases(t, c, K), block_rows=0),
        lambda t, c: complementarity_matrix(torch.randn(3, D + 1, D, dtype=torch.float64)),
        lambda t, c: similarity_matrix(t),
    ],
    ids=[
        "pca1-sign-rule",
        "bases-sign-rule",
        "k-zero",
        "k-above-d",
        "counts-shape",
        "negative-counts",
        "empty-client",
        "metric",
        "block-rows",
        "bases-k-above-d",
        "scores-3d",
    ],
)
def test_invalid_arguments_raise_value_error(call):
    tables, _, counts = _random_instance(11)
    with pytest.raises(ValueError):
        call(tables, counts)
