"""Every aggregator, found by name: each module of ``fedca.aggregators`` that defines an
``Aggregator`` subclass with its own ``name`` contributes it (no list to edit)."""

import importlib
import pkgutil
from functools import lru_cache
from typing import Dict, Sequence

import fedca.aggregators
from fedca.aggregators.base import AggConfig, Aggregator


@lru_cache(maxsize=1)
def aggregator_classes() -> Dict[str, type]:
    """{name: Aggregator subclass} over the modules of the package, sorted by name."""
    found = {}
    for module in pkgutil.iter_modules(fedca.aggregators.__path__):
        loaded = importlib.import_module(f"fedca.aggregators.{module.name}")
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, Aggregator) and value is not Aggregator \
                    and value.__module__ == loaded.__name__:
                found[value.name] = value
    return dict(sorted(found.items()))


def build_aggregator(agg_cfg: AggConfig, mlp_layers: Sequence[int] = ()) -> Aggregator:
    """The aggregator named by ``agg_cfg.name`` with its settings (``mlp_layers``: the backbone's
    MLP widths, for aggregators that treat MLP layers separately)."""
    try:
        aggregator = aggregator_classes()[agg_cfg.name]
    except KeyError:
        raise ValueError(f"unknown aggregator {agg_cfg.name!r}") from None
    return aggregator.from_config(agg_cfg, mlp_layers)
