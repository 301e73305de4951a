"""The runnable (agg, model) pairs of the config tree, discovered from conf/ (no list to edit).

A pair runs with ``agg=A model=M`` when that config validates; an aggregator whose
``conf/method/A.yaml`` preset sets what it needs (GPFedRec's SGD optimiser) runs with
``+method=A model=M`` instead; a pair that validates neither way (a backbone whose personal
MLP an averaging aggregator would mix) is not a combination fedca runs.
"""

from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from fedca.config.compose import available, compose_run_config
from fedca.errors import FedcaError


def choice_overrides(agg: str, model: str) -> Optional[List[str]]:
    """The overrides that run ``agg`` on ``model``, or None when fedca does not run that pair."""
    candidates = [[f"agg={agg}", f"model={model}"]]
    if agg in available("method"):
        candidates.append([f"+method={agg}", f"model={model}"])
    for overrides in candidates:
        try:
            cfg = compose_run_config(overrides)
        except FedcaError:
            continue
        if cfg.model.name == model:  # the command line's model wins over a preset's
            return overrides
    return None


@lru_cache(maxsize=1)
def runnable_pairs() -> Dict[Tuple[str, str], List[str]]:
    """{(agg choice, model choice): overrides} for every pair fedca runs."""
    pairs = {}
    for agg in available("agg"):
        for model in available("model"):
            overrides = choice_overrides(agg, model)
            if overrides is not None:
                pairs[(agg, model)] = overrides
    return pairs
