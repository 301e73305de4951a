"""Build an aggregator from its config (the only place that reads agg config fields)."""

from fedca.aggregators.base import Aggregator
from fedca.aggregators.composite import Composite
from fedca.aggregators.fcf import FCF
from fedca.aggregators.fedatt import FedAtt
from fedca.aggregators.fedavg import FedAvg
from fedca.aggregators.fedper import FedPer
from fedca.aggregators.fedfast import FedFast
from fedca.aggregators.gpfedrec import GPFedRec
from fedca.aggregators.local import LocalOnly
from fedca.aggregators.perfedrec import PerFedRec
from fedca.aggregators.pfedgraph import PFedGraph
from fedca.aggregators.pfedrec import PFedRec


def build_aggregator(agg_cfg, mlp_layers=()) -> Aggregator:
    """The aggregator named by ``agg_cfg.name`` with its settings (``mlp_layers``: the backbone's
    MLP widths, for aggregators that treat MLP layers separately)."""
    if agg_cfg.name == "local":
        return LocalOnly()
    if agg_cfg.name == "fedavg":
        return FedAvg(weighting=agg_cfg.weighting)
    if agg_cfg.name == "fcf":
        return FCF(weighting=agg_cfg.weighting)
    if agg_cfg.name == "composite":
        return Composite(k_principal=agg_cfg.k_principal, agg_clients_ratio=agg_cfg.agg_clients_ratio,
                         comp_sign=agg_cfg.comp_sign, comp_metric=agg_cfg.comp_metric,
                         pca_sign_rule=agg_cfg.pca_sign_rule, weighting=agg_cfg.weighting)
    if agg_cfg.name == "fedper":
        return FedPer(mlp_layers=list(mlp_layers), personal_layers=agg_cfg.personal_layers,
                      weighting=agg_cfg.weighting)
    if agg_cfg.name == "fedatt":
        return FedAtt(mlp_layers=list(mlp_layers), step_size=agg_cfg.step_size, noise=agg_cfg.noise,
                      att_norm=agg_cfg.att_norm)
    if agg_cfg.name == "pfedgraph":
        return PFedGraph(alpha=agg_cfg.alpha, similarity=agg_cfg.similarity, lam=agg_cfg.lam,
                         reg_sign=agg_cfg.reg_sign, weighting=agg_cfg.weighting)
    if agg_cfg.name == "pfedrec":
        return PFedRec(weighting=agg_cfg.weighting)
    if agg_cfg.name == "fedfast":
        return FedFast(delegates_ratio=agg_cfg.delegates_ratio, clusters=agg_cfg.clusters, gamma0=agg_cfg.gamma0,
                       gamma_decay=agg_cfg.gamma_decay, weighting=agg_cfg.weighting)
    if agg_cfg.name == "perfedrec":
        return PerFedRec(clusters=agg_cfg.clusters, cluster_on=agg_cfg.cluster_on, sampling=agg_cfg.sampling,
                         cluster_start_round=agg_cfg.cluster_start_round)
    if agg_cfg.name == "gpfedrec":
        return GPFedRec(similarity=agg_cfg.similarity, neighborhood_size=agg_cfg.neighborhood_size,
                        neighborhood_threshold=agg_cfg.neighborhood_threshold, mp_layers=agg_cfg.mp_layers,
                        reg=agg_cfg.reg, weighting=agg_cfg.weighting)
    raise ValueError(f"unknown aggregator {agg_cfg.name!r}")
