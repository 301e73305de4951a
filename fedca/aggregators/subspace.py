"""Batched PCA, model similarity and subspace complementarity for FedCA (docs/methods/composite.md).

Shapes: ``m`` aggregated clients, ``I`` items, ``d`` embedding dimensions, ``k`` principal
components. Everything is computed in float64 on the input's device, with no Python loop over
clients or client pairs:

- :func:`pca1_scores` — PC-1 score of every item of each client's whole item table (step 5);
- :func:`similarity_matrix` — the negated similarity ``S`` from those scores (step 5);
- :func:`principal_bases` — each client's top-``k`` principal directions of its count-weighted
  training rows (step 3);
- :func:`complementarity_matrix` — ``C`` from pairs of bases, by the reference code's greedy
  signed matching or by true principal angles (step 6, D4).

PCA sign conventions (:data:`SIGN_RULES`) follow scikit-learn's ``svd_flip``:

- ``"scores"`` (scikit-learn 1.0.2, the reference environment; u-based flip): the largest-``|.|``
  entry of each component's score vector (the centred rows projected on it) is positive;
- ``"components"`` (scikit-learn >= 1.5): the largest-``|.|`` entry of each component is positive.

Ties in "largest" go to the first index, as ``numpy.argmax`` does; a zero entry counts as positive.
"""

from __future__ import annotations

import torch
from torch import Tensor

SIGN_RULES = ("scores", "components")
COMPLEMENTARITY_METRICS = ("greedy_signed", "svd")


def _check_sign_rule(sign_rule: str) -> None:
    if sign_rule not in SIGN_RULES:
        raise ValueError(f"unknown sign_rule {sign_rule!r}; expected one of {SIGN_RULES}")


def _check_tables(tables: Tensor) -> None:
    if tables.dim() != 3 or min(tables.shape) < 1:
        raise ValueError(f"tables must be a non-empty [m, I, d] tensor, got shape {tuple(tables.shape)}")


def _sign_of_largest(values: Tensor, dim: int, valid: Tensor | None = None) -> Tensor:
    """``+1``/``-1`` sign of the largest-``|.|`` entry of ``values`` along ``dim`` (kept as size 1).

    ``valid`` (broadcastable bool) excludes entries from the search; ties go to the first index.
    """
    magnitude = values.abs()
    if valid is not None:
        magnitude = magnitude.masked_fill(~valid, -1.0)
    picked = values.gather(dim, magnitude.argmax(dim=dim, keepdim=True))
    return torch.where(picked < 0, -1.0, 1.0).to(values.dtype)


def pca1_scores(tables: Tensor, sign_rule: str = "scores") -> Tensor:
    """PC-1 score of every item of each client's whole item table (docs/methods/composite.md §Similarity).

    Args:
        tables: ``[m, I, d]`` item tables, one per client (all ``I`` rows, trained or not).
        sign_rule: one of :data:`SIGN_RULES`; fixes the sign of each client's eigenvector.

    Returns:
        ``z`` ``[m, I]`` float64, ``z_i = X_i e_i`` where ``X_i`` is table ``i`` centred by its item
        mean and ``e_i`` the unit top eigenvector of ``X_i^T X_i`` (exact ``eigh`` in float64).
    """
    _check_sign_rule(sign_rule)
    _check_tables(tables)
    v = tables.to(torch.float64)
    x = v - v.mean(dim=1, keepdim=True)  # [m, I, d]
    cov = torch.einsum("mid,mie->mde", x, x)  # [m, d, d]
    e = torch.linalg.eigh(cov).eigenvectors[..., -1]  # [m, d], eigenvalues ascend
    z = torch.einsum("mid,md->mi", x, e)  # [m, I]
    if sign_rule == "scores":
        return z * _sign_of_largest(z, dim=1)
    return z * _sign_of_largest(e, dim=1)


