"""pFedGraph (Ye et al., "Personalized Federated Learning with Inferred Collaboration Graphs",
ICML 2023; official code MediaBrain-SJTU/pFedGraph; docs/methods/pfedgraph.md).

With theta_i = (V_i, Theta_i) the participants' trained blocks and theta^0 the initial global
block (fixed for the run), the server infers a collaboration graph:

    cos_ij = cos(theta_i - theta^0, theta_j - theta^0)       (``similarity=all``; ``mlp``: Theta only)
    d_ij = -cos_ij, set to -1 where d_ij < -0.9 (so d_ii = -1)
    a_i = argmin_{x in simplex} alpha x^T x + (d_i - 2 alpha p)^T x = project(p - d_i / (2 alpha))

and sends client i the personal block sum_j a_ij theta_j, which it loads in place of its own,
plus the anchor kappa_i = sum_j a_ij theta_j / ||theta_j|| for the next round's local loss term
``reg_sign * lam * <kappa_i, theta / ||theta||>`` (reg_sign -1: the paper, which maximises the
similarity to the aggregate; +1: the official code's sign).

The step works on chunks of rows: the Gram matrix of the updates block by block (``update_gram``),
the graph row chunk by row chunk (``graph_from_gram``), and both products from the nonzeros of A
(``mix``: one sparse pattern for blocks and anchors, column tile by column tile; rows with many
nonzeros by a dense GEMM, chunk by chunk).
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import AggConfig, Aggregator, Anchors, Downloads, data_weights, weight_stats
from fedca.aggregators.simplex import project_rows_to_simplex


SIMILARITIES = ("all", "mlp")

# Bytes of one chunk's temporaries: the Gram matrix, the graph and the dense products work on blocks
# of rows of this size, never on all n at once.
CHUNK_BYTES = 1 << 28
# Bytes of one column tile of the tables [n, f] in the sparse products: small enough to stay in cache
# while the nonzeros of all rows read it (a sparse product reads a row of the source per nonzero).
TILE_BYTES = 1 << 22
# Rows of the graph with more nonzeros than this share of n are mixed by a dense GEMM instead (which,
# per multiply-add, runs several times faster than the sparse product).
DENSE_SHARE = 0.15


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk when one row of a chunk's temporaries takes ``row_bytes`` bytes."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def tile_columns(rows: int, element_size: int) -> int:
    """Columns per tile of a [rows, f] source in the sparse products."""
    return max(1, TILE_BYTES // max(1, rows * element_size))


def update_gram(parts: Sequence[Tuple[torch.Tensor, Optional[torch.Tensor]]]) -> torch.Tensor:
    """G [n, n] float64, G_ij = sum_k <x_ki - o_k, x_kj - o_k> over the ``parts`` (x_k [n, F_k] in
    its own dtype, origin o_k [F_k] or None for 0), without forming the updates of all n rows.

    Per pair of row blocks (a <= b) the updates of the two blocks are formed, multiplied in the
    parts' dtype and added up in float64; the block (b, a) is the transpose of (a, b)."""
    parts = [(x, o) for x, o in parts if x.shape[1] > 0] or list(parts[:1])
    n = parts[0][0].shape[0]
    device = parts[0][0].device
    gram = torch.zeros(n, n, dtype=torch.float64, device=device)
    rows = chunk_rows(sum(x.shape[1] * x.element_size() for x, _ in parts))
    starts = list(range(0, n, rows))

    def updates(start):
        return [x[start:start + rows] if o is None else x[start:start + rows] - o for x, o in parts]

    for position, a in enumerate(starts):
        left = updates(a)
        for b in starts[position:]:
            right = left if b == a else updates(b)
            block = sum((u @ v.T).double() for u, v in zip(left, right))
            gram[a:a + rows, b:b + rows] = block
            if b != a:
                gram[b:b + rows, a:a + rows] = block.T
            del right
    return gram


def graph_from_gram(gram: torch.Tensor, p: torch.Tensor, alpha: float) -> torch.Tensor:
    """A [n, n] float64 from the Gram matrix of the updates (overwritten with A, row chunk by row
    chunk: distances, the -0.9 threshold and the simplex projection are per row)."""
    n = gram.shape[0]
    norms = gram.diagonal().clamp(min=1e-300).sqrt()  # [n]
    p = p.to(device=gram.device, dtype=torch.float64).unsqueeze(0)
    rows = chunk_rows(8 * n * gram.element_size())  # ~8 [rows, n] temporaries in the projection
    for start in range(0, n, rows):
        block = gram[start:start + rows]
        distance = -block / (norms.unsqueeze(0) * norms[start:start + rows].unsqueeze(1))
        distance = torch.where(distance < -0.9, torch.full_like(distance, -1.0), distance)
        block.copy_(project_rows_to_simplex(p - distance / (2 * alpha)))
    return gram


def collaboration_graph(deltas: torch.Tensor, p: torch.Tensor, alpha: float) -> torch.Tensor:
    """A [n, n] float64, rows on the simplex, from the flattened updates ``deltas`` [n, F] and the
    data weights p [n]."""
    return graph_from_gram(update_gram([(deltas, None)]), p, alpha)


