"""Batched, seeded clustering helpers for the clustering baselines (FedFast, PerFedRec).

Shapes: N points (clients), d features, K clusters, m clients to sample.
"""

import torch


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 25) -> torch.Tensor:
    """[N] cluster of each of ``points`` [N, d] after Lloyd's iterations in float64.

    Centroids start at ``k`` distinct points drawn uniformly with ``generator`` (fewer when
    there are fewer distinct points; then the surplus clusters stay empty). A cluster that
    loses all its points keeps its centroid. Ties go to the lower cluster index.
    """
    values = points.double().cpu()
    distinct = torch.unique(values, dim=0)  # [D, d]
    k = min(k, values.shape[0])
    start = distinct[torch.randperm(distinct.shape[0], generator=generator)[:k]]  # [<=k, d]
    centroids = torch.cat([start, start[:1].expand(k - start.shape[0], -1)]) if start.shape[0] < k else start
    assignment = torch.cdist(values, centroids).argmin(1)  # [N]
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assignment, values)  # [K, d]
        sizes = torch.bincount(assignment, minlength=k).unsqueeze(1)  # [K, 1]
        centroids = torch.where(sizes > 0, sums / sizes.clamp(min=1), centroids)
        updated = torch.cdist(values, centroids).argmin(1)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return assignment


def proportional_quotas(sizes: torch.Tensor, total: int) -> torch.Tensor:
    """[K] how many of ``total`` to take from clusters of ``sizes`` [K]: proportional to size by
    the largest-remainder rule (ties by cluster index), never more than a cluster holds."""
    share = sizes.double() * total / sizes.sum()
    quotas = share.floor().long()
    remainder = total - int(quotas.sum())
    order = torch.argsort(-(share - quotas), stable=True)
    quotas[order[:remainder]] += 1
    return torch.minimum(quotas, sizes)


def stratified_sample(assignment: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """[<= count] clients (ascending) drawn uniformly without replacement inside every cluster of
    ``assignment`` [N], each cluster contributing in proportion to its size."""
    clusters = int(assignment.max()) + 1
    sizes = torch.bincount(assignment, minlength=clusters)
    quotas = proportional_quotas(sizes, count)  # [K]
    noise = torch.rand(assignment.numel(), generator=generator, dtype=torch.float64)
    order = torch.argsort(assignment.double() * 2 + noise)  # clients grouped by cluster, shuffled within
    starts = torch.cumsum(sizes, 0) - sizes  # [K]
    rank = torch.arange(assignment.numel()) - starts[assignment[order]]  # position inside its cluster
    return torch.sort(order[rank < quotas[assignment[order]]]).values


def cluster_means(values: torch.Tensor, groups: torch.Tensor, clusters: int, fallback: torch.Tensor) -> torch.Tensor:
    """[K, ...] unweighted mean of ``values`` [n, ...] per group id in ``groups`` [n]; a group with
    no member gets ``fallback`` [...]."""
    flat = values.reshape(values.shape[0], -1)
    sums = torch.zeros(clusters, flat.shape[1], dtype=flat.dtype, device=flat.device).index_add_(0, groups, flat)
    sizes = torch.bincount(groups, minlength=clusters).to(flat).unsqueeze(1)  # [K, 1]
    means = torch.where(sizes > 0, sums / sizes.clamp(min=1), fallback.reshape(1, -1).to(flat))
    return means.reshape(clusters, *values.shape[1:])
