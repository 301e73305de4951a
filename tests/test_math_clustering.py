"""The clustering helpers (aggregators/clustering.py) on cases counted by hand."""

import numpy as np
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


# --- k-means against a numpy transcription --------------------------------------------------------
def _lloyd(points, k, perm, iterations=25):
    """Lloyd's iterations of the docstring in numpy float64: start at the distinct points picked by
    ``perm`` (padded with the first pick), nearest centroid with ties to the lower index, an empty
    cluster keeps its centroid, stop when the assignment repeats or after ``iterations`` steps."""
    values = np.asarray(points, dtype=np.float64)
    distinct = np.unique(values, axis=0)  # sorted rows, as torch.unique(dim=0)
    k = min(k, len(values))
    start = distinct[perm[:k]]
    centroids = np.concatenate([start, np.repeat(start[:1], k - len(start), 0)]) if len(start) < k else start

    def nearest(centres):
        distances = np.sqrt(((values[:, None, :] - centres[None, :, :]) ** 2).sum(2))
        return distances.argmin(1)  # first minimum: the lower cluster index

    assignment = nearest(centroids)
    for _ in range(iterations):
        centroids = np.array([values[assignment == c].sum(0) / (assignment == c).sum()
                              if (assignment == c).any() else centroids[c] for c in range(k)])
        updated = nearest(centroids)
        if (updated == assignment).all():
            break
        assignment = updated
    return assignment


def _random_case(seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(2, 16)), int(rng.integers(1, 4))
    # small integers: many duplicate points, and every sum, mean and distance is computed the same
    # way in both (N <= 25 keeps torch.cdist off its matrix-product path), so the labels must agree exactly
    return rng.integers(0, 6, size=(n, d)).astype(np.float64), int(rng.integers(1, 7))


@pytest.mark.parametrize("seed", range(40))
def test_kmeans_matches_a_numpy_transcription(seed):
    points, k = _random_case(seed)
    gen, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    labels = kmeans(torch.tensor(points, dtype=torch.float32), k, gen)
    perm = torch.randperm(len(np.unique(points, axis=0)), generator=replay).numpy()
    assert labels.tolist() == _lloyd(points, k, perm).tolist()
    assert torch.equal(gen.get_state(), replay.get_state())  # one permutation, from the generator passed in


@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_kmeans_stops_after_the_given_iterations(iterations):
    # 1-D points 0..9 and 30 started at 0 and 1: the boundary walks right for several steps.
    points = np.array([[float(x)] for x in list(range(10)) + [30]])
    perm = None
    for seed in range(200):  # a seed whose start is the two smallest points, in either order
        perm = torch.randperm(11, generator=torch.Generator().manual_seed(seed))
        if sorted(perm[:2].tolist()) == [0, 1]:
            break
    labels = kmeans(torch.tensor(points), 2, torch.Generator().manual_seed(seed), iterations=iterations)
    assert labels.tolist() == _lloyd(points, 2, perm.numpy(), iterations).tolist()
    assert labels.tolist() != _lloyd(points, 2, perm.numpy(), iterations + 1).tolist()


# Two cases found by searching seeds: with seed 302 one of the four clusters loses all its points
# during Lloyd's steps (and must keep its centroid), with seed 226 a cluster shrinks to a single point
# (whose mean is that point, not the old centroid).
EMPTIED = ([[3, -4], [6, 2], [1, 4], [-4, -1], [-3, 0], [3, -2], [3, -4], [5, 0], [6, 0], [-5, -1]], 4, 302)
SINGLETON = ([[3, -4], [6, 5], [4, 2], [1, 3], [-5, -2], [-1, -4], [-6, 0], [4, -1], [2, -2], [-1, 3], [1, -5]],
             4, 226)


