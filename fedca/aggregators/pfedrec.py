"""PFedRec (Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023;
official code Zhangcx19/IJCAI-23-PFedRec; docs/methods/pfedrec.md). Use with ``model=pfedrec``.

The score function (w_i, b_i) never leaves the client. The server averages the participants'
item tables without weights; a participant loads that global table just before it trains
(discarding last round's fine-tuned table), and it is evaluated with its own post-trained
table: the item view is personalised by local fine-tuning.
"""

from dataclasses import dataclass

from fedca.config.fields import declared
from fedca.aggregators.base import WEIGHTINGS, AggConfig, Aggregator, Downloads, data_weights


@dataclass
class PFedRecAggConfig(AggConfig):
    """PFedRec: the code averages the item tables without weights."""

    weighting: str = declared("uniform", "uniform: the code's plain mean; samples", choices=WEIGHTINGS)


class PFedRec(Aggregator):
    """Unweighted mean of item tables, loaded by participants before training; local inference."""

    name = "pfedrec"
    config = PFedRecAggConfig
    averages_mlp = False  # only item tables are averaged

    def __init__(self, *, weighting: str = "uniform"):
        self.weighting = weighting

    def start(self, items, mlp, users=None):
        return {"items": items.clone()}

    def before_training(self, participants, state, round_index):
        return Downloads(kind="global", items=state["items"], clients=participants)

    def aggregate(self, uploads, state, ctx):
        weights = data_weights(uploads.sample_counts, self.weighting)  # [n]
        items = uploads.weighted_items(weights)  # [I, d]
        drift = float((items - state["items"]).norm())
        return Downloads(kind="none", stats={"global_change": drift}), {"items": items}

    def cold_start(self, uploads, state, downloads):
        """The global item table; the score function stays the device's template."""
        return Downloads(kind="global", items=state["items"])
