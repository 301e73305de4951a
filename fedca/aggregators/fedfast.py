"""FedFast (Muhammad et al., "FedFast: Going Beyond Average for Faster Training of Federated
Recommender Systems", KDD 2020; no official code; docs/methods/fedfast.md, reconstructed there).

The server holds every user's vector (declared in ``reveals``). Each round:

* ActvSAMP: K-means on the user vectors (K = ``clusters``, 0 = one per delegate); m =
  floor(N * delegates_ratio) delegates drawn from every cluster in proportion to its size;
* ActvAGG: Theta by data-size FedAvg; each item row j by the delegates' update sizes,
  g_kj = ||V_k[j] - V[j]||: V[j] <- sum_k g_kj V_k[j] / sum_k g_kj (unchanged when no delegate
  moved it); every client loads the new (V, Theta);
* each non-delegate of a cluster with delegates adds gamma_t times the mean user-vector change
  of its cluster's delegates, gamma_t = gamma0 * gamma_decay^t (t = 0-based round);
* re-cluster on the updated user vectors.
"""

from dataclasses import dataclass

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import USER_VECTORS, AggConfig, Aggregator, Downloads, data_weights
from fedca.aggregators.clustering import cluster_means, kmeans, stratified_sample
from fedca.config.rules import require
from fedca.metrics.means import exact_mean


@dataclass
class FedFastAggConfig(AggConfig):
    """FedFast: clustered delegates, update-size weighted rows, user-vector propagation (docs/methods/fedfast.md)."""

    delegates_ratio: float = declared(0.1, "m = floor(N * delegates_ratio) clients train per round (replaces "
                                           "clients_sample_ratio)", range="(0, 1]")
    clusters: int = declared(0, "K for K-means; 0: one cluster per delegate (K = m)", range="[0, inf)")
    gamma0: float = declared(1.0, "propagation step at round 1 ...", range="[0, inf)")
    gamma_decay: float = declared(0.9, "... times gamma_decay per round", range="[0, 1]")

    def check(self, run) -> None:
        super().check(run)
        require(run.clients_sample_ratio == 1.0, "clients_sample_ratio", run.clients_sample_ratio,
                "FedFast picks its own delegates; set agg.delegates_ratio instead")


class FedFast(Aggregator):
    """Cluster-stratified delegates, update-size weighted item rows, user-vector propagation."""

    name = "fedfast"
    config = FedFastAggConfig
    reveals = (USER_VECTORS,)

    def __init__(self, *, delegates_ratio: float = 0.1, clusters: int = 0, gamma0: float = 1.0,
                 gamma_decay: float = 0.9, weighting: str = "samples"):
        if not 0 < delegates_ratio <= 1:
            raise ValueError("delegates_ratio must be in (0, 1]")
        self.delegates_ratio, self.clusters = delegates_ratio, clusters
        self.gamma0, self.gamma_decay, self.weighting = gamma0, gamma_decay, weighting

    def _delegates(self, num_clients: int) -> int:
        return max(1, int(num_clients * self.delegates_ratio))

    def _num_clusters(self, num_clients: int) -> int:
        return self.clusters or self._delegates(num_clients)

    def start(self, items, mlp, users=None):
        return {"items": items.clone(), "mlp": mlp.clone(), "users": users.clone(), "assignment": None}

    def select(self, count, num_clients, state, generator):
        """Delegates of this round; clusters the initial user vectors on the first call."""
        if state["assignment"] is None:
            state["assignment"] = kmeans(state["users"], self._num_clusters(num_clients), generator)
        return stratified_sample(state["assignment"], self._delegates(num_clients), generator)

    def aggregate(self, uploads, state, ctx):
        n = uploads.clients.numel()
        everyone = torch.arange(n)
        tables = uploads.item_tables(everyone)  # [n, I, d]
        change = (tables - state["items"].unsqueeze(0)).norm(dim=2)  # [n, I]: g_kj
        total = change.sum(0)  # [I]
        row_weights = change / total.clamp(min=1e-30)  # [n, I]
        mixed = torch.einsum("ni,nid->id", row_weights, tables)  # [I, d]
        items = torch.where((total > 0).unsqueeze(1), mixed, state["items"])
        mlp = uploads.weighted_mlp(data_weights(uploads.sample_counts, self.weighting))  # [P]

        assignment, users = state["assignment"], state["users"].clone()
        num_clusters = int(assignment.max()) + 1
        delegate_clusters = assignment[uploads.clients]  # [n]
        trained = uploads.user_vectors(everyone).to(users)  # [n, d]
        mean_change = cluster_means(trained - users[uploads.clients], delegate_clusters, num_clusters,
                                    torch.zeros(users.shape[1], dtype=users.dtype))  # [K, d]
        has_delegate = torch.bincount(delegate_clusters, minlength=num_clusters) > 0  # [K]
        candidate = has_delegate[assignment]  # [N]
        candidate[uploads.clients] = False
        candidates = torch.nonzero(candidate).squeeze(1)
        gamma = self.gamma0 * self.gamma_decay ** ctx.round
        delta = gamma * mean_change[assignment[candidates]]  # [c, d]
        users[uploads.clients] = trained
        users[candidates] += delta
        state = {"items": items, "mlp": mlp, "users": users,
                 "assignment": kmeans(users, self._num_clusters(users.shape[0]), ctx.generator)}
        stats = {"delegates": n, "propagated": int(candidates.numel()), "gamma": gamma,
                 "rows_changed": exact_mean(total > 0)}
        return Downloads(kind="global", items=items, mlp=mlp, user_clients=candidates, user_delta=delta,
                         stats=stats), state
