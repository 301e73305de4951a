"""Every aggregator, found by name: each module of ``fedca.aggregators`` that defines an
``Aggregator`` subclass with its own ``name`` contributes it (no list to edit)."""

from functools import lru_cache
from typing import Dict, Sequence

import fedca.aggregators
from fedca.aggregators.base import AggConfig, Aggregator
from fedca.discovery import named_subclasses


@lru_cache(maxsize=1)
def aggregator_classes() -> Dict[str, type]:
    """{name: Aggregator subclass} over the modules of the package, sorted by name."""
    return named_subclasses(fedca.aggregators, Aggregator)


def build_aggregator(agg_cfg: AggConfig, mlp_layers: Sequence[int] = ()) -> Aggregator:
    """The aggregator named by ``agg_cfg.name`` with its settings (``mlp_layers``: the backbone's
    MLP widths, for aggregators that treat MLP layers separately)."""
    try:
        aggregator = aggregator_classes()[agg_cfg.name]
    except KeyError:
        raise ValueError(f"unknown aggregator {agg_cfg.name!r}") from None
    return aggregator.from_config(agg_cfg, mlp_layers)
