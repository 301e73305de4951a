"""Vectorised HR@K and NDCG@K for leave-one-out evaluation, with an explicit tie policy.

Shapes, for ``U`` users and ``C`` competing candidates per user:

- ``target_scores``: ``[U]``, the score of each user's held-out item;
- ``other_scores``: ``[U, C]``, the scores of the competing candidates (sampled negatives,
  or every other item for full ranking);
- ``other_mask``: ``[U, C]`` bool, ``True`` where the candidate counts (``None``: all count);
- every returned metric: ``[U]`` float64, one value per user; callers average over users.

Each user's held-out item gets a rank from two counts over the counted candidates,
``g = #{score > target}`` and ``e = #{score == target}``; how the ``e`` ties are broken is
the tie policy (see :data:`TIE_POLICIES` and :func:`ranking_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

TIE_POLICIES = ("pessimistic", "optimistic", "average")

_CHUNK_ELEMENTS = 1 << 24
"""Default bound on ``users x candidates`` compared at once (a few tens of MiB of bools)."""


def ranking_metrics(
    target_scores: Tensor,
    other_scores: Tensor,
    ks: Sequence[int],
    ties: str = "pessimistic",
    other_mask: Tensor | None = None,
    *,
    chunk_users: int | None = None,
) -> dict[str, Tensor]:
    r"""Per-user HR@K and NDCG@K of one held-out item against competing candidates.

    With :math:`s_u` the target score of user :math:`u` and :math:`M_u` the set of counted
    candidates,

    .. math::
        g_u = \sum_{j \in M_u} 1[x_{uj} > s_u], \qquad
        e_u = \sum_{j \in M_u} 1[x_{uj} = s_u]

    and the rank :math:`r_u` of the held-out item is

    - ``pessimistic``: :math:`r_u = g_u + e_u + 1` (after every tied candidate; what the
      official FedCA ``MetronAtK`` gives, ranking the negatives followed by the positive
      with pandas ``rank(method='first')``);
    - ``optimistic``: :math:`r_u = g_u + 1`;
    - ``average``: :math:`r_u` uniform on :math:`g_u + 1, \dots, g_u + e_u + 1`, and the
      metrics below are its expectations.

    With a single relevant item the ideal DCG is 1, so

    .. math::
        \mathrm{HR@K}_u = 1[r_u \le K], \qquad
        \mathrm{NDCG@K}_u = \frac{1[r_u \le K]}{\log_2(r_u + 1)}

    and, for ``average``, with :math:`S(m) = \sum_{r=1}^{m} 1/\log_2(r + 1)` and
    :math:`t_u = \max(g_u, \min(K, g_u + e_u + 1))`,

    .. math::
        \mathrm{HR@K}_u = \frac{t_u - g_u}{e_u + 1}, \qquad
        \mathrm{NDCG@K}_u = \frac{S(t_u) - S(g_u)}{e_u + 1}

    Args:
        target_scores: ``[U]`` score of each user's held-out item.
        other_scores: ``[U, C]`` scores of the competing candidates.
        ks: cut-offs, each an int >= 1.
        ties: one of :data:`TIE_POLICIES`.
        other_mask: ``[U, C]`` bool, ``True`` where the candidate counts; ``None``: all count.
        chunk_users: users compared per pass (bounds memory at ``chunk_users x C``);
            ``None`` picks about ``2**24 / C``.

    Returns:
        ``{"hr@K": [U] float64, "ndcg@K": [U] float64}`` for every ``K`` in ``ks``.

    Raises:
        ValueError: a ``K < 1``, no ``ks``, an unknown ``ties``, mismatched shapes, a
            non-positive ``chunk_users``, or a NaN among the target or counted scores.
    """
    _check_ks(ks)
    _check_ties(ties)
    _check_shapes(target_scores, other_scores, other_mask)
    greater, equal = _count_competitors(target_scores, other_scores, other_mask, chunk_users)
    gains = _gains(other_scores.shape[1], target_scores.device)
    metrics: dict[str, Tensor] = {}
    for k in ks:
        if ties == "average":
            hr, ndcg = _expected_metrics(greater, equal, k, gains)
        else:
            rank = greater + equal + 1 if ties == "pessimistic" else greater + 1
            hr, ndcg = _rank_metrics(rank, k, gains)
        metrics[f"hr@{k}"] = hr
        metrics[f"ndcg@{k}"] = ndcg
    return metrics


def _check_ks(ks: Sequence[int]) -> None:
    """Raise ValueError unless ``ks`` is a non-empty sequence of ints >= 1."""
    if len(ks) == 0:
        raise ValueError("ks must name at least one cut-off K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every K in ks must be an int >= 1, got {k!r}")


def _check_ties(ties: str) -> None:
    """Raise ValueError unless ``ties`` is one of :data:`TIE_POLICIES`."""
    if ties not in TIE_POLICIES:
        raise ValueError(f"ties must be one of {', '.join(TIE_POLICIES)}; got {ties!r}")


def _check_shapes(target: Tensor, others: Tensor, mask: Tensor | None) -> None:
    """Raise ValueError unless target is ``[U]``, others ``[U, C]`` and mask ``[U, C]`` bool."""
    if target.dim() != 1 or others.dim() != 2 or others.shape[0] != target.shape[0]:
        raise ValueError(
            f"expected target_scores [U] and other_scores [U, C], got "
            f"{list(target.shape)} and {list(others.shape)}"
        )
    if mask is not None and (mask.shape != others.shape or mask.dtype != torch.bool):
        raise ValueError(
            f"other_mask must be a bool tensor shaped like other_scores {list(others.shape)}, "
            f"got {mask.dtype} {list(mask.shape)}"
        )


def _count_competitors(
    target: Tensor, others: Tensor, mask: Tensor | None, chunk_users: int | None
) -> tuple[Tensor, Tensor]:
    """Counts ``(g, e)``, each ``[U]`` int64, of counted candidates above and tied with the target.

    Users are compared ``chunk_users`` at a time, so at most ``chunk_users x C`` comparisons
    are held in memory.
    """
    if chunk_users is None:
        chunk_users = max(1, _CHUNK_ELEMENTS // max(1, others.shape[1]))
    if chunk_users < 1:
        raise ValueError(f"chunk_users must be >= 1, got {chunk_users}")
    greater, equal = [], []
    for start in range(0, target.shape[0], chunk_users):
        rows = slice(start, start + chunk_users)
        chunk_mask = None if mask is None else mask[rows]
        g, e = _count_chunk(target[rows], others[rows], chunk_mask)
        greater.append(g)
        equal.append(e)
    if not greater:
        empty = torch.zeros(0, dtype=torch.int64, device=target.device)
        return empty, empty
    return torch.cat(greater), torch.cat(equal)


def _count_chunk(target: Tensor, others: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(g, e)`` for one chunk: target ``[u]``, others and mask ``[u, C]`` -> two ``[u]`` int64."""
    column = target[:, None]
    counted = torch.ones_like(others, dtype=torch.bool) if mask is None else mask
    _reject_nan(target, others, counted)
    greater = ((others > column) & counted).sum(dim=1)
    equal = ((others == column) & counted).sum(dim=1)
    return greater, equal


