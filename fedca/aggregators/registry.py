"""Build an aggregator from its config (the only place that reads agg config fields)."""

from fedca.aggregators.base import Aggregator
from fedca.aggregators.composite import Composite
from fedca.aggregators.fcf import FCF
from fedca.aggregators.fedatt import FedAtt
from fedca.aggregators.fedavg import FedAvg
from fedca.aggregators.fedper import FedPer
from fedca.aggregators.local import LocalOnly


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
    raise ValueError(f"unknown aggregator {agg_cfg.name!r}")
