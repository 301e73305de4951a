"""pFedGraph's pull term on the compact rows of a round (docs/methods/pfedgraph.md §Pull).

The term adds ``sign * strength * <kappa, theta / ||theta||>`` to each client's loss, theta =
(V, Theta). Its gradient reaches the compact rows and the MLP; rows the client does not train
this round stay fixed, so the term acts on the trained rows (with ``||theta||`` and
``<kappa, theta>`` taken over the whole block).
"""

import warnings

import torch

from fedca.aggregators.base import Anchors
from fedca.federation.store import ItemStore


class AnchorPull:
    """Gradient of ``sign * strength * <kappa, theta> / ||theta||`` for the compact rows and MLPs.

    kappa_rows [R, d] and kappa_mlp [n, P] are the anchors at the compact rows; the parts of
    ``<kappa, theta>`` and ``||theta||^2`` from rows outside the compact table are constants
    [n] fixed at the start of the round."""

    def __init__(self, anchors: Anchors, store: ItemStore, clients: torch.Tensor, row_owner: torch.Tensor,
                 row_items: torch.Tensor, table: torch.Tensor, mlp: torch.Tensor):
        """``store`` holds the tables of the participants ``clients`` [n] before training."""
        self.scale = anchors.sign * anchors.strength
        self.row_owner = row_owner.to(table.device)  # [R]
        counts = torch.bincount(self.row_owner, minlength=mlp.shape[0])
        self.row_offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])  # [n + 1]
        self.row_index = torch.arange(table.shape[0], device=table.device)  # [R]
        self.row_ones = torch.ones(table.shape[0], dtype=table.dtype, device=table.device)  # [R]
        self.kappa_rows = anchors.items.to(table)[self.row_owner, row_items]  # [R, d]
        self.kappa_mlp = anchors.mlp.to(mlp)  # [n, P]
        full_dot = torch.zeros(clients.numel(), dtype=table.dtype, device=table.device)  # [n]
        full_sq = torch.zeros_like(full_dot)  # [n]
        for first in range(0, clients.numel(), store.chunk_size):
            part = slice(first, first + store.chunk_size)
            blocks = store.tables(clients[part]).flatten(1)  # [c, I * d]
            full_dot[part] = torch.linalg.vecdot(anchors.items[part].to(table).reshape(blocks.shape), blocks)
            full_sq[part] = torch.linalg.vecdot(blocks, blocks)
        row_dot, row_sq = self._row_sums(table, table.shape[0], mlp.shape[0])
        self.rest_dot, self.rest_sq = full_dot - row_dot, full_sq - row_sq

    def _row_sums(self, table: torch.Tensor, rows: int, clients: int) -> tuple:
        """Per-client sums over the compact rows [0, rows): (<kappa, V>, ||V||^2), each [clients].
        A client's rows are contiguous, so the sums are one sparse [clients, rows] 0/1 matrix
        times the per-row values (several times faster than ``index_add_`` on a CPU)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            blocks = torch.sparse_csr_tensor(self.row_offsets[:clients + 1], self.row_index[:rows],
                                             self.row_ones[:rows], size=(clients, rows), check_invariants=False)
        values = torch.stack([torch.linalg.vecdot(self.kappa_rows[:rows], table[:rows]),
                              torch.linalg.vecdot(table[:rows], table[:rows])], 1)  # [rows, 2]
        sums = blocks @ values  # [clients, 2]
        return sums[:, 0], sums[:, 1]

    def add_grads(self, table: torch.Tensor, mlp: torch.Tensor, table_grad: torch.Tensor,
                  mlp_grad: torch.Tensor, step) -> None:
        """Add the pull's gradient for the busy clients of ``step`` (a ``local_train.Step``) to
        table_grad [R, d] and mlp_grad [n, P]."""
        busy = step.busy_clients
        dot, sq = self._row_sums(table, step.busy_rows, busy)
        dot = dot + self.rest_dot[:busy] + (self.kappa_mlp[:busy] * mlp[:busy]).sum(1)
        sq = sq + self.rest_sq[:busy] + mlp[:busy].pow(2).sum(1)
        norm = sq.sqrt()
        mask = torch.zeros(busy, dtype=table.dtype, device=table.device)
        mask[step.active_dev] = 1.0
        along = self.scale * mask / norm  # [busy]: coefficient of kappa
        back = self.scale * mask * dot / norm.pow(3)  # [busy]: coefficient of theta
        owner = self.row_owner[:step.busy_rows]
        rows = table_grad[:step.busy_rows]
        rows.addcmul_(along[owner].unsqueeze(1), self.kappa_rows[:step.busy_rows])
        rows.addcmul_(back[owner].unsqueeze(1), table[:step.busy_rows], value=-1.0)
        mlp_grad[:busy].addcmul_(along.unsqueeze(1), self.kappa_mlp[:busy])
        mlp_grad[:busy].addcmul_(back.unsqueeze(1), mlp[:busy], value=-1.0)
