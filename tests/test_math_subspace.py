"""FedCA's PCA, similarity and complementarity (aggregators/subspace.py) on hand-sized inputs.

Expected values are worked out by hand (axis-aligned tables whose scatter matrix is diagonal, so
the principal directions are unit vectors) or come from a NumPy float64 transcription of the
definition that does not call the code under test. Three groups:

* boundaries of the argument checks (``1 <= k <= d``, one client, a total count of exactly 1,
  a negative count with a positive total), matched on the error message so that a check that lets
  the input through and fails later for another reason does not pass;
* sign conventions: a zero score counts as positive, rows with zero count never decide a sign;
* precision: float32 inputs are computed in float64 (large offsets make float32 arithmetic visibly
  wrong), the similarity's distance is the direct formula, not the Gram-matrix one, and cosines
  that round past -1 are clipped before ``arccos``.
"""

import math

import numpy as np
import pytest
import torch

from fedca.aggregators.subspace import (
    _greedy_signed_cosines,
    _sign_of_largest,
    complementarity_matrix,
    pca1_scores,
    principal_bases,
    similarity_matrix,
)

F64 = torch.float64

# One client, 4 items, d = 3: the rows +-(1, 0, 0), +-(0, 0.5, 0) (and nothing on the third axis
# except item 4, see below) with unit counts have mean 0 and scatter diag(2, 0.5, 0); item 4 at
# (0, 0, 0.25) has count 0 and is left out. Principal directions e1, e2, e3; the ``scores`` rule
# keeps them positive: component 1's scores (1, -1, 0, 0) tie and the first one is positive,
# component 2's (0, 0, 0.5, -0.5) likewise, and component 3's scores on the counted rows are all 0
# (a zero entry counts as positive).
AXIS_TABLES = torch.tensor([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, -0.5, 0.0],
                             [0.0, 0.0, 0.25]]], dtype=F64)  # [1, 5, 3]
AXIS_COUNTS = torch.tensor([[1, 1, 1, 1, 0]])  # [1, 5]


# --- argument checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_principal_bases_accept_every_k_from_one_to_d(k):
    # Diagonal scatter diag(2, 0.5, 0): the top-k directions are the first k unit vectors.
    bases = principal_bases(AXIS_TABLES, AXIS_COUNTS, k)
    assert bases.shape == (1, k, 3)
    # eigh of a diagonal matrix returns exact unit vectors; 1e-15 only absorbs a possible rounding.
    torch.testing.assert_close(bases, torch.eye(3, dtype=F64)[:k].unsqueeze(0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("k", [0, 4])
def test_principal_bases_reject_k_outside_one_to_d(k):
    with pytest.raises(ValueError, match="1 <= k <= d"):
        principal_bases(AXIS_TABLES, AXIS_COUNTS, k)


def test_principal_bases_reject_a_negative_count_even_when_the_total_is_positive():
    counts = torch.tensor([[2, -1, 1, 1, 0]])  # total 3 > 0
    with pytest.raises(ValueError, match="non-negative"):
        principal_bases(AXIS_TABLES, counts, 1)


@pytest.mark.parametrize("call", [
    lambda: pca1_scores(torch.ones(4, 3, dtype=F64)),
    lambda: principal_bases(torch.ones(4, 3, dtype=F64), torch.ones(4, 3), 1),
    lambda: pca1_scores(torch.ones(1, 0, 2, dtype=F64)),
    lambda: pca1_scores(torch.ones(1, 3, 0, dtype=F64)),
], ids=["pca1-2d", "bases-2d", "no-items", "no-dimensions"])
def test_tables_must_be_non_empty_and_three_dimensional(call):
    with pytest.raises(ValueError, match="tables must be a non-empty"):
        call()


def test_similarity_of_a_single_client_is_minus_one_and_no_clients_are_rejected():
    assert torch.equal(similarity_matrix(torch.tensor([[0.5, -2.0]], dtype=F64)), torch.tensor([[-1.0]], dtype=F64))
    with pytest.raises(ValueError, match="scores must be a non-empty"):
        similarity_matrix(torch.zeros(0, 3, dtype=F64))


@pytest.mark.parametrize("shape", [(0, 1, 2), (2, 3)], ids=["no-clients", "2d"])
def test_complementarity_rejects_empty_or_non_3d_bases(shape):
    with pytest.raises(ValueError, match="bases must be a non-empty"):
        complementarity_matrix(torch.ones(shape, dtype=F64))


def test_complementarity_rejects_k_zero_and_k_above_d():
    with pytest.raises(ValueError, match="1 <= k <= d"):
        complementarity_matrix(torch.ones(2, 0, 3, dtype=F64))
    with pytest.raises(ValueError, match="1 <= k <= d"):
        complementarity_matrix(torch.ones(2, 3, 2, dtype=F64))


@pytest.mark.parametrize("metric", ["greedy_signed", "svd"])
def test_complementarity_of_one_client_and_of_k_equal_one_and_k_equal_d(metric):
    one = complementarity_matrix(torch.tensor([[[0.6, 0.8]]], dtype=F64), metric=metric)  # m = 1, k = 1
    torch.testing.assert_close(one, torch.ones(1, 1, dtype=F64), rtol=0, atol=1e-15)
    # k = d = 2: both bases span the whole plane; every pair of full bases has cosines (1, 1) under
    # svd; under greedy_signed the pair (identity, swapped axes) also picks 1 twice.
    full = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], dtype=F64)  # [2, 2, 2]
    torch.testing.assert_close(complementarity_matrix(full, metric=metric), torch.ones(2, 2, dtype=F64),
                               rtol=0, atol=1e-15)