@pytest.mark.parametrize("case", [EMPTIED, SINGLETON], ids=["emptied", "singleton"])
def test_kmeans_empty_and_single_point_clusters_match_the_transcription(case):
    points, k, seed = case
    points = np.array(points, dtype=np.float64)
    labels = kmeans(torch.tensor(points), k, torch.Generator().manual_seed(seed))
    perm = torch.randperm(len(np.unique(points, axis=0)), generator=torch.Generator().manual_seed(seed)).numpy()
    assert labels.tolist() == _lloyd(points, k, perm).tolist()
    if case is EMPTIED:
        assert len(set(labels.tolist())) == 3  # 9 distinct points, K = 4, one cluster ends empty


def test_kmeans_pads_the_start_when_points_have_more_features_than_clusters():
    # d = 3 >= K = 3 but only 2 distinct points: the start is padded with the first pick, the surplus stays empty.
    points = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    for seed in range(3):
        labels = kmeans(points, 3, torch.Generator().manual_seed(seed)).tolist()
        assert labels[0] == labels[1] != labels[2] and max(labels) <= 1


def test_kmeans_runs_25_iterations_by_default():
    # 100 evenly spaced points and 12 clusters relax slowly: with this seed the assignment after 25
    # steps differs from the one after 26, so the default is pinned.
    points = torch.arange(100.0).unsqueeze(1)
    default = kmeans(points, 12, torch.Generator().manual_seed(293))
    assert torch.equal(default, kmeans(points, 12, torch.Generator().manual_seed(293), iterations=25))
    assert not torch.equal(default, kmeans(points, 12, torch.Generator().manual_seed(293), iterations=26))


# --- stratified sampling and cluster means, more --------------------------------------------------
def _stratified_rule(assignment, count, noise):
    """Inside each cluster the clients in ascending order of their noise draw; the first quota of them."""
    sizes = np.bincount(assignment)
    quotas = proportional_quotas(torch.tensor(sizes), count).tolist()  # checked by hand above
    chosen = []
    for cluster, quota in enumerate(quotas):
        members = [c for c in range(len(assignment)) if assignment[c] == cluster]
        chosen += sorted(members, key=lambda c: noise[c])[:quota]
    return sorted(chosen)


@pytest.mark.parametrize("seed", range(6))
def test_stratified_sample_orders_each_cluster_by_uniform_noise_from_the_generator(seed):
    # The exact draw is pinned so that a seed keeps selecting the same clients.
    assignment = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 1, 3, 1])
    gen, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    chosen = stratified_sample(torch.tensor(assignment), 5, gen)
    noise = torch.rand(len(assignment), generator=replay, dtype=torch.float64).tolist()
    assert chosen.tolist() == _stratified_rule(assignment, 5, noise)
    assert torch.equal(gen.get_state(), replay.get_state())  # one float64 draw per client


def test_cluster_means_with_empty_highest_clusters():
    values = torch.tensor([[1.0], [3.0], [8.0]])
    fallback = torch.tensor([-1.0])
    # clusters 2 and 3 have no member: they get the fallback, however many trailing ids are empty
    assert cluster_means(values, torch.tensor([0, 0, 1]), 4, fallback).tolist() == [[2.0], [8.0], [-1.0], [-1.0]]
    assert cluster_means(values, torch.tensor([0, 0, 0]), 3, fallback).tolist() == [[4.0], [-1.0], [-1.0]]


def test_cluster_means_keep_the_dtype_of_the_values():
    # A float64 fallback does not promote float32 means.
    out = cluster_means(torch.tensor([[1.0, 2.0]]), torch.tensor([1]), 2, fallback=torch.zeros(2, dtype=torch.float64))
    assert out.dtype == torch.float32 and out.tolist() == [[0.0, 0.0], [1.0, 2.0]]


def test_quota_ties_go_to_the_lower_clusters_among_many():
    # 20 clusters of one client and 8 to take: every share is 8 / 20 = 0.4, floors 0, and the 8 left go to
    # clusters 0..7 (an unstable sort, which torch uses from 17 elements on, would pick others).
    assert proportional_quotas(torch.ones(20, dtype=torch.long), 8).tolist() == [1] * 8 + [0] * 12
