"""Edge cases of HR@K / NDCG@K (metrics/ranking.py) worked out by hand: the tie policies at the
cut-off, candidates that do not count, integer scores, and the input checks."""

import math

import pytest
import torch

from fedca.metrics.ranking import ranking_metrics


def test_average_ties_straddling_the_cut_off():
    # one candidate above (g = 1) and two tied (e = 2): the rank is uniform on 2, 3, 4
    target = torch.tensor([0.5])
    others = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    out = ranking_metrics(target, others, [2, 3, 10], ties="average")
    # K = 2: only rank 2 counts -> HR 1/3, NDCG (1 / log2 3) / 3
    assert float(out["hr@2"][0]) == pytest.approx(1 / 3, abs=1e-15)
    assert float(out["ndcg@2"][0]) == pytest.approx(1 / math.log2(3) / 3, abs=1e-15)
    # K = 3: ranks 2 and 3 -> HR 2/3, NDCG (1 / log2 3 + 1 / log2 4) / 3
    assert float(out["hr@3"][0]) == pytest.approx(2 / 3, abs=1e-15)
    assert float(out["ndcg@3"][0]) == pytest.approx((1 / math.log2(3) + 0.5) / 3, abs=1e-15)
    # K = 10: every rank counts -> HR 1, NDCG mean of 1/log2(3), 1/log2(4), 1/log2(5)
    assert float(out["hr@10"][0]) == 1.0
    assert float(out["ndcg@10"][0]) == pytest.approx((1 / math.log2(3) + 0.5 + 1 / math.log2(5)) / 3, abs=1e-15)


def test_average_ties_entirely_past_the_cut_off_score_zero():
    # g = 3 candidates above, e = 1 tie, K = 2: no possible rank is within the cut-off
    out = ranking_metrics(torch.tensor([0.0]), torch.tensor([[3.0, 2.0, 1.0, 0.0]]), [2], ties="average")
    assert out["hr@2"].tolist() == [0.0] and out["ndcg@2"].tolist() == [0.0]


@pytest.mark.parametrize("ties, rank", [("pessimistic", 4), ("optimistic", 2)])
def test_definite_rank_at_and_past_the_cut_off(ties, rank):
    out = ranking_metrics(torch.tensor([0.5]), torch.tensor([[0.9, 0.5, 0.5, 0.1]]), [rank - 1, rank], ties=ties)
    assert out[f"hr@{rank - 1}"].tolist() == [0.0] and out[f"ndcg@{rank - 1}"].tolist() == [0.0]
    assert out[f"hr@{rank}"].tolist() == [1.0]
    assert float(out[f"ndcg@{rank}"][0]) == pytest.approx(1 / math.log2(rank + 1), abs=1e-15)


def test_without_candidates_the_target_is_first():
    out = ranking_metrics(torch.tensor([0.3, -2.0]), torch.zeros(2, 0), [1], ties="pessimistic")
    assert out["hr@1"].tolist() == [1.0, 1.0] and out["ndcg@1"].tolist() == [1.0, 1.0]


def test_masked_candidates_do_not_count_even_when_higher():
    target = torch.tensor([0.5, 0.5])
    others = torch.tensor([[0.9, 0.7, 0.1], [0.9, 0.5, 0.1]])
    mask = torch.tensor([[False, True, True], [True, False, True]])
    out = ranking_metrics(target, others, [1, 2], ties="pessimistic", other_mask=mask)
    # user 0: one counted candidate above -> rank 2; user 1: 0.9 counts, the tie does not -> rank 2
    assert out["hr@1"].tolist() == [0.0, 0.0] and out["hr@2"].tolist() == [1.0, 1.0]
    assert out["ndcg@2"].tolist() == pytest.approx([1 / math.log2(3)] * 2, abs=1e-15)


def test_integer_scores_rank_like_floats():
    out = ranking_metrics(torch.tensor([2, 5]), torch.tensor([[3, 2, 1], [1, 2, 3]]), [1, 2], ties="pessimistic")
    # user 0: 3 above, one tie -> rank 3; user 1: none above -> rank 1
    assert out["hr@2"].tolist() == [0.0, 1.0] and out["ndcg@1"].tolist() == [0.0, 1.0]


def test_nan_target_is_rejected_even_with_integer_candidates():
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(torch.tensor([math.nan]), torch.tensor([[1, 2]]), [1])
    with pytest.raises(ValueError, match="NaN"):
        ranking_metrics(torch.tensor([1]), torch.tensor([[math.nan, 2.0]]), [1])


@pytest.mark.parametrize("chunk_users", [1, 2, 3, 100])
def test_explicit_chunks_give_the_same_counts(chunk_users):
    target = torch.tensor([0.5, 0.2, 0.9])
    others = torch.tensor([[0.9, 0.5, 0.1], [0.1, 0.3, 0.2], [0.0, 0.1, 0.2]])
    out = ranking_metrics(target, others, [1, 2], ties="pessimistic", chunk_users=chunk_users)
    # ranks: user 0 -> 1 above + 1 tie + 1 = 3; user 1 -> 1 above + 1 tie + 1 = 3; user 2 -> 1
    assert out["hr@2"].tolist() == [0.0, 0.0, 1.0] and out["hr@1"].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("chunk_users", [0, -3])
def test_non_positive_chunk_is_rejected(chunk_users):
    with pytest.raises(ValueError, match="chunk_users must be >= 1"):
        ranking_metrics(torch.tensor([0.5]), torch.tensor([[0.1]]), [1], chunk_users=chunk_users)


@pytest.mark.parametrize("ks", [[], [True], [2.0], [1, 0]])
def test_cut_offs_must_be_positive_ints(ks):
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(torch.tensor([0.5]), torch.tensor([[0.1]]), ks)


def test_ties_must_be_a_known_policy():
    with pytest.raises(ValueError, match="ties must be one of pessimistic, optimistic, average; got 'random'"):
        ranking_metrics(torch.tensor([0.5]), torch.tensor([[0.1]]), [1], ties="random")


@pytest.mark.parametrize("target, others", [
    (torch.zeros(2, 1), torch.zeros(2, 3)),  # target not [U]
    (torch.zeros(2), torch.zeros(2)),  # others not [U, C]
    (torch.zeros(3), torch.zeros(2, 4)),  # U differs
])
def test_shapes_must_be_u_and_u_by_c(target, others):
    with pytest.raises(ValueError, match=r"expected target_scores \[U\] and other_scores \[U, C\]"):
        ranking_metrics(target, others, [1])


@pytest.mark.parametrize("mask", [torch.ones(2, 3), torch.ones(2, 2, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool)])
def test_mask_must_be_bool_and_shaped_like_the_candidates(mask):
    with pytest.raises(ValueError, match="other_mask must be a bool tensor shaped like other_scores"):
        ranking_metrics(torch.zeros(2), torch.zeros(2, 3), [1], other_mask=mask)
