"""Tests for fedca.metrics.ranking: leave-one-out HR@K and NDCG@K with tie policies."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest
import torch
from torch import Tensor
from torchmetrics.functional.retrieval import retrieval_hit_rate, retrieval_normalized_dcg

from fedca.metrics.ranking import TIE_POLICIES, ranking_metrics

KS = (1, 3, 5, 10, 50)


def _per_user_sort_metrics(target: Tensor, others: Tensor, k: int) -> tuple[list, list]:
    """Reference on tie-free scores: sort each user's candidates and find the target's rank."""
    hrs, ndcgs = [], []
    for t, row in zip(target.tolist(), others.tolist()):
        ordered = sorted([(t, "target")] + [(s, "other") for s in row], reverse=True)
        rank = [label for _, label in ordered].index("target") + 1
        hrs.append(1.0 if rank <= k else 0.0)
        ndcgs.append(1.0 / math.log2(rank + 1) if rank <= k else 0.0)
    return hrs, ndcgs


def _torchmetrics_metrics(target: Tensor, others: Tensor, k: int) -> tuple[list, list]:
    """Reference from torchmetrics retrieval metrics, one query per user (target relevant)."""
    hrs, ndcgs = [], []
    relevant = torch.zeros(others.shape[1] + 1, dtype=torch.bool)
    relevant[0] = True
    for t, row in zip(target, others):
        preds = torch.cat([t[None], row])
        hrs.append(float(retrieval_hit_rate(preds, relevant, top_k=k)))
        ndcgs.append(float(retrieval_normalized_dcg(preds, relevant, top_k=k)))
    return hrs, ndcgs


def _metron_at_k(target: Tensor, others: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Transcription of the official FedCA ``MetronAtK``, kept per user instead of averaged.

    Negatives of every user come first, then the positives; pandas ``rank(method='first')``
    then places the positive after every negative it ties with.
    """
    num_users, num_negatives = others.shape
    neg_users = [u for u in range(num_users) for _ in range(num_negatives)]
    neg_items = [j + 1 for _ in range(num_users) for j in range(num_negatives)]
    neg_scores = others.reshape(-1).tolist()
    test_users, test_items, test_scores = list(range(num_users)), [0] * num_users, target.tolist()
    test = pd.DataFrame({"user": test_users, "test_item": test_items, "test_score": test_scores})
    full = pd.DataFrame(
        {
            "user": neg_users + test_users,
            "item": neg_items + test_items,
            "score": neg_scores + test_scores,
        }
    )
    full = pd.merge(full, test, on=["user"], how="left")
    full["rank"] = full.groupby("user")["score"].rank(method="first", ascending=False)
    top_k = full[full["rank"] <= k]
    test_in_top_k = top_k[top_k["test_item"] == top_k["item"]].set_index("user")
    ndcg = test_in_top_k["rank"].apply(lambda x: math.log(2) / math.log(1 + x))
    users = range(num_users)
    hit = pd.Series(1.0, index=test_in_top_k.index).reindex(users, fill_value=0.0)
    ndcg = ndcg.reindex(users, fill_value=0.0)
    return torch.tensor(hit.to_numpy()), torch.tensor(ndcg.to_numpy(dtype=float))


