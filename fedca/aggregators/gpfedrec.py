"""GPFedRec (Zhang et al., "GPFedRec: Graph-Guided Personalization for Federated
Recommendation", KDD 2024; official code Zhangcx19/GPFedRec at edb66e1; docs/methods/gpfedrec.md).
Use with ``method=gpfedrec`` (NCF on [u ; V[j]], plain SGD, one local epoch).

Each round, with q_1 .. q_n the participants' uploaded item tables (flattened, [n, I*d]):

1. *relation graph*: S [n, n], S_ij = sim(q_i, q_j). ``similarity=official``: the code's
   ``sklearn.pairwise_distances(metric="cosine")``, i.e. the cosine *distance* 1 - cos(q_i, q_j)
   (0 on the diagonal), used as it is, so the neighbours picked below are the *least* similar
   clients; ``cosine``: cos(q_i, q_j), the paper's similarity; ``euclidean``: -||q_i - q_j||
   (the code's rule for its other metrics).
2. *neighbourhoods*: with ``neighborhood_size`` k > 0, row i of A [n, n] is 1/k on the k largest
   S_ij (self included when it is among them); with k = 0 (the code's default), t = mean(S) *
   ``neighborhood_threshold`` over all n^2 entries and row i is 1/|N_i| on N_i = {j: S_ij > t},
   or 1 on the diagonal when N_i is empty.
3. *message passing*: r = A^L q, L = ``mp_layers``; r_i is client i's personalised table and
   q_global = (1/n) sum_i r_i the global table (``weighting=uniform``, the code; ``samples``:
   weighted by the participants' training instances).
4. *clients*: a participant loads q_global just before it trains (round 1: the shared initial
   table) and adds ``reg`` * mean over the I*d entries of (V - r_i)^2 (PyTorch's MSELoss) to
   its mean BCE, r_i its latest personalised table (the initial table until it has one). It is
   evaluated with the table it trained (the server's tables are not loaded for evaluation).

Not reproduced: the code's Laplace noise on uploads (its ``dp``, 0 by default); fedca's
``privacy.*`` noise applies instead. The code needs every client in every round (it indexes its
graph by user id); here any participant set works, and a client's r_i is kept until it takes
part again.
"""

from dataclasses import dataclass
from typing import Optional

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import WEIGHTINGS, AggConfig, Aggregator, Downloads, Proximal, data_weights, weight_stats


SIMILARITIES = ("official", "cosine", "euclidean")


def relation_scores(tables: torch.Tensor, similarity: str) -> torch.Tensor:
    """S [n, n] float64 from the flattened uploads ``tables`` [n, F] (step 1)."""
    flat = tables.double()
    if similarity == "euclidean":
        squared = flat.pow(2).sum(1)
        gaps = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * flat @ flat.T).clamp(min=0).sqrt()
        return -gaps.fill_diagonal_(0.0)
    norms = flat.norm(dim=1).clamp(min=1e-300)
    cosine = (flat @ flat.T) / (norms.unsqueeze(1) * norms.unsqueeze(0))
    if similarity == "cosine":
        return cosine
    return (1.0 - cosine).clamp(0.0, 2.0).fill_diagonal_(0.0)  # sklearn's cosine distance


def neighbourhoods(scores: torch.Tensor, size: int, threshold: float) -> torch.Tensor:
    """A [n, n] float64, rows summing to 1, from the relation scores S [n, n] (step 2)."""
    n = scores.shape[0]
    graph = torch.zeros_like(scores)
    if size > 0:
        picked = torch.topk(scores, min(size, n), dim=1).indices  # [n, k]
        graph.scatter_(1, picked, 1.0 / size)
        return graph
    above = scores > scores.mean() * threshold  # [n, n]
    counts = above.sum(1, keepdim=True)  # [n, 1]
    graph = above.double() / counts.clamp(min=1)
    lonely = torch.nonzero(counts.squeeze(1) == 0).squeeze(1)
    graph[lonely, lonely] = 1.0
    return graph