def similarity_matrix(scores: Tensor) -> Tensor:
    """Negated model similarity from PC-1 scores (docs/methods/composite.md §Similarity).

    Args:
        scores: ``[m, I]`` PC-1 scores, as from :func:`pca1_scores`.

    Returns:
        ``S`` ``[m, m]`` float64: ``S_ij = -1 / (1 + ||z_i - z_j||_2)``, then entries ``< -0.9`` (distance
        below 1/9) set to ``-1``; so ``S`` lies in ``[-1, 0)``, is symmetric and has ``-1`` on the diagonal.
    """
    if scores.dim() != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be a non-empty [m, I] tensor, got shape {tuple(scores.shape)}")
    z = scores.to(torch.float64)
    # The direct (not Gram-matrix) formula: no cancellation for nearly equal score vectors.
    distance = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")  # [m, m]
    similarity = -1.0 / (1.0 + distance)
    return torch.where(similarity < -0.9, -1.0, similarity)


def principal_bases(tables: Tensor, counts: Tensor, k: int, sign_rule: str = "scores") -> Tensor:
    """Top-``k`` principal directions of each client's training rows (docs/methods/composite.md §Bases).

    Client ``i``'s rows are ``Y_i = V_i[R_i]``, the multiset of items in its training instances this
    round (positives and negatives, with repeats), given here as counts: the PCA uses the
    count-weighted mean ``mu_i = sum_j K_ij V_ij / n_i`` (``n_i = sum_j K_ij``) and scatter
    ``Cov_i = sum_j K_ij (V_ij - mu_i)(V_ij - mu_i)^T``, which equal those of the explicit rows.

    Args:
        tables: ``[m, I, d]`` item tables.
        counts: ``[m, I]`` non-negative counts ``K_ij`` of item ``j`` in client ``i``'s instances;
            every client needs a positive total.
        k: number of components, ``1 <= k <= d``.
        sign_rule: one of :data:`SIGN_RULES`; for ``"scores"`` the score vector runs over the items
            with ``K_ij > 0`` (repeated rows have equal scores, so repeats do not change the choice).

    Returns:
        ``B`` ``[m, k, d]`` float64, rows orthonormal, in descending eigenvalue order. Where a client
        has fewer than ``k + 1`` distinct rows the trailing directions span the null space
        (scikit-learn refuses ``k`` above the number of rows).
    """
    _check_sign_rule(sign_rule)
    _check_tables(tables)
    m, num_items, d = tables.shape
    if counts.shape != (m, num_items):
        raise ValueError(f"counts must have shape {(m, num_items)} to match tables, got {tuple(counts.shape)}")
    if not 1 <= k <= d:
        raise ValueError(f"k must satisfy 1 <= k <= d = {d}, got {k}")
    weights = counts.to(device=tables.device, dtype=torch.float64)
    if bool((weights < 0).any()):
        raise ValueError("counts must be non-negative")
    total = weights.sum(dim=1)  # [m]
    if bool((total <= 0).any()):
        raise ValueError("every client needs at least one training instance (a positive row of counts)")
    v = tables.to(torch.float64)
    mean = torch.einsum("mi,mid->md", weights, v) / total.unsqueeze(1)  # [m, d]
    x = v - mean.unsqueeze(1)  # [m, I, d]
    cov = torch.einsum("mi,mid,mie->mde", weights, x, x)  # [m, d, d]
    eigenvectors = torch.linalg.eigh(cov).eigenvectors  # [m, d, d], columns by ascending eigenvalue
    bases = eigenvectors[..., -k:].flip(-1).transpose(1, 2)  # [m, k, d]
    if sign_rule == "scores":
        item_scores = torch.einsum("mid,mkd->mik", x, bases)  # [m, I, k]
        signs = _sign_of_largest(item_scores, dim=1, valid=(weights > 0).unsqueeze(2))  # [m, 1, k]
        return bases * signs.transpose(1, 2)  # [m, k, d]
    return bases * _sign_of_largest(bases, dim=2)  # [m, k, d]