def _reject_nan(target: Tensor, others: Tensor, counted: Tensor) -> None:
    """Raise ValueError on a NaN target ``[u]`` or a NaN among the counted ``others`` ``[u, C]``."""
    if not torch.is_floating_point(target) and not torch.is_floating_point(others):
        return
    if bool(torch.isnan(target).any()) or bool((torch.isnan(others) & counted).any()):
        raise ValueError("ranking_metrics got NaN scores; a NaN has no rank")


def _gains(num_candidates: int, device: torch.device) -> Tensor:
    """``[C + 1]`` float64 discounts ``1 / log2(r + 1)`` for ranks ``r = 1 .. C + 1``."""
    ranks = torch.arange(1, num_candidates + 2, dtype=torch.float64, device=device)
    return 1.0 / torch.log2(ranks + 1.0)


def _rank_metrics(rank: Tensor, k: int, gains: Tensor) -> tuple[Tensor, Tensor]:
    """HR@K and NDCG@K, each ``[U]`` float64, for definite ranks ``rank`` ``[U]`` (1-based)."""
    hit = rank <= k
    ndcg = torch.where(hit, gains[rank - 1], torch.zeros_like(gains[rank - 1]))
    return hit.to(torch.float64), ndcg


def _expected_metrics(
    greater: Tensor, equal: Tensor, k: int, gains: Tensor
) -> tuple[Tensor, Tensor]:
    """Expected HR@K and NDCG@K, each ``[U]`` float64, for a rank uniform on ``g+1 .. g+e+1``.

    ``greater`` and ``equal`` are ``[U]`` int64; ``gains`` is ``[C + 1]`` from :func:`_gains`.
    The ranks within the cut-off are ``g+1 .. t`` with ``t = max(g, min(K, g+e+1))``, so the
    sums are differences of the cumulative gain ``S`` (``S[0] = 0``).
    """
    cumulative = torch.cat([gains.new_zeros(1), torch.cumsum(gains, dim=0)])
    top = torch.maximum(torch.clamp(greater + equal + 1, max=k), greater)
    width = (equal + 1).to(torch.float64)
    hr = (top - greater).to(torch.float64) / width
    ndcg = (cumulative[top] - cumulative[greater]) / width
    return hr, ndcg
