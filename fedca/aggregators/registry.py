"""Build an aggregator from its config (the only place that reads agg config fields)."""

from fedca.aggregators.base import Aggregator
from fedca.aggregators.composite import Composite
from fedca.aggregators.fcf import FCF
from fedca.aggregators.fedavg import FedAvg
from fedca.aggregators.local import LocalOnly


def build_aggregator(agg_cfg) -> Aggregator:
    """The aggregator named by ``agg_cfg.name`` with its settings."""
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
    raise ValueError(f"unknown aggregator {agg_cfg.name!r}")
