"""FedAvg (McMahan et al., AISTATS 2017; docs/methods/fedavg.md).

The server averages the shared block (item table, and the MLP for NCF) over this round's
participants, weighted by training instances (``samples``) or uniformly; every client replaces
its copy and keeps its private user vector.
"""

from fedca.aggregators.base import Aggregator, Downloads, data_weights


class FedAvg(Aggregator):
    """Data-size weighted (or uniform) average of the participants' shared blocks."""

    name = "fedavg"
    one_table = True

    def __init__(self, *, weighting: str = "samples"):
        if weighting not in ("samples", "uniform"):
            raise ValueError(f"unknown weighting {weighting!r}")
        self.weighting = weighting

    def aggregate(self, uploads, state, ctx):
        weights = data_weights(uploads.sample_counts, self.weighting)  # [n]
        items = uploads.weighted_items(weights)  # [I, d]
        mlp = uploads.weighted_mlp(weights)  # [P]
        return Downloads(kind="global", items=items, mlp=mlp), state