def mix(graph: torch.Tensor, norms: torch.Tensor, targets: torch.Tensor,
        outputs: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """For each (source x [n, W], blocks [n, W], anchors [N, W]) of ``outputs``: blocks[i] =
    sum_j a_ij x_j and anchors[targets[i]] = sum_j a_ij x_j / norms_j, the weights divided in
    float64 and cast to x's dtype.

    Rows of A with at most ``DENSE_SHARE * n`` nonzeros: their nonzeros in CSR layout, 2n rows
    (blocks' weights, then anchors', one pattern), each row a weighted sum of rows of x
    (``embedding_bag``), column tile by column tile. The other rows: a dense [2c, n] mixing matrix
    per chunk of c rows times x."""
    n = graph.shape[0]
    outputs = [output for output in outputs if output[0].shape[1] > 0]
    nonzero = graph != 0  # [n, n]
    dense = nonzero.sum(1) > DENSE_SHARE * n  # [n]
    nonzero[dense] = False
    counts = nonzero.sum(1)
    if outputs and counts.any():
        starts = torch.zeros(2 * n, dtype=torch.int64, device=graph.device)  # where each of the 2n rows starts
        starts[1:] = counts.repeat(2).cumsum(0)[:-1]
        rows, col = nonzero.nonzero().unbind(1)  # row-major: the columns of row 0, then of row 1, ...
        values = graph[rows, col]
        values = torch.cat([values, values / norms[col]])
        col = col.repeat(2)
        del nonzero, rows
        for source, blocks, anchors in outputs:
            weights = values.to(source)
            step = tile_columns(n, source.element_size())
            for start in range(0, source.shape[1], step):
                columns = slice(start, start + step)
                mixed = torch.nn.functional.embedding_bag(col, source[:, columns], starts, mode="sum",
                                                          per_sample_weights=weights)  # [2n, f]; dense rows: 0
                blocks[:, columns] = mixed[:n]
                anchors[targets, columns] = mixed[n:]
    dense = dense.nonzero()[:, 0]
    for source, blocks, anchors in outputs:
        step = chunk_rows((2 * source.shape[1] + 2 * n) * source.element_size())
        for start in range(0, dense.numel(), step):
            rows = dense[start:start + step]
            weights = graph[rows]
            mixed = torch.cat([weights, weights / norms.unsqueeze(0)]).to(source) @ source  # [2c, W]
            blocks[rows] = mixed[:rows.numel()]
            anchors[targets[rows]] = mixed[rows.numel():]


@dataclass
class PFedGraphAggConfig(AggConfig):
    """pFedGraph: graph from update cosines, simplex weights, cosine pull (docs/methods/pfedgraph.md)."""

    alpha: float = declared(0.8, "lambda of the graph QP: a_i = project(p + cos_i / (2 alpha))", range="(0, inf)")
    similarity: str = declared("all", "all: cosines over (V, Theta); mlp: Theta only (the code's fc layers)",
                                 choices=SIMILARITIES)
    lam: float = declared(0.01, "strength of the cosine pull to the anchor in the local loss (0: off)",
                         range="[0, inf)")
    reg_sign: int = declared(-1, "-1: the paper, maximise similarity to the aggregate; +1: the official code's sign",
                             choices=(1, -1))

    def local_term(self):
        return ("pull", "agg.lam") if self.lam > 0 else None


class PFedGraph(Aggregator):
    """Personalised blocks from a graph of update similarities; a cosine pull to the anchor."""

    name = "pfedgraph"
    config = PFedGraphAggConfig

    def __init__(self, *, alpha: float = 0.8, similarity: str = "all", lam: float = 0.01, reg_sign: int = -1,
                 weighting: str = "samples"):
        if alpha <= 0:
            raise ValueError("alpha must be > 0")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}")
        if reg_sign not in (1, -1):
            raise ValueError("reg_sign must be +1 or -1")
        self.alpha, self.similarity, self.lam, self.reg_sign = alpha, similarity, lam, reg_sign
        self.weighting = weighting

    def start(self, items, mlp, users=None):
        return {"items0": items.clone(), "mlp0": mlp.clone(), "anchor_items": None, "anchor_mlp": None}

    def anchors(self, clients, state):
        if state["anchor_items"] is None or not self.lam:
            return None
        return Anchors(items=state["anchor_items"][clients], mlp=state["anchor_mlp"][clients], strength=self.lam,
                       sign=self.reg_sign)

    def aggregate(self, uploads, state, ctx):
        n = uploads.clients.numel()
        everyone = torch.arange(n)
        tables = uploads.item_tables(everyone).reshape(n, -1)  # [n, I*d]
        mlps = uploads.mlp(everyone)  # [n, P]
        parts = [(mlps, state["mlp0"])]
        if self.similarity == "all":
            parts.insert(0, (tables, state["items0"].reshape(-1)))
        graph = graph_from_gram(update_gram(parts), data_weights(uploads.sample_counts, self.weighting), self.alpha)
        width = tables.shape[1] + mlps.shape[1]
        rows = chunk_rows(2 * width * 8)  # a float64 copy of the rows and its squares
        model_norms = torch.cat([tables[s:s + rows].double().pow(2).sum(1) + mlps[s:s + rows].double().pow(2).sum(1)
                                 for s in range(0, n, rows)]).sqrt()  # [n]
        if state["anchor_items"] is None:
            total = (uploads.num_clients, *state["items0"].shape)
            state = {**state, "anchor_items": torch.zeros(total, dtype=tables.dtype, device=tables.device),
                     "anchor_mlp": torch.zeros(uploads.num_clients, mlps.shape[1], dtype=mlps.dtype,
                                               device=mlps.device)}
        items, mlp = torch.empty_like(tables), torch.empty_like(mlps)  # [n, I*d], [n, P] personal blocks
        targets = uploads.clients.to(tables.device)
        mix(graph, model_norms, targets, [(tables, items, state["anchor_items"].view(uploads.num_clients, -1)),
                                          (mlps, mlp, state["anchor_mlp"])])
        stats = weight_stats(graph)
        return Downloads(kind="personal", items=items.reshape(n, *state["items0"].shape), mlp=mlp,
                         clients=uploads.clients, stats=stats), state
