"""pFedGraph (aggregators/pfedgraph.py, docs/methods/pfedgraph.md): the graph on hand-worked
two-client cases (a cosine of exactly 0.9, one of 0.96 and updates shorter than 1), a round of a
participant subset against a float64 numpy transcription of the doc (uniform and sample
weighting, ``similarity=mlp``, a float32 population), the stored anchors and what ``anchors``
hands out, the start state, the defaults and the option errors.

The transcription (``reference_round``) follows the doc step by step: Delta_i = theta_i - theta^0,
d_ij = -cos(Delta_i, Delta_j) set to -1 below -0.9, a_i = Pi(p - d_i / (2 alpha)) with the
sort-based simplex projection, blocks sum_j a_ij theta_j and anchors sum_j a_ij theta_j / ||theta_j||.

The chunked, sparse step is also held to the dense formula (``dense_step``) in float64 and float32,
for graphs from fully dense to one nonzero per row, chunks of 1, 4 and all rows, column tiles of 1, 6
and all columns, and rows mixed by the sparse product, the dense one or the default split.
"""

import math

import numpy as np
import pytest
import torch

import fedca.aggregators.pfedgraph as module
from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.pfedgraph import PFedGraph, collaboration_graph
from fedca.federation.population import Population


def project(v):
    """Euclidean projection of one vector onto the simplex (sort, prefix sums, threshold)."""
    u = np.sort(v)[::-1]
    c = np.cumsum(u)
    r = np.arange(1, len(v) + 1)
    rho = r[u - (c - 1) / r > 0].max()
    return np.maximum(v - (c[rho - 1] - 1) / rho, 0.0)


def reference_graph(deltas, p, alpha):
    n = len(deltas)
    d = np.array([[-(deltas[i] @ deltas[j]) / (np.linalg.norm(deltas[i]) * np.linalg.norm(deltas[j]))
                   for j in range(n)] for i in range(n)])
    d[d < -0.9] = -1.0
    return np.stack([project(p - d[i] / (2 * alpha)) for i in range(n)])


def reference_round(thetas, theta0, p, alpha, mlp_from=None):
    """Graph, personal blocks and anchors; ``mlp_from``: compare only the columns from there on."""
    deltas = [(t - theta0)[mlp_from or 0:] for t in thetas]
    graph = reference_graph(deltas, p, alpha)
    blocks = graph @ np.stack(thetas)
    anchors = graph @ np.stack([t / np.linalg.norm(t) for t in thetas])
    return graph, blocks, anchors


def context():
    return RoundContext(round=0, weights={}, generator=torch.Generator().manual_seed(0))


def population(dtype=torch.float64, seed=3, n=4, items=3, dim=2, mlp=3):
    gen = torch.Generator().manual_seed(seed)
    return Population(user=torch.randn(n, dim, generator=gen).to(dtype),
                      items=torch.randn(n, items, dim, generator=gen).to(dtype),
                      mlp=torch.randn(n, mlp, generator=gen).to(dtype))


CLIENTS = torch.tensor([3, 1, 0])  # a subset of the 4 clients, not in index order
SIZES = torch.tensor([1, 6, 3])