# --- sign conventions ---------------------------------------------------------------------------


def test_a_single_counted_row_has_zero_scores_which_count_as_positive_and_uncounted_rows_are_ignored():
    # d = 1, one client whose only counted row (count 1, total exactly 1) is item 1 at 2.0: the
    # centred rows are (-3, 0, 3) and the basis is +-1. The counted row's score is 0, so the sign is
    # +1; the uncounted rows (-3 comes first, and would flip it) must not take part.
    tables = torch.tensor([[[-1.0], [2.0], [5.0]]], dtype=F64)
    counts = torch.tensor([[0, 1, 0]])
    assert torch.equal(principal_bases(tables, counts, 1), torch.tensor([[[1.0]]], dtype=F64))


def test_an_uncounted_row_with_a_larger_score_does_not_decide_the_sign():
    # d = 1, counts (2, 1, 0): mean (2 * 0 + 0.3) / 3 = 0.1, centred counted rows (-0.1, 0.2): the
    # largest counted score 0.2 is positive, so the basis is +1, although the uncounted row's score
    # -3.1 is the largest in magnitude and every counted one is below 1 in magnitude.
    tables = torch.tensor([[[0.0], [0.3], [-3.0]]], dtype=F64)
    counts = torch.tensor([[2, 1, 0]])
    assert torch.equal(principal_bases(tables, counts, 1), torch.tensor([[[1.0]]], dtype=F64))


def test_sign_of_largest_zero_is_positive_ties_go_first_and_invalid_entries_are_skipped():
    values = torch.tensor([[0.0, 0.0], [-2.0, 2.0], [0.5, -3.0]], dtype=F64)
    assert torch.equal(_sign_of_largest(values, dim=1), torch.tensor([[1.0], [-1.0], [-1.0]], dtype=F64))
    valid = torch.tensor([[True, True], [True, True], [True, False]])
    assert torch.equal(_sign_of_largest(values, dim=1, valid=valid), torch.tensor([[1.0], [-1.0], [1.0]], dtype=F64))
    signs32 = _sign_of_largest(values.float(), dim=0)
    assert signs32.dtype == torch.float32 and torch.equal(signs32, torch.tensor([[-1.0, -1.0]]))
    assert _sign_of_largest(values, dim=0).dtype == F64


def test_greedy_signed_cosines_on_one_matrix_and_on_a_batch_of_them():
    # [[0.1, 0.9], [0.8, 0.2]]: take 0.9 (row 0, column 1), then the only entry left, 0.8.
    # [[0.7, 0.6], [0.5, 0.4]]: take 0.7 (row 0, column 0), then 0.4.
    first = torch.tensor([[0.1, 0.9], [0.8, 0.2]], dtype=F64)
    second = torch.tensor([[0.7, 0.6], [0.5, 0.4]], dtype=F64)
    assert torch.equal(_greedy_signed_cosines(first), torch.tensor([0.9, 0.8], dtype=F64))
    assert torch.equal(_greedy_signed_cosines(torch.stack([first, second])),
                       torch.tensor([[0.9, 0.8], [0.7, 0.4]], dtype=F64))
    # k = 3, row-major ties: 0.9 at (0, 2) and (1, 0) -> (0, 2) first, then (1, 0), then (2, 1) = -0.5.
    third = torch.tensor([[0.1, 0.2, 0.9], [0.9, 0.3, 0.8], [0.6, -0.5, 0.7]], dtype=F64)
    assert torch.equal(_greedy_signed_cosines(third), torch.tensor([0.9, 0.9, -0.5], dtype=F64))


# --- complementarity: normalisation and clipping -----------------------------------------------


@pytest.mark.parametrize("metric", ["greedy_signed", "svd"])
def test_complementarity_normalises_rows_that_are_not_unit_length(metric):
    # (2, 0) and (3, 3): cosine 1 / sqrt(2); k = 1, so C_01 = cos(arccos(1 / sqrt(2))).
    bases = torch.tensor([[[2.0, 0.0]], [[3.0, 3.0]]], dtype=F64)
    c = 1 / math.sqrt(2)
    # cos(arccos(x)) loses a few ulps near 1 / sqrt(2); 1e-15 is a handful of them.
    torch.testing.assert_close(complementarity_matrix(bases, metric=metric),
                               torch.tensor([[1.0, c], [c, 1.0]], dtype=F64), rtol=0, atol=1e-15)