def _tie_break_mean(target: Tensor, others: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mean metrics over every tie-breaking order of the candidates (all permutations)."""
    num_users, num_others = others.shape
    orders = list(itertools.permutations(range(num_others + 1)))
    hr_sum = torch.zeros(num_users, dtype=torch.float64)
    ndcg_sum = torch.zeros(num_users, dtype=torch.float64)
    for u in range(num_users):
        scores = [float(target[u])] + others[u].tolist()
        for order in orders:
            ranked = sorted(range(num_others + 1), key=lambda i: (-scores[i], order[i]))
            rank = ranked.index(0) + 1
            if rank <= k:
                hr_sum[u] += 1.0
                ndcg_sum[u] += 1.0 / math.log2(rank + 1)
    return hr_sum / len(orders), ndcg_sum / len(orders)


def _tie_free_scores(num_users: int, num_others: int, seed: int) -> tuple[Tensor, Tensor]:
    """Distinct random float64 scores: target ``[U]`` and others ``[U, C]``."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(num_users, num_others + 1, generator=generator, dtype=torch.float64)
    return scores[:, 0].clone(), scores[:, 1:].clone()


def _tied_scores(
    num_users: int, num_others: int, seed: int, levels: int = 4
) -> tuple[Tensor, Tensor]:
    """Integer-valued float64 scores in ``0 .. levels-1``, full of ties."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (num_users, num_others + 1), generator=generator)
    scores = scores.to(torch.float64)
    return scores[:, 0].clone(), scores[:, 1:].clone()


def _assert_metrics_close(
    result: dict[str, Tensor], k: int, hr: list[float], ndcg: list[float], atol: float
) -> None:
    """Assert ``result``'s HR@K and NDCG@K ``[U]`` equal the per-user reference lists."""
    expected_hr = torch.tensor(hr, dtype=torch.float64)
    expected_ndcg = torch.tensor(ndcg, dtype=torch.float64)
    torch.testing.assert_close(result[f"hr@{k}"], expected_hr, atol=atol, rtol=0)
    torch.testing.assert_close(result[f"ndcg@{k}"], expected_ndcg, atol=atol, rtol=0)


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_target_above_every_candidate_scores_one_at_every_k(ties: str) -> None:
    target = torch.tensor([5.0, 2.0])
    others = torch.tensor([[1.0, 0.0, -1.0], [1.5, 1.0, 0.5]])

    result = ranking_metrics(target, others, ks=(1, 2, 4), ties=ties)

    for value in result.values():
        torch.testing.assert_close(value, torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_target_below_every_candidate_scores_zero_when_k_is_below_last_rank(ties: str) -> None:
    target = torch.tensor([-5.0])
    others = torch.tensor([[1.0, 0.0, -1.0]])

    result = ranking_metrics(target, others, ks=(1, 2, 3), ties=ties)

    for value in result.values():
        torch.testing.assert_close(value, torch.zeros(1, dtype=torch.float64))


def test_target_at_rank_three_gives_ndcg_of_one_over_log2_of_four() -> None:
    target = torch.tensor([0.5])
    others = torch.tensor([[0.9, 0.7, 0.1, 0.3]])

    result = ranking_metrics(target, others, ks=(2, 3, 5))

    assert result["hr@2"].item() == 0.0
    assert result["ndcg@2"].item() == 0.0
    assert result["hr@3"].item() == 1.0
    assert result["ndcg@3"].item() == pytest.approx(1 / math.log2(3 + 1))
    assert result["ndcg@3"].item() == pytest.approx(0.5)
    assert result["ndcg@5"].item() == pytest.approx(0.5)


def test_result_has_float64_per_user_entries_for_every_k() -> None:
    target, others = _tie_free_scores(7, 4, seed=0)

    result = ranking_metrics(target.float(), others.float(), ks=(1, 2))

    assert set(result) == {"hr@1", "ndcg@1", "hr@2", "ndcg@2"}
    for value in result.values():
        assert value.dtype == torch.float64
        assert value.shape == (7,)


def test_all_ties_pessimistic_places_target_last() -> None:
    target = torch.tensor([1.0])
    others = torch.ones(1, 3)

    result = ranking_metrics(target, others, ks=(3, 4), ties="pessimistic")

    assert result["hr@3"].item() == 0.0
    assert result["ndcg@3"].item() == 0.0
    assert result["hr@4"].item() == 1.0
    assert result["ndcg@4"].item() == pytest.approx(1 / math.log2(4 + 1))


def test_all_ties_optimistic_places_target_first() -> None:
    target = torch.tensor([1.0])
    others = torch.ones(1, 3)

    result = ranking_metrics(target, others, ks=(1, 4), ties="optimistic")

    assert result["hr@1"].item() == 1.0
    assert result["ndcg@1"].item() == 1.0
    assert result["ndcg@4"].item() == 1.0


def test_all_ties_average_is_mean_over_every_rank() -> None:
    target = torch.tensor([1.0])
    others = torch.ones(1, 3)

    result = ranking_metrics(target, others, ks=(1, 2, 4), ties="average")

    assert result["hr@1"].item() == pytest.approx(1 / 4)
    assert result["ndcg@1"].item() == pytest.approx(1 / 4)
    assert result["hr@2"].item() == pytest.approx(2 / 4)
    assert result["ndcg@2"].item() == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert result["hr@4"].item() == pytest.approx(1.0)
    assert result["ndcg@4"].item() == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 4
    )


def test_partial_tie_average_spreads_over_tied_ranks_only() -> None:
    target = torch.tensor([1.0])
    others = torch.tensor([[2.0, 1.0, 0.0]])

    result = ranking_metrics(target, others, ks=(1, 2, 3), ties="average")

    assert result["hr@1"].item() == 0.0
    assert result["hr@2"].item() == pytest.approx(1 / 2)
    assert result["ndcg@2"].item() == pytest.approx((1 / math.log2(3)) / 2)
    assert result["hr@3"].item() == pytest.approx(1.0)
    assert result["ndcg@3"].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_tie_free_scores_match_per_user_sort(ties: str) -> None:
    target, others = _tie_free_scores(200, 100, seed=1)

    result = ranking_metrics(target, others, ks=KS, ties=ties)

    for k in KS:
        hr, ndcg = _per_user_sort_metrics(target, others, k)
        _assert_metrics_close(result, k, hr, ndcg, atol=1e-6)


def test_tie_free_scores_match_torchmetrics_retrieval() -> None:
    target, others = _tie_free_scores(200, 100, seed=2)

    result = ranking_metrics(target, others, ks=KS)

    for k in KS:
        hr, ndcg = _torchmetrics_metrics(target, others, k)
        _assert_metrics_close(result, k, hr, ndcg, atol=1e-6)


def test_pessimistic_matches_official_metron_at_k_on_tied_scores() -> None:
    target, others = _tied_scores(60, 20, seed=3)

    result = ranking_metrics(target, others, ks=KS, ties="pessimistic")

    for k in KS:
        hit, ndcg = _metron_at_k(target, others, k)
        torch.testing.assert_close(result[f"hr@{k}"], hit, atol=0, rtol=0)
        torch.testing.assert_close(result[f"ndcg@{k}"], ndcg, atol=1e-12, rtol=0)


def test_average_equals_mean_over_every_tie_breaking_order() -> None:
    target, others = _tied_scores(12, 5, seed=4, levels=3)

    result = ranking_metrics(target, others, ks=(1, 2, 3, 6), ties="average")

    for k in (1, 2, 3, 6):
        hr, ndcg = _tie_break_mean(target, others, k)
        torch.testing.assert_close(result[f"hr@{k}"], hr, atol=1e-12, rtol=0)
        torch.testing.assert_close(result[f"ndcg@{k}"], ndcg, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_masked_out_candidates_never_count(ties: str) -> None:
    target, small = _tied_scores(30, 8, seed=5)
    num_padded = 20
    generator = torch.Generator().manual_seed(6)
    columns = torch.rand(30, num_padded, generator=generator).argsort(dim=1)[:, :8]
    padded = torch.full((30, num_padded), 1e9, dtype=torch.float64)
    padded.scatter_(1, columns, small)
    mask = torch.zeros(30, num_padded, dtype=torch.bool).scatter_(1, columns, True)

    masked = ranking_metrics(target, padded, ks=(1, 3, 9), ties=ties, other_mask=mask)
    expected = ranking_metrics(target, small, ks=(1, 3, 9), ties=ties)

    for key, value in expected.items():
        torch.testing.assert_close(masked[key], value, atol=0, rtol=0)


def test_nan_in_masked_out_candidate_is_ignored() -> None:
    target = torch.tensor([1.0])
    others = torch.tensor([[float("nan"), 0.0]])
    mask = torch.tensor([[False, True]])

    result = ranking_metrics(target, others, ks=(1,), other_mask=mask)

    assert result["hr@1"].item() == 1.0


@pytest.mark.parametrize("ties", TIE_POLICIES)
def test_result_does_not_depend_on_chunk_size(ties: str) -> None:
    target, others = _tied_scores(50, 30, seed=7)

    whole = ranking_metrics(target, others, ks=(1, 5), ties=ties)
    chunked = ranking_metrics(target, others, ks=(1, 5), ties=ties, chunk_users=7)

    for key, value in whole.items():
        torch.testing.assert_close(chunked[key], value, atol=0, rtol=0)


def test_no_users_gives_empty_results() -> None:
    result = ranking_metrics(torch.zeros(0), torch.zeros(0, 5), ks=(1,), ties="average")

    assert result["hr@1"].shape == (0,)
    assert result["ndcg@1"].shape == (0,)


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises(k: int) -> None:
    with pytest.raises(ValueError, match="K"):
        ranking_metrics(torch.zeros(2), torch.zeros(2, 3), ks=(5, k))


def test_unknown_tie_policy_raises_naming_allowed_ones() -> None:
    with pytest.raises(ValueError, match="pessimistic, optimistic, average"):
        ranking_metrics(torch.zeros(2), torch.zeros(2, 3), ks=(1,), ties="random")


@pytest.mark.parametrize(
    ("target", "others"),
    [
        (torch.tensor([float("nan"), 0.0]), torch.zeros(2, 3)),
        (torch.zeros(2), torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])),
    ],
)
def test_nan_score_raises(target: Tensor, others: Tensor) -> None:
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(target, others, ks=(1,))


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match="other_scores"):
        ranking_metrics(torch.zeros(3), torch.zeros(2, 4), ks=(1,))