def _greedy_signed_cosines(cosines: Tensor) -> Tensor:
    """``[..., k, k]`` -> ``[..., k]``: k times take the largest remaining entry, then drop its row and column.

    Transcribes the reference ``compute_principal_angles`` (``argmax`` with ``-inf`` masking; ties go
    to the first entry in row-major order), for all pairs at once.
    """
    k = cosines.shape[-1]
    remaining = cosines.clone()
    position = torch.arange(k, device=cosines.device)
    picked = []
    for _ in range(k):
        best, flat_index = remaining.flatten(-2).max(dim=-1)  # [...], [...]
        picked.append(best)
        row_hit = position == (flat_index // k).unsqueeze(-1)  # [..., k]
        col_hit = position == (flat_index % k).unsqueeze(-1)  # [..., k]
        removed = row_hit.unsqueeze(-1) | col_hit.unsqueeze(-2)  # [..., k, k]
        remaining = remaining.masked_fill(removed, float("-inf"))
    return torch.stack(picked, dim=-1)  # [..., k]


def complementarity_matrix(bases: Tensor, metric: str = "greedy_signed", block_rows: int = 1024) -> Tensor:
    """Subspace complementarity ``C`` of every pair of clients (docs/methods/composite.md §Complementarity, D4).

    For a pair ``(i, j)``, ``G = B_i B_j^T`` ``[k, k]`` holds the signed cosines between basis
    vectors (rows are normalised to unit length first, as the reference does; a no-op for
    orthonormal bases). ``metric`` picks ``k`` cosines ``g_r`` from ``G``:

    - ``"greedy_signed"`` (reference code): k times the largest remaining entry, removing its row
      and column each time; sensitive to basis signs;
    - ``"svd"``: the singular values of ``G``, i.e. the cosines of the true principal angles.

    Then ``C_ij = cos(mean_r arccos(clip(g_r, -1, 1)))``.

    Args:
        bases: ``[m, k, d]`` bases, e.g. from :func:`principal_bases`.
        metric: one of :data:`COMPLEMENTARITY_METRICS`.
        block_rows: rows of ``C`` computed at once; bounds the ``[block_rows, m, k, k]`` cosine block.

    Returns:
        ``C`` ``[m, m]`` float64, exactly symmetric: the upper triangle ``i <= j`` is computed with
        ``G = B_i B_j^T`` and mirrored, as in the reference. The diagonal is 1 up to rounding.
    """
    if metric not in COMPLEMENTARITY_METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {COMPLEMENTARITY_METRICS}")
    if bases.dim() != 3 or bases.shape[0] < 1:
        raise ValueError(f"bases must be a non-empty [m, k, d] tensor, got shape {tuple(bases.shape)}")
    m, k, d = bases.shape
    if not 1 <= k <= d:
        raise ValueError(f"bases need 1 <= k <= d, got k = {k}, d = {d}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    b = bases.to(torch.float64)
    b = b / torch.linalg.vector_norm(b, dim=2, keepdim=True)  # [m, k, d]
    upper = torch.zeros(m, m, dtype=torch.float64, device=bases.device)
    for start in range(0, m, block_rows):
        stop = min(start + block_rows, m)
        cosines = torch.einsum("akd,bld->abkl", b[start:stop], b[start:])  # [stop - start, m - start, k, k]
        if metric == "greedy_signed":
            picked = _greedy_signed_cosines(cosines)  # [stop - start, m - start, k]
        else:
            picked = torch.linalg.svdvals(cosines)  # [stop - start, m - start, k]
        angles = torch.arccos(picked.clamp(-1.0, 1.0))
        upper[start:stop, start:] = torch.cos(angles.mean(dim=-1))
    upper = torch.triu(upper)
    return upper + torch.triu(upper, diagonal=1).T
