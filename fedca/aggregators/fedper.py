"""FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers", 2019; docs/methods/fedper.md).

The model is split into base layers, aggregated by FedAvg, and personalization layers that
never leave the client. On the NCF backbone the base is the item table plus the first MLP
layers and the personal part is the top ``personal_layers`` MLP layers (and the user vector);
on FCF there is no personal layer beyond the user vector, so FedPer equals FedAvg.
"""

from dataclasses import dataclass
from typing import List

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import AggConfig, Aggregator, Downloads, data_weights
from fedca.config.rules import require


def shared_mlp_columns(layers: List[int], personal_layers: int) -> torch.Tensor:
    """[S] indices of the flat MLP entries (weight then bias, layer by layer) of all but the top
    ``personal_layers`` layers of an MLP with widths ``layers``."""
    sizes = [out * inp + out for inp, out in zip(layers[:-1], layers[1:])]
    shared = max(0, len(sizes) - personal_layers)
    return torch.arange(sum(sizes[:shared]))


@dataclass
class FedPerAggConfig(AggConfig):
    """FedPer: FedAvg on the base layers; the top ``personal_layers`` MLP layers stay local."""

    personal_layers: int = declared(2, "top MLP layers that stay local (of the default [32,16,8,1] MLP's 3, "
                                       "the top 2); at most the MLP depth", range="[0, inf)")

    def check(self, run) -> None:
        super().check(run)
        layers = max(0, len(run.model.mlp_layers) - 1)  # the model's MLP layers (0 on FCF: none)
        if layers:
            require(self.personal_layers <= layers, "agg.personal_layers", self.personal_layers,
                    f"the MLP of model={run.model.name} has {layers} layers; at most {layers} can be personal")


class FedPer(Aggregator):
    """FedAvg on the base layers; personalization layers stay on the client."""

    name = "fedper"
    one_table = True
    config = FedPerAggConfig

    def __init__(self, *, mlp_layers: List[int], personal_layers: int = 2, weighting: str = "samples"):
        if personal_layers < 0:
            raise ValueError("personal_layers must be >= 0")
        self.columns = shared_mlp_columns(list(mlp_layers), personal_layers) if mlp_layers else torch.arange(0)
        self.weighting = weighting

    def aggregate(self, uploads, state, ctx):
        weights = data_weights(uploads.sample_counts, self.weighting)  # [n]
        items = uploads.weighted_items(weights)  # [I, d]
        mlp = uploads.weighted_mlp(weights)[self.columns]  # [S]: the base layers only
        return Downloads(kind="global", items=items, mlp=mlp, mlp_columns=self.columns), state