def run_round(agg, pop, items0, mlp0):
    uploads = Uploads(pop, CLIENTS, SIZES, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    return agg.aggregate(uploads, agg.start(items0, mlp0), context())


def numpy_thetas(pop, items0, mlp0):
    thetas = [np.concatenate([pop.items[c].double().reshape(-1).numpy(), pop.mlp[c].double().numpy()])
              for c in CLIENTS.tolist()]
    theta0 = np.concatenate([items0.double().reshape(-1).numpy(), mlp0.double().numpy()])
    return thetas, theta0


def check_round(downloads, state, pop, blocks, anchors, atol):
    n = len(CLIENTS)
    got = torch.cat([downloads.items.reshape(n, -1), downloads.mlp], 1).double().numpy()
    np.testing.assert_allclose(got, blocks, rtol=0, atol=atol)
    assert downloads.kind == "personal"
    assert torch.equal(downloads.clients, CLIENTS)
    # anchors are stored for every client of the population; non-participants stay at 0
    assert state["anchor_items"].shape == pop.items.shape and state["anchor_mlp"].shape == pop.mlp.shape
    got_anchors = torch.cat([state["anchor_items"][CLIENTS].reshape(n, -1), state["anchor_mlp"][CLIENTS]], 1)
    np.testing.assert_allclose(got_anchors.double().numpy(), anchors, rtol=0, atol=atol)
    assert not state["anchor_items"][2].any() and not state["anchor_mlp"][2].any()


def test_cosine_of_exactly_0_9_is_kept():
    # |a| = |b| = 10, a.b = 90: cos = 0.9 exactly (90 / 100 rounds to the double 0.9), so
    # d_01 = -0.9 is not below -0.9 and stays; d_ii = -1. p = (1/2, 1/2), alpha = 0.8:
    # v_0 = 1/2 + (1, 0.9) / 1.6 = (1.125, 1.0625), tau = (2.1875 - 1) / 2 = 0.59375,
    # a_0 = (0.53125, 0.46875), and a_1 mirrored.
    deltas = torch.tensor([[10.0, 0, 0, 0], [9.0, 3, 3, 1]], dtype=torch.float64)
    graph = collaboration_graph(deltas, torch.tensor([0.5, 0.5], dtype=torch.float64), 0.8)
    expected = torch.tensor([[0.53125, 0.46875], [0.46875, 0.53125]], dtype=torch.float64)
    # 0.9 / 1.6 is rounded once or twice: a few ulp of 1
    torch.testing.assert_close(graph, expected, rtol=0, atol=1e-15)


def test_cosine_above_0_9_counts_as_a_full_match():
    # (6, 8) and (8, 6): cos = 0.96 > 0.9, so d_01 = -1 = d_ii and both rows are (1/2, 1/2) exactly
    # (a threshold that let -0.96 through would give (0.5125, 0.4875)).
    deltas = torch.tensor([[6.0, 8.0], [8.0, 6.0]], dtype=torch.float64)
    graph = collaboration_graph(deltas, torch.tensor([0.5, 0.5], dtype=torch.float64), 0.8)
    torch.testing.assert_close(graph, torch.full((2, 2), 0.5, dtype=torch.float64), rtol=0, atol=1e-15)


def test_short_updates_are_normalised_by_their_own_norm():
    # norms 0.1, 0.05 and 0.2 (all below 1): the cosines are those of the directions only.
    # cos_01 = 0, cos_02 = 0.6, cos_12 = 0.8; p = (0.2, 0.3, 0.5), alpha = 0.8.
    deltas = torch.tensor([[0.1, 0.0], [0.0, 0.05], [0.12, 0.16]], dtype=torch.float64)
    p = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    graph = collaboration_graph(deltas, p, 0.8)
    expected = reference_graph(deltas.numpy(), p.numpy(), 0.8)
    # sums of three terms of size <= 2 in float64: 1e-15 leaves a few ulp
    np.testing.assert_allclose(graph.numpy(), expected, rtol=0, atol=1e-15)
    assert graph.dtype == torch.float64


@pytest.mark.parametrize("weighting", ["samples", "uniform"])
def test_round_of_a_participant_subset_matches_the_transcription(weighting):
    pop = population()
    items0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    mlp0 = torch.randn(3, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    agg = PFedGraph(alpha=0.5, weighting=weighting)
    downloads, state = run_round(agg, pop, items0, mlp0)
    thetas, theta0 = numpy_thetas(pop, items0, mlp0)
    p = SIZES.numpy() / SIZES.sum().item() if weighting == "samples" else np.full(3, 1 / 3)
    graph, blocks, anchors = reference_round(thetas, theta0, p, 0.5)
    # float64 throughout, entries of size ~3: 1e-12 is far above rounding and far below any change
    check_round(downloads, state, pop, blocks, anchors, atol=1e-12)
    entropy = -(graph * np.log(np.where(graph > 0, graph, 1.0))).sum(1)
    assert downloads.stats["w_self"] == pytest.approx(np.diag(graph).mean(), rel=0, abs=1e-12)
    assert downloads.stats["w_entropy"] == pytest.approx(entropy.mean(), rel=0, abs=1e-12)
    assert downloads.stats["w_nonzero"] == pytest.approx((graph > 0).sum(1).mean(), rel=0, abs=1e-12)


def test_mlp_similarity_uses_only_the_mlp_updates():
    pop = population(seed=5)
    items0, mlp0 = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    agg = PFedGraph(alpha=0.8, similarity="mlp")
    downloads, state = run_round(agg, pop, items0, mlp0)
    thetas, theta0 = numpy_thetas(pop, items0, mlp0)
    graph, blocks, anchors = reference_round(thetas, theta0, SIZES.numpy() / 10, 0.8, mlp_from=6)
    all_graph = reference_graph([t - theta0 for t in thetas], SIZES.numpy() / 10, 0.8)
    assert np.abs(graph - all_graph).max() > 1e-3  # the case tells the two similarities apart
    check_round(downloads, state, pop, blocks, anchors, atol=1e-12)  # float64, as above


def test_float32_population_gets_float32_blocks_and_anchors():
    pop = population(dtype=torch.float32, seed=7)
    items0, mlp0 = torch.zeros(3, 2), torch.zeros(3)
    agg = PFedGraph()
    downloads, state = run_round(agg, pop, items0, mlp0)
    assert downloads.items.dtype == downloads.mlp.dtype == torch.float32
    assert state["anchor_items"].dtype == state["anchor_mlp"].dtype == torch.float32
    thetas, theta0 = numpy_thetas(pop, items0, mlp0)
    graph, blocks, anchors = reference_round(thetas, theta0, SIZES.numpy() / 10, 0.8)
    # the Gram matrix and both products run in float32 (eps 1.2e-7) on entries of size ~3
    check_round(downloads, state, pop, blocks, anchors, atol=1e-5)


def test_anchors_before_after_a_round_and_switched_off():
    pop = population()
    items0, mlp0 = torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    agg = PFedGraph(lam=0.25, reg_sign=1)
    assert agg.anchors(torch.tensor([1, 3]), agg.start(items0, mlp0)) is None  # nothing aggregated yet
    _, state = run_round(agg, pop, items0, mlp0)
    anchors = agg.anchors(torch.tensor([1, 3]), state)
    assert torch.equal(anchors.items, state["anchor_items"][[1, 3]])
    assert torch.equal(anchors.mlp, state["anchor_mlp"][[1, 3]])
    assert (anchors.strength, anchors.sign) == (0.25, 1)
    assert state["anchor_items"][1].any()
    off = PFedGraph(lam=0.0)
    _, state = run_round(off, pop, items0, mlp0)
    assert off.anchors(torch.tensor([1, 3]), state) is None


def test_start_state():
    items0, mlp0 = torch.ones(3, 2), torch.ones(4)
    state = PFedGraph().start(items0, mlp0)
    assert set(state) == {"items0", "mlp0", "anchor_items", "anchor_mlp"}
    assert state["anchor_items"] is None and state["anchor_mlp"] is None
    assert torch.equal(state["items0"], items0) and torch.equal(state["mlp0"], mlp0)
    assert state["items0"] is not items0  # a copy: the run's initial block stays fixed


def test_defaults_are_the_docs():
    # docs/methods/pfedgraph.md: alpha 0.8, similarity all, lam 0.01, the paper's sign -1, data-size weights
    agg = PFedGraph()
    assert (agg.alpha, agg.similarity, agg.lam, agg.reg_sign, agg.weighting) == (0.8, "all", 0.01, -1, "samples")
    assert PFedGraph(weighting="uniform").weighting == "uniform"


def test_option_errors():
    with pytest.raises(ValueError, match=r"alpha must be > 0"):
        PFedGraph(alpha=0.0)
    with pytest.raises(ValueError, match=r"similarity must be one of"):
        PFedGraph(similarity="fc")
    with pytest.raises(ValueError, match=r"reg_sign must be \+1 or -1"):
        PFedGraph(reg_sign=2)
    assert PFedGraph(reg_sign=1).reg_sign == 1 and PFedGraph(alpha=math.ulp(0.0)).alpha > 0


# --- the chunked, sparse server step against the dense formula -------------------------------------------------

SPARSE_CLIENTS = torch.tensor([12, 0, 5, 3, 9, 1, 7, 10, 2, 11, 6])  # 11 of 13 clients, not in index order
SPARSE_SIZES = torch.tensor([4, 9, 1, 7, 3, 5, 8, 2, 6, 10, 5])
U32 = 2.0 ** -24  # unit roundoff of float32


def clustered_population(dtype, items=5, dim=3, mlp=4, seed=21):
    """13 clients whose updates from theta^0 form two tight clusters (cosines >= 0.97 inside one)
    and five loners in random directions: graphs from dense to one nonzero per row as alpha falls."""
    gen = torch.Generator().manual_seed(seed)
    width = items * dim + mlp
    theta0 = torch.randn(width, generator=gen, dtype=torch.float64)
    centres = torch.randn(2, width, generator=gen, dtype=torch.float64)
    groups = [0, 1, 0, 2, 1, 0, 2, 0, 1, 2, 0, 1, 2]  # 0: a loner; 1, 2: a cluster
    updates = torch.stack([torch.randn(width, generator=gen, dtype=torch.float64) if g == 0 else
                           centres[g - 1] + 0.05 * torch.randn(width, generator=gen, dtype=torch.float64)
                           for g in groups])
    scales = torch.rand(13, 1, generator=gen, dtype=torch.float64) + 0.5
    thetas = (theta0 + scales * updates).to(dtype)
    pop = Population(user=torch.zeros(13, dim, dtype=dtype), items=thetas[:, :items * dim].reshape(13, items, dim).clone(),
                     mlp=thetas[:, items * dim:].clone())
    return pop, theta0[:items * dim].reshape(items, dim).to(dtype), theta0[items * dim:].to(dtype)


def dense_step(thetas, theta0, p, alpha):
    """The doc's equations with dense [n, n] matrices in float64: cosines of the updates, d = -cos
    with -1 below -0.9, rows a_i = Pi(p - d_i / (2 alpha)), blocks A theta, anchors A (theta / ||theta||)."""
    deltas = thetas - theta0
    lengths = np.linalg.norm(deltas, axis=1)
    cos = (deltas @ deltas.T) / np.outer(lengths, lengths)
    d = np.where(-cos < -0.9, -1.0, -cos)
    graph = np.stack([project(p - d[i] / (2 * alpha)) for i in range(len(thetas))])
    return cos, graph, graph @ thetas, graph @ (thetas / np.linalg.norm(thetas, axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
# rows per chunk and columns per tile: one, an uneven split (of the 11 rows, the 15 + 4 columns), all at once
@pytest.mark.parametrize("rows,columns", [(1, 1), (4, 6), (64, 64)])
# rows mixed sparsely up to this share of nonzeros: the default, none (all dense), all (CSR throughout)
@pytest.mark.parametrize("dense_share", [module.DENSE_SHARE, -1.0, 1.0])
@pytest.mark.parametrize("alpha,nonzeros", [(1e3, "dense"), (2.0, "mixed"), (0.3, "clusters"), (1e-3, "clusters")])
def test_chunked_sparse_step_equals_the_dense_formula(monkeypatch, dtype, rows, columns, dense_share, alpha,
                                                      nonzeros):
    monkeypatch.setattr(module, "chunk_rows", lambda row_bytes: rows)
    monkeypatch.setattr(module, "tile_columns", lambda rows, element_size: columns)
    monkeypatch.setattr(module, "DENSE_SHARE", dense_share)
    pop, items0, mlp0 = clustered_population(dtype)
    uploads = Uploads(pop, SPARSE_CLIENTS, SPARSE_SIZES, torch.zeros(0, dtype=torch.long),
                      torch.zeros(0, dtype=torch.long))
    agg = PFedGraph(alpha=alpha)
    downloads, state = agg.aggregate(uploads, agg.start(items0, mlp0), context())

    n = len(SPARSE_CLIENTS)
    thetas = torch.cat([pop.items[SPARSE_CLIENTS].reshape(n, -1), pop.mlp[SPARSE_CLIENTS]], 1).double().numpy()
    theta0 = torch.cat([items0.reshape(-1), mlp0]).double().numpy()
    p = SPARSE_SIZES.numpy() / SPARSE_SIZES.sum().item()
    cos, graph, blocks, anchors = dense_step(thetas, theta0, p, alpha)
    counts = (graph > 0).sum(1)
    if nonzeros == "dense":
        assert (counts == n).all()
    elif nonzeros == "mixed":
        assert 1 < counts.min() and counts.max() < n
    else:  # each loner keeps only itself, each cluster member spreads over its cluster
        assert counts.min() == 1 and counts.max() > 1
    off = ~np.eye(n, dtype=bool)
    assert np.abs(cos[off] - 0.9).min() > 1e-3  # no cosine within rounding of the threshold's jump

    got_blocks = torch.cat([downloads.items.reshape(n, -1), downloads.mlp], 1).double().numpy()
    got_anchors = torch.cat([state["anchor_items"][SPARSE_CLIENTS].reshape(n, -1),
                             state["anchor_mlp"][SPARSE_CLIENTS]], 1).double().numpy()
    assert downloads.items.dtype == downloads.mlp.dtype == state["anchor_items"].dtype == dtype
    assert not state["anchor_items"][[4, 8]].any() and not state["anchor_mlp"][[4, 8]].any()
    assert downloads.stats["w_nonzero"] == pytest.approx(counts.mean(), rel=0, abs=1e-12)
    units = np.abs(thetas) / np.linalg.norm(thetas, axis=1, keepdims=True)
    if dtype == torch.float32:
        # The graph from the float32 Gram matrix, as the step builds it (tables and MLPs as two parts).
        # Worst case: the Gram sums F = 19 float32 products, so each cosine is off by <= 2 (F + 2) u
        # and each v_ij by that / (2 alpha); the projection is non-expansive, so row a_i moves by at
        # most sqrt(n) times that in l2, hence n times in l1.
        tables, mlps = pop.items[SPARSE_CLIENTS].reshape(n, -1), pop.mlp[SPARSE_CLIENTS]
        graph32 = module.graph_from_gram(module.update_gram([(tables, items0.reshape(-1)), (mlps, mlp0)]),
                                         torch.from_numpy(p), alpha).numpy()
        moved = np.abs(graph32 - graph)
        assert (moved.sum(1) <= n * 2 * (thetas.shape[1] + 2) * U32 / (2 * alpha)).all()
        assert ((graph32 > 0).sum(1) == counts).all()
    for got, want, sizes in ((got_blocks, blocks, np.abs(thetas)), (got_anchors, anchors, units)):
        terms = graph @ sizes  # sum_j a_ij |x_jk| >= |result_ik|
        if dtype == torch.float64:
            # float64 throughout: rounding is a few 1e-16 relative to these terms (Gram sums,
            # projection, products); 1e-12 leaves ~1000x
            assert (np.abs(got - want) <= 1e-12 * terms).all()
        else:
            # float32 (u = 2^-24): the products add k_i float32 terms with the weights cast to float32
            # once, |err| <= (k_i + 2) u sum_j a_ij |x_jk|; the graph's own rounding adds
            # sum_j |a32_ij - a_ij| |x_jk|
            bound = (counts[:, None] + 2) * U32 * (graph32 @ sizes) + moved @ sizes
            assert (np.abs(got - want) <= bound).all()


def _mixing_case(n=40, clients=50):
    """A graph with sparse rows (3 nonzeros of 40: the embedding_bag path), one all-zero row, and
    dense rows (every entry: the matrix-product path); norms, targets and sources of widths 37
    and 1 (float64), plus a source of width 0."""
    gen = torch.Generator().manual_seed(7)
    graph = torch.zeros(n, n, dtype=torch.float64)
    for row in range(30):
        graph[row, torch.randperm(n, generator=gen)[:3]] = torch.rand(3, generator=gen, dtype=torch.float64)
    graph[5] = 0.0
    graph[30:] = torch.rand(n - 30, n, generator=gen, dtype=torch.float64)
    norms = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    targets = torch.randperm(clients, generator=gen)[:n]
    sources = [torch.randn(n, width, generator=gen, dtype=torch.float64) for width in (37, 1, 0)]
    return graph, norms, targets, sources


@pytest.mark.parametrize("tile_bytes,chunk_bytes", [(None, None), (3 * 40 * 8, 5 * (2 * 37 + 2 * 40) * 8)])
def test_mix_of_sparse_and_dense_rows_equals_the_plain_products(monkeypatch, tile_bytes, chunk_bytes):
    # small tiles (3 columns) and chunks (5 dense rows) make both paths step through their loops
    if tile_bytes is not None:
        monkeypatch.setattr(module, "TILE_BYTES", tile_bytes)
        monkeypatch.setattr(module, "CHUNK_BYTES", chunk_bytes)
    graph, norms, targets, sources = _mixing_case()
    assert ((graph != 0).sum(1) <= module.DENSE_SHARE * 40).sum() == 30  # both paths are taken
    outputs = [(x, torch.full_like(x, float("nan")), torch.full((50, x.shape[1]), -7.0, dtype=torch.float64))
               for x in sources]
    module.mix(graph, norms, targets, outputs)
    a, scaled = graph.numpy(), (graph / norms.unsqueeze(0)).numpy()
    untouched = np.setdiff1d(np.arange(50), targets.numpy())
    for x, blocks, anchors in outputs:
        # float64; embedding_bag and the matrix product add in other orders than numpy: 1e-14
        np.testing.assert_allclose(blocks.numpy(), a @ x.numpy(), rtol=0, atol=1e-14)
        np.testing.assert_allclose(anchors.numpy()[targets.numpy()], scaled @ x.numpy(), rtol=0, atol=1e-14)
        assert (anchors.numpy()[untouched] == -7.0).all()  # clients outside targets keep their anchors
