"""No aggregation: every client keeps training its own model (no collaboration)."""

from fedca.aggregators.base import Aggregator, Downloads


class LocalOnly(Aggregator):
    """The server does nothing; a lower bound for every federated method."""

    name = "local"
    averages_mlp = False

    def aggregate(self, uploads, state, ctx):
        return Downloads(kind="none"), state

    def cold_start(self, uploads, state, downloads):
        """No server: a new device starts from the initial model."""
        return Downloads(kind="none")
