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
"""

from dataclasses import dataclass

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import AggConfig, Aggregator, Anchors, Downloads, data_weights, weight_stats
from fedca.aggregators.simplex import project_rows_to_simplex


SIMILARITIES = ("all", "mlp")


def collaboration_graph(deltas: torch.Tensor, p: torch.Tensor, alpha: float) -> torch.Tensor:
    """A [n, n] float64, rows on the simplex, from the flattened updates ``deltas`` [n, F] and the
    data weights p [n]."""
    gram = (deltas @ deltas.T).double()  # [n, n]
    norms = gram.diagonal().clamp(min=1e-300).sqrt()
    distance = -gram / (norms.unsqueeze(0) * norms.unsqueeze(1))  # [n, n]
    distance = torch.where(distance < -0.9, torch.full_like(distance, -1.0), distance)
    return project_rows_to_simplex(p.unsqueeze(0) - distance / (2 * alpha))


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
        mlp_deltas = mlps - state["mlp0"].unsqueeze(0)
        if self.similarity == "all":
            deltas = torch.cat([tables - state["items0"].reshape(1, -1), mlp_deltas], dim=1)  # [n, I*d + P]
        else:
            deltas = mlp_deltas
        graph = collaboration_graph(deltas, data_weights(uploads.sample_counts, self.weighting), self.alpha)
        del deltas
        model_norms = (tables.double().pow(2).sum(1) + mlps.double().pow(2).sum(1)).sqrt()  # [n]
        mixing = torch.cat([graph, graph / model_norms.unsqueeze(0)]).to(tables)  # [2n, n]: blocks, anchors
        items = mixing @ tables  # [2n, I*d]
        mlp = mixing @ mlps  # [2n, P]
        shape = (n, *state["items0"].shape)
        if state["anchor_items"] is None:
            total = (uploads.num_clients, *state["items0"].shape)
            state = {**state, "anchor_items": torch.zeros(total, dtype=tables.dtype, device=tables.device),
                     "anchor_mlp": torch.zeros(uploads.num_clients, mlps.shape[1], dtype=mlps.dtype,
                                               device=mlps.device)}
        state["anchor_items"][uploads.clients] = items[n:].reshape(shape)
        state["anchor_mlp"][uploads.clients] = mlp[n:]
        stats = weight_stats(graph)
        return Downloads(kind="personal", items=items[:n].reshape(shape), mlp=mlp[:n], clients=uploads.clients,
                         stats=stats), state