@dataclass
class GPFedRecAggConfig(AggConfig):
    """GPFedRec: a user-relation graph over the uploaded tables, graph-weighted personal tables as
    proximal targets (docs/methods/gpfedrec.md); defaults = the official code's."""

    similarity: str = declared("official", "official: the code's cosine distance (picks the least similar); "
                                           "cosine; euclidean", choices=SIMILARITIES)
    neighborhood_size: int = declared(0, "k > 0: the k highest scores, 1/k each; 0: scores above mean * threshold",
                                     range="[0, inf)")
    neighborhood_threshold: float = declared(1.0, "the threshold of neighborhood_size=0", range="[0, inf)")
    mp_layers: int = declared(1, "message-passing layers L: r = A^L q (A^L has converged long before 64)",
                             range="[1, 64]")
    reg: float = declared(1.0, "weight of the proximal term (mean squared difference to r_i); 0: off",
                         range="[0, inf)")
    weighting: str = declared("uniform", "the global table: uniform, the code's plain mean of r; samples",
                              choices=WEIGHTINGS)

    def local_term(self):
        return ("proximal", "agg.reg") if self.reg > 0 else None


class GPFedRec(Aggregator):
    """Graph-weighted personal tables as proximal targets; participants train from their mean."""

    name = "gpfedrec"
    config = GPFedRecAggConfig
    averages_mlp = False

    def __init__(self, *, similarity: str = "official", neighborhood_size: int = 0,
                 neighborhood_threshold: float = 1.0, mp_layers: int = 1, reg: float = 1.0,
                 weighting: str = "uniform"):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}")
        if neighborhood_size < 0 or mp_layers < 1 or reg < 0:
            raise ValueError("neighborhood_size must be >= 0, mp_layers >= 1 and reg >= 0")
        self.similarity, self.size, self.threshold = similarity, neighborhood_size, neighborhood_threshold
        self.mp_layers, self.reg, self.weighting = mp_layers, reg, weighting

    def start(self, items, mlp, users=None):
        """global: q_global [I, d]; personal: r [N, I, d] once a round has produced one (None
        before: every target is the initial table ``items0``)."""
        return {"items0": items.clone(), "global": items.clone(), "personal": None}

    def before_training(self, participants, state, round_index):
        return Downloads(kind="global", items=state["global"], clients=participants)

    def proximal(self, clients, state) -> Optional[Proximal]:
        if not self.reg:
            return None
        if state["personal"] is None:
            target = state["items0"].unsqueeze(0).expand(clients.numel(), -1, -1)
        else:
            target = state["personal"][clients]
        return Proximal(target=target, coef=self.reg / state["items0"].numel())

    def aggregate(self, uploads, state, ctx):
        n = uploads.clients.numel()
        tables = uploads.item_tables(torch.arange(n))  # [n, I, d]
        flat = tables.reshape(n, -1)
        graph = neighbourhoods(relation_scores(flat, self.similarity), self.size, self.threshold)
        personal = flat
        for _ in range(self.mp_layers):
            personal = graph.to(flat) @ personal  # [n, I*d]
        personal = personal.reshape(tables.shape)
        stored = state["personal"]
        if stored is None:
            stored = state["items0"].unsqueeze(0).repeat(uploads.num_clients, 1, 1)
        stored[uploads.clients] = personal
        weights = data_weights(uploads.sample_counts, self.weighting).to(personal)  # [n]
        new_global = torch.einsum("n,nid->id", weights, personal)  # [I, d]
        stats = {**weight_stats(graph), "global_change": float((new_global - state["global"]).norm())}
        return Downloads(kind="none", stats=stats), {**state, "global": new_global, "personal": stored}

    def cold_start(self, uploads, state, downloads):
        """The global table; user vector and MLP stay the device's template."""
        return Downloads(kind="global", items=state["global"])
