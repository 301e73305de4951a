"""PerFedRec (Luo, Xiao, Song, "Personalized Federated Recommendation via Joint Representation
Learning, User Clustering, and Model Adaptation", CIKM 2022; official code sichunluo/PerFedRec;
docs/methods/perfedrec.md) on the MF/NCF backbones.

Each round the server keeps a global block omega (unweighted mean of the participants' (V, Theta))
and K cluster blocks omega_c (mean over the participants of cluster c under the clustering the
round started with; an empty cluster gets omega), then re-clusters all clients with K-means on
their features: the user vectors (``cluster_on=user``, the code's choice: the server sees them)
or the count-weighted mean of each client's trained item rows (``trained_items``, a signature
computed on the client). Participants start training from omega (round 2) and from their
cluster's block (from round ``cluster_start_round`` on, 3 in the code); between rounds a
client keeps its own trained block. At evaluation a client's score is the mean of the sigmoid
scores of its own, its cluster's and the global block ("model adaptation").

With ``clients_sample_ratio`` < 1 the server picks the participants: ``sampling=code`` takes
half uniformly and half with replacement in proportion to the size of each user's cluster
(duplicates topped up uniformly); ``stratified`` (PerFedRec++) draws from every cluster in
proportion to its size.
"""

from dataclasses import dataclass

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import WEIGHTINGS, USER_VECTORS, AggConfig, Aggregator, Downloads, Experts, data_weights
from fedca.aggregators.clustering import cluster_means, kmeans, stratified_sample


CLUSTER_FEATURES = ("user", "trained_items")
SAMPLINGS = ("code", "stratified")
ITEM_SIGNATURE = "mean trained item row per client"


def code_sample(assignment: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """[count] clients (ascending): half uniform, half in proportion to cluster size, topped up."""
    num_clients = assignment.numel()
    uniform = torch.randperm(num_clients, generator=generator)[:count // 2]
    weights = torch.bincount(assignment).double()[assignment]  # [N]: size of each client's cluster
    drawn = torch.multinomial(weights, count - count // 2, replacement=True, generator=generator)
    chosen = torch.zeros(num_clients, dtype=torch.bool)
    chosen[uniform] = True
    chosen[drawn] = True
    rest = torch.nonzero(~chosen).squeeze(1)
    missing = count - int(chosen.sum())
    chosen[rest[torch.randperm(rest.numel(), generator=generator)[:missing]]] = True
    return torch.nonzero(chosen).squeeze(1)


@dataclass
class PerFedRecAggConfig(AggConfig):
    """PerFedRec: global + cluster blocks, three-model score averaging (docs/methods/perfedrec.md)."""

    clusters: int = declared(5, "K cluster blocks", range="[1, inf)")
    cluster_on: str = declared("user", "user: K-means on user vectors (the code; the server sees them); "
                                       "trained_items", choices=CLUSTER_FEATURES)
    sampling: str = declared("code", "with clients_sample_ratio < 1: code (half uniform, half by cluster size); "
                                     "stratified", choices=SAMPLINGS)
    cluster_start_round: int = declared(3, "1-based round from which participants start from their cluster's block",
                                       range="[1, inf)")
    weighting: str = declared("uniform", "the code's means are unweighted (uniform); samples", choices=WEIGHTINGS)


class PerFedRec(Aggregator):
    """Global + cluster blocks from K-means clustering; three-model score averaging."""

    name = "perfedrec"
    config = PerFedRecAggConfig

    def __init__(self, *, clusters: int = 5, cluster_on: str = "user", sampling: str = "code",
                 cluster_start_round: int = 3):
        if cluster_on not in CLUSTER_FEATURES:
            raise ValueError(f"cluster_on must be one of {CLUSTER_FEATURES}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}")
        self.clusters, self.cluster_on, self.sampling = clusters, cluster_on, sampling
        self.cluster_start_round = cluster_start_round
        self.reveals = (USER_VECTORS,) if cluster_on == "user" else (ITEM_SIGNATURE,)

    def start(self, items, mlp, users=None):
        return {"items": items.clone(), "mlp": mlp.clone(), "features": users, "assignment": None,
                "cluster_items": None, "cluster_mlp": None, "model_of": None}

    def select(self, count, num_clients, state, generator):
        if count >= num_clients or state["assignment"] is None:
            return None
        if self.sampling == "stratified":
            return stratified_sample(state["assignment"], count, generator)
        return code_sample(state["assignment"], count, generator)

    def before_training(self, participants, state, round_index):
        if round_index == 0:
            return Downloads(kind="none")
        if round_index + 1 < self.cluster_start_round:
            return Downloads(kind="global", items=state["items"], mlp=state["mlp"], clients=participants)
        model = state["model_of"][participants]  # [n]
        return Downloads(kind="personal", items=state["cluster_items"][model], mlp=state["cluster_mlp"][model],
                         clients=participants)

    def experts(self, state):
        if state["model_of"] is None:
            return []
        everyone = torch.zeros_like(state["model_of"])
        return [Experts(items=state["items"].unsqueeze(0), mlp=state["mlp"].unsqueeze(0), assignment=everyone),
                Experts(items=state["cluster_items"], mlp=state["cluster_mlp"], assignment=state["model_of"])]

    def _features(self, uploads, everyone, state) -> torch.Tensor:
        """[N, f] clustering features with this round's participants updated."""
        features = state["features"]
        if features is None:  # trained_items: no signature before a client's first upload
            features = torch.zeros(uploads.num_clients, state["items"].shape[1], dtype=torch.float64)
        features = features.clone()
        if self.cluster_on == "user":
            features[uploads.clients] = uploads.user_vectors(everyone).to(features)
        else:
            counts = uploads.item_counts(everyone)  # [n, I]
            tables = uploads.item_tables(everyone).double()  # [n, I, d]
            features[uploads.clients] = torch.einsum("ni,nid->nd", counts, tables) / counts.sum(1, keepdim=True)
        return features

    def aggregate(self, uploads, state, ctx):
        n = uploads.clients.numel()
        everyone = torch.arange(n)
        uniform = data_weights(uploads.sample_counts, "uniform")  # [n]
        items, mlp = uploads.weighted_items(uniform), uploads.weighted_mlp(uniform)  # [I, d], [P]
        assignment = state["assignment"]
        if assignment is None:
            assignment = torch.zeros(uploads.num_clients, dtype=torch.long)
        groups = assignment[uploads.clients]  # [n]
        cluster_items = cluster_means(uploads.item_tables(everyone), groups, self.clusters, items)  # [K, I, d]
        cluster_mlp = cluster_means(uploads.mlp(everyone), groups, self.clusters, mlp)  # [K, P]
        features = self._features(uploads, everyone, state)
        state = {"items": items, "mlp": mlp, "features": features, "model_of": assignment,
                 "cluster_items": cluster_items, "cluster_mlp": cluster_mlp,
                 "assignment": kmeans(features, self.clusters, ctx.generator)}
        sizes = torch.bincount(state["assignment"], minlength=self.clusters).double()
        stats = {"largest_cluster": float(sizes.max() / sizes.sum()), "clusters_used": int((sizes > 0).sum())}
        return Downloads(kind="none", stats=stats), state

    def cold_start(self, uploads, state, downloads):
        """The global block (a new device belongs to no cluster yet)."""
        return Downloads(kind="global", items=state["items"], mlp=state["mlp"])
