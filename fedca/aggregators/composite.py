"""FedCA composite aggregation (Zhang et al., "Beyond Similarity", 2024; docs/methods/composite.md).

Per round, for a uniform subset A of m = floor(n * agg_clients_ratio) participants:

* S [m, m]: negated model similarity from PCA-1 scores of each whole item table (step 5);
* C [m, m]: complementarity from the principal angles between the clients' top-k bases of
  their trained item rows (step 6);
* W = row-wise projection onto the simplex of ``w_comp * comp_sign * C - w_sim * S + p``, the
  closed form of the official per-client QP (step 7; D1: the code's alpha is w_comp, beta w_sim);
* each client in A receives its personal aggregate W_i @ (V, Theta) and keeps ``interpolation``
  of its own block (step 8 and D8). Everyone else receives nothing this round (D7).
"""

from dataclasses import dataclass
from typing import Optional

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import TRAINED_ITEMS, AggConfig, Aggregator, Downloads, data_weights, weight_stats
from fedca.aggregators.simplex import project_rows_to_simplex
from fedca.aggregators.subspace import (COMPLEMENTARITY_METRICS, SIGN_RULES, complementarity_matrix, pca1_scores,
                                        principal_bases, similarity_matrix)
from fedca.config.rules import require
from fedca.metrics.means import exact_mean


@dataclass
class CompositeAggConfig(AggConfig):
    """FedCA composite aggregation (docs/methods/composite.md); defaults = the official code's.

    ``w_sim``/``w_comp`` weigh model similarity and data complementarity. The official code
    calls them ``beta`` and ``alpha`` respectively (its README says the opposite, D1); set
    ``alpha``/``beta`` to use the code's meaning: alpha, when set, is the w_comp the run uses and
    beta the w_sim (``scheduled_values``; the config keeps what was written).
    """

    w_sim: float = declared(0.3, "weight of model similarity (the code's beta)", range="[0, inf)")
    w_comp: float = declared(0.3, "weight of data complementarity (the code's alpha)", range="[0, inf)")
    alpha: Optional[float] = declared(None, "the code's name for w_comp; when set, the w_comp the run uses",
                                      range="[0, inf)")
    beta: Optional[float] = declared(None, "the code's name for w_sim; when set, the w_sim the run uses",
                                     range="[0, inf)")
    comp_sign: int = declared(1, "+1: official (rewards aligned subspaces); -1: FedSaC-style", choices=(1, -1))
    comp_metric: str = declared("greedy_signed", "greedy_signed: the official greedy signed matching; svd: true "
                                                 "principal angles", choices=COMPLEMENTARITY_METRICS)
    pca_sign_rule: str = declared("scores", "scores: scikit-learn 1.0.2 (the reference environment); components: "
                                            "scikit-learn >= 1.5", choices=SIGN_RULES)
    k_principal: int = declared(4, "principal directions per client, at most latent_dim", range="[1, inf)")
    agg_clients_ratio: float = declared(0.1, "share of this round's trained clients that are aggregated",
                                        range="(0, 1]")
    interpolation: float = declared(0.9, "weight of the client's own table when it receives its aggregate",
                                    range="[0, 1]")

    def check(self, run) -> None:
        super().check(run)
        require(self.k_principal <= run.model.latent_dim, "agg.k_principal", self.k_principal,
                f"must be in [1, model.latent_dim={run.model.latent_dim}]")

    def scheduled_values(self):
        """w_sim, w_comp (the code's ``beta`` and ``alpha`` when set: the alias wins) and interpolation."""
        return {"w_sim": float(self.w_sim if self.beta is None else self.beta),
                "w_comp": float(self.w_comp if self.alpha is None else self.alpha),
                "interpolation": float(self.interpolation)}


class Composite(Aggregator):
    """Personalised aggregation weighted by model similarity and data complementarity."""

    name = "composite"
    config = CompositeAggConfig
    reveals = (TRAINED_ITEMS,)  # the bases come from the rows of this round's instances (D10)

    def __init__(self, *, k_principal: int = 4, agg_clients_ratio: float = 0.1, comp_sign: int = 1,
                 comp_metric: str = "greedy_signed", pca_sign_rule: str = "scores", weighting: str = "samples"):
        if not 0 < agg_clients_ratio <= 1:
            raise ValueError("agg_clients_ratio must be in (0, 1]")
        if comp_sign not in (1, -1):
            raise ValueError("comp_sign must be +1 or -1")
        self.k_principal = k_principal
        self.agg_clients_ratio = agg_clients_ratio
        self.comp_sign = comp_sign
        self.comp_metric = comp_metric
        self.pca_sign_rule = pca_sign_rule
        self.weighting = weighting

    def weight_matrix(self, tables: torch.Tensor, counts: torch.Tensor, sample_counts: torch.Tensor,
                      w_sim: float, w_comp: float) -> tuple:
        """W [m, m] float64 (rows on the simplex) with S and C, from tables [m, I, d], counts [m, I]
        and sample_counts [m]. A zero weight switches its matrix off (the official gating)."""
        m = tables.shape[0]
        zeros = torch.zeros(m, m, dtype=torch.float64)
        similarity = similarity_matrix(pca1_scores(tables, self.pca_sign_rule)).cpu() if w_sim else zeros
        complementarity = zeros
        if w_comp:
            bases = principal_bases(tables, counts.to(tables.device), self.k_principal, self.pca_sign_rule)
            complementarity = complementarity_matrix(bases, self.comp_metric).cpu()
        p = data_weights(sample_counts, self.weighting)  # [m]
        target = w_comp * self.comp_sign * complementarity - w_sim * similarity + p.unsqueeze(0)  # [m, m]
        return project_rows_to_simplex(target), similarity, complementarity

    def aggregate(self, uploads, state, ctx):
        n = uploads.clients.numel()
        m = int(n * self.agg_clients_ratio)
        if m == 0:
            return Downloads(kind="none"), state
        picked = torch.randperm(n, generator=ctx.generator)[:m]  # [m] positions among participants
        tables = uploads.item_tables(picked)  # [m, I, d]
        counts = uploads.item_counts(picked)  # [m, I]
        weights, similarity, complementarity = self.weight_matrix(
            tables, counts, uploads.sample_counts[picked], ctx.weights["w_sim"], ctx.weights["w_comp"])
        mixing = weights.to(tables)  # [m, m]
        items = (mixing @ tables.reshape(m, -1)).reshape(tables.shape)  # [m, I, d]
        mlp = mixing @ uploads.mlp(picked)  # [m, P]
        stats = weight_stats(weights)
        stats.update(s_mean=exact_mean(similarity), c_mean=exact_mean(complementarity), aggregated=m,
                     untrained_share=exact_mean(counts == 0))
        return Downloads(kind="personal", items=items, mlp=mlp, clients=uploads.clients[picked],
                         keep_local=ctx.weights["interpolation"], stats=stats), state
