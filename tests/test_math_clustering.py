"""The clustering helpers (aggregators/clustering.py) on cases counted by hand."""

import pytest
import torch

from fedca.aggregators.clustering import cluster_means, kmeans, proportional_quotas, stratified_sample


def test_quotas_follow_the_largest_remainders():
    # shares 5 * 4 / 10 = 2, 1.2, 0.8: floors 2, 1, 0 and the one left goes to the largest remainder (0.8)
    assert proportional_quotas(torch.tensor([5, 3, 2]), 4).tolist() == [2, 1, 1]


def test_quota_ties_go_to_the_lower_cluster():
    # shares 2/3 each: floors 0, two left, given to clusters 0 and 1
    assert proportional_quotas(torch.tensor([1, 1, 1]), 2).tolist() == [1, 1, 0]
    # shares 0.5 and 4.5: floors 0, 4; the remainders tie at 0.5 -> cluster 0
    assert proportional_quotas(torch.tensor([1, 9]), 5).tolist() == [1, 4]


def test_quotas_never_exceed_the_cluster():
    # shares 1.5, 1.5: floors 1, 1, remainder to cluster 0 -> 2, capped at its size 1
    assert proportional_quotas(torch.tensor([1, 1]), 3).tolist() == [1, 1]
    assert proportional_quotas(torch.tensor([4, 0, 4]), 8).tolist() == [4, 0, 4]


def test_stratified_sample_takes_the_quota_of_each_cluster():
    assignment = torch.tensor([0, 1, 0, 2, 1, 0])
    # sizes 3, 2, 1 and count 3: shares 1.5, 1, 0.5 -> floors 1, 1, 0; the one left to cluster 0 -> 2, 1, 0
    for seed in range(5):
        sample = stratified_sample(assignment, 3, torch.Generator().manual_seed(seed))
        assert sample.tolist() == sorted(set(sample.tolist())) and sample.numel() == 3
        clusters = assignment[sample].tolist()
        assert (clusters.count(0), clusters.count(1), clusters.count(2)) == (2, 1, 0)


def test_stratified_sample_draws_uniformly_inside_a_cluster():
    assignment = torch.tensor([0, 0, 0, 0, 1])
    counts = torch.zeros(5)
    for seed in range(400):
        counts[stratified_sample(assignment, 2, torch.Generator().manual_seed(seed))] += 1
    # shares 1.6, 0.4 -> floors 1, 0; the one left goes to the larger remainder, cluster 0: quotas 2, 0
    assert counts[4] == 0
    # cluster 0 gives 2 of its 4 clients each time: each is picked ~200 times (binomial sd 10)
    assert all(150 < c < 250 for c in counts[:4].tolist())


def test_kmeans_splits_two_separated_groups():
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [0.5, 0.5]])
    for seed in range(4):
        labels = kmeans(points, 2, torch.Generator().manual_seed(seed)).tolist()
        assert labels[0] == labels[1] == labels[4] != labels[2] == labels[3]


def test_kmeans_with_more_clusters_than_points_gives_each_point_its_own():
    points = torch.tensor([[0.0], [5.0], [9.0]])
    labels = kmeans(points, 10, torch.Generator().manual_seed(0))
    assert sorted(labels.tolist()) == [0, 1, 2] and labels.dtype == torch.int64


def test_kmeans_with_fewer_distinct_points_leaves_surplus_clusters_empty():
    points = torch.tensor([[1.0], [1.0], [4.0], [4.0]])
    labels = kmeans(points, 3, torch.Generator().manual_seed(1)).tolist()
    assert labels[0] == labels[1] != labels[2] == labels[3]


def test_kmeans_converges_to_the_cluster_means():
    # start anywhere: Lloyd's steps end at {0, 1, 2} and {20, 21} for these points
    points = torch.tensor([[0.0], [1.0], [2.0], [20.0], [21.0]])
    for seed in range(4):
        labels = kmeans(points, 2, torch.Generator().manual_seed(seed), iterations=25).tolist()
        assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4]


def test_cluster_means_with_an_empty_cluster_use_the_fallback():
    values = torch.tensor([[1.0, 2.0], [3.0, 6.0], [10.0, 10.0]])
    groups = torch.tensor([0, 0, 2])
    out = cluster_means(values, groups, 3, fallback=torch.tensor([-1.0, -2.0]))
    # group 0: mean of (1, 2) and (3, 6) = (2, 4); group 1 empty; group 2: (10, 10)
    assert out.tolist() == [[2.0, 4.0], [-1.0, -2.0], [10.0, 10.0]]


def test_cluster_means_keep_the_value_shape():
    values = torch.arange(8.0).reshape(2, 2, 2)
    out = cluster_means(values, torch.tensor([1, 1]), 2, fallback=torch.zeros(2, 2))
    assert out.shape == (2, 2, 2)
    assert out[1].tolist() == [[2.0, 3.0], [4.0, 5.0]] and out[0].tolist() == [[0.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("total", [0, 1])
def test_small_totals(total):
    quotas = proportional_quotas(torch.tensor([2, 2]), total)
    assert int(quotas.sum()) == total
