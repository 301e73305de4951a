"""FCF as the FedCA/PFedRec lineage runs it (Ammad-ud-din et al. 2019; docs/methods/fcf.md).

The MF backbone with private user vectors trained by gradient descent and a server that
averages item tables by data size: on item tables this is exactly FedAvg, so it reuses it.
"""

from fedca.aggregators.fedavg import FedAvg


class FCF(FedAvg):
    """FedAvg on the item table under the FCF name."""

    name = "fcf"