def test_cosines_that_round_below_minus_one_are_clipped_before_arccos():
    # (1, 5) / ||(1, 5)|| has a float64 squared norm of 1 + 2**-52, so its cosine with its negation
    # rounds to -1 - 2**-52; unclipped, arccos gives NaN.
    v = np.array([1.0, 5.0])
    n = v / np.linalg.norm(v)
    assert n @ -n < -1.0  # the input does exercise the clip
    bases = torch.tensor([[[1.0, 5.0]], [[-1.0, -5.0]]], dtype=F64)
    expected = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=F64)  # cos(0) = 1, cos(pi) = -1
    torch.testing.assert_close(complementarity_matrix(bases), expected, rtol=0, atol=1e-15)


# --- float64 arithmetic for float32 inputs --------------------------------------------------------


def _offset_table32() -> torch.Tensor:
    """[1, 6, 2] float32 rows near (1000, -1000): float32 centring loses about 1e-5 there."""
    deltas = [[1.0, 0.1], [-1.0, 0.2], [0.5, -0.3], [-0.5, 0.05], [0.25, -0.15], [-0.2, 0.3]]
    return (torch.tensor([[1000.0, -1000.0]]) + torch.tensor(deltas)).unsqueeze(0).to(torch.float32)


def _np_pca(rows: np.ndarray, weights: np.ndarray, k: int) -> tuple:
    """Weighted PCA in float64: (centred rows [n, d], components [k, d] by descending eigenvalue)."""
    mean = weights @ rows / weights.sum()
    centred = rows - mean
    _, vectors = np.linalg.eigh((centred * weights[:, None]).T @ centred)
    return centred, vectors[:, ::-1][:, :k].T


def test_pca1_scores_of_a_float32_table_are_computed_in_float64():
    table = _offset_table32()
    rows = table[0].double().numpy()  # the float32 values, exactly
    centred, components = _np_pca(rows, np.ones(len(rows)), 1)
    z = centred @ components[0]
    z = z * np.sign(z[np.argmax(np.abs(z))])
    out = pca1_scores(table)
    assert out.dtype == F64
    # float64 eigh of a 2 x 2 matrix with eigenvalues ~2.3 and ~0.25: agreement to ~1e-15; float32
    # arithmetic is off by ~1e-5 here.
    torch.testing.assert_close(out, torch.from_numpy(z).unsqueeze(0), rtol=0, atol=1e-12)


def test_principal_bases_of_a_float32_table_are_computed_in_float64():
    table = _offset_table32()
    counts = torch.tensor([[1, 2, 1, 3, 1, 0]])
    rows = table[0].double().numpy()
    weights = counts[0].double().numpy()
    centred, components = _np_pca(rows, weights, 2)
    scores = (centred @ components.T)[weights > 0]  # [counted rows, k]
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), [0, 1]])
    out = principal_bases(table, counts, 2)
    assert out.dtype == F64
    torch.testing.assert_close(out, torch.from_numpy(components * signs[:, None]).unsqueeze(0), rtol=0, atol=1e-12)


def test_similarity_of_float32_scores_is_computed_in_float64():
    # Score vectors near 1e4: float32 holds them to ~1e-3, and their distances come out in float64.
    scores = torch.tensor([[10000.0, 20000.0, 0.0], [10000.25, 20000.5, 0.125], [10001.0, 19999.0, 0.5]],
                          dtype=torch.float32)
    z = scores.double().numpy()
    distance = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2))
    expected = np.where(-1 / (1 + distance) < -0.9, -1.0, -1 / (1 + distance))
    out = similarity_matrix(scores)
    assert out.dtype == F64
    torch.testing.assert_close(out, torch.from_numpy(expected), rtol=0, atol=1e-15)


def test_complementarity_of_float32_bases_is_computed_in_float64():
    g = torch.Generator().manual_seed(0)
    bases = torch.randn(4, 1, 3, generator=g).to(torch.float32)  # k = 1: C_ij is the cosine itself
    b = bases[:, 0].double().numpy()
    n = b / np.linalg.norm(b, axis=1, keepdims=True)
    expected = np.cos(np.arccos(np.clip(n @ n.T, -1.0, 1.0)))
    out = complementarity_matrix(bases)
    # float64 normalisation and dot products: a few ulps (cos(arccos(x)) near |x| = 1 included);
    # float32 ones are off by ~1e-7.
    torch.testing.assert_close(out, torch.from_numpy(expected), rtol=0, atol=1e-13)


def test_similarity_distance_is_exact_for_many_close_large_score_vectors():
    # 26 clients (cdist switches to the Gram-matrix formula above 25 rows): score vectors 1e6 apart
    # from 0 and 0.1 apart from their neighbours. ||x||^2 + ||y||^2 - 2 x.y cancels ~1e12 down to
    # ~1e-2 and errs by ~1e-3; the direct differences are exact (Sterbenz).
    steps = np.arange(26, dtype=np.float64)[:, None] * np.array([0.06, 0.08, 0.0])
    z = 1e6 + steps  # [26, 3]
    distance = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2))
    similarity = -1 / (1 + distance)
    expected = np.where(similarity < -0.9, -1.0, similarity)
    out = similarity_matrix(torch.from_numpy(z))
    torch.testing.assert_close(out, torch.from_numpy(expected), rtol=0, atol=1e-14)
