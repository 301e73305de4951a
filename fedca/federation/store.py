"""Client stores: every client's item table, logically ``[N, I, d]``, behind the few operations
the engine needs, so how the tables are held (one dense tensor, low precision, a memory-mapped
file, or one server table plus per-client changes) is the store's business alone.

Shapes: N clients, I items, d dims; ``clients`` are population indices (int64).

Operations (every store implements them exactly as the dense reference does, except ``half``,
which rounds what it stores):

- ``rows(clients, items)`` -> ``[..., d]``: the rows ``items`` of the tables of ``clients``
  (same shape, or broadcastable: ``clients [U, 1]`` with ``items [U, C]``); a copy.
- ``write_rows(clients [R], items [R], values [R, d])``: set those rows.
- ``tables(clients [m])`` -> ``[m, I, d]``: whole tables, a copy (for the server step, the
  privacy copies and held-out clients; callers take them in chunks where they can).
- ``write_tables(clients [m], values [m, I, d])``.
- ``blend_all(table [I, d], keep)``: every client's table becomes ``keep * own + (1 - keep) * table``.
- ``write_columns(items [k], values [k, d])``: rows ``items`` of every client's table := values.
- ``weighted_sum(clients [m], weights [m])`` -> ``[I, d]``: sum_j weights_j * V_clients_j.
- ``mean()`` -> ``[I, d]``: the mean table over all clients.
- ``full()`` -> ``[N, I, d]``; ``state()`` / ``load_state(state)``: plain tensors for the checkpoint.

Stores (``store=``, ``StoreConfig``):

- ``dense``: one ``[N, I, d]`` tensor in the compute dtype; the exact reference.
- ``half``: one ``[N, I, d]`` bfloat16 tensor, computed in the compute dtype: half the memory;
  every write rounds to bfloat16, so numbers move (how far: the README's store table).
- ``disk``: the dense layout in a memory-mapped file (under ``store.dir``, else in the run folder); exact;
  the operating system keeps in memory only the pages a step touches.
- ``global``: one server table ``[I, d]`` plus, per client, the rows that differ from it (sorted
  ``client * I + item`` keys and their values). For methods whose download replaces every
  client's table with one global block (``blend_all`` with ``keep = 0`` clears the changes):
  memory O(I d + rows touched in a round). Exact up to the summation order of ``weighted_sum``
  (about 1e-7 relative in float32).
- ``auto``: ``choose_store`` picks the cheapest of these that fits ``store.budget_gb``.
"""

import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fedca.config.fields import declared
from fedca.errors import FedcaError

CHUNK_VALUES = 1 << 24  # values of [m, I, d] a chunked operation materialises at once (64 MB in float32)
STORE_FILE = "items.store"  # the disk store's file in its folder


@dataclass
class StoreConfig:
    """How every client's item table is held (``fedca.federation.store``)."""

    name: str = declared("dense", "dense | half | disk | global | auto (the cheapest that fits store.budget_gb)",
                         choices=("dense", "half", "disk", "global", "auto"))
    budget_gb: float = declared(0.0, "memory the client tables may take (0: half the physical memory)",
                                range="[0, inf)")
    dir: Optional[str] = declared(None, "folder for the disk store's file, in a subfolder named as the run folder "
                                        "(null: the run folder itself)")


class ItemStore(ABC):
    """Every client's item table (module docstring); ``dtype`` is the compute dtype."""

    name = ""

    def __init__(self, num_clients: int, num_items: int, dim: int, dtype: torch.dtype, device: torch.device):
        self.num_clients, self.num_items, self.dim = num_clients, num_items, dim
        self.dtype, self.device = dtype, device

    @property
    def shape(self) -> tuple:
        return self.num_clients, self.num_items, self.dim

    @abstractmethod
    def rows(self, clients: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def write_rows(self, clients: torch.Tensor, items: torch.Tensor, values: torch.Tensor) -> None: ...

    @abstractmethod
    def tables(self, clients: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def write_tables(self, clients: torch.Tensor, values: torch.Tensor) -> None: ...

    @abstractmethod
    def blend_all(self, table: torch.Tensor, keep: float) -> None: ...

    @abstractmethod
    def write_columns(self, items: torch.Tensor, values: torch.Tensor) -> None: ...

    @abstractmethod
    def weighted_sum(self, clients: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def mean(self) -> torch.Tensor: ...

    @abstractmethod
    def state(self) -> dict: ...

    @abstractmethod
    def load_state(self, state: dict) -> None: ...

    def full(self) -> torch.Tensor:
        """[N, I, d] every table (a copy, except the dense stores' own tensor)."""
        return self.tables(torch.arange(self.num_clients, device=self.device))

    @property
    def chunk_size(self) -> int:
        """How many clients' whole tables a chunked step takes at once (CHUNK_VALUES values)."""
        return max(1, CHUNK_VALUES // max(1, self.num_items * self.dim))


class DenseStore(ItemStore):
    """The tables in one ``[N, I, d]`` tensor ``table`` (stored in ``table.dtype``, computed in
    ``dtype``): ``dense``, ``half`` (a bfloat16 tensor) and ``disk`` (a memory-mapped one)."""

    name = "dense"

    def __init__(self, table: torch.Tensor, dtype: Optional[torch.dtype] = None):
        super().__init__(*table.shape, dtype or table.dtype, table.device)
        self.table = table  # [N, I, d], contiguous
        self._flat = table.view(-1, table.shape[2])  # [N * I, d]: writes reach the tables

    def _compute(self, values: torch.Tensor) -> torch.Tensor:
        return values if values.dtype == self.dtype else values.to(self.dtype)

    def rows(self, clients, items):
        keys = (clients * self.num_items + items).to(self.device)
        return self._compute(self._flat.index_select(0, keys.reshape(-1))).view(*keys.shape, self.dim)

    def write_rows(self, clients, items, values):
        keys = (clients * self.num_items + items).to(self.device).reshape(-1)
        self._flat.index_copy_(0, keys, values.reshape(-1, self.dim).to(self.table.dtype))

    def tables(self, clients):
        return self._compute(self.table[clients.to(self.device)])

    def write_tables(self, clients, values):
        self.table[clients.to(self.device)] = values.to(self.table.dtype)

    def blend_all(self, table, keep):
        if not keep:
            self.table.copy_(table.to(self.table.dtype).unsqueeze(0).expand_as(self.table))
            return
        if self.table.dtype == self.dtype:
            self.table.mul_(keep).add_(table.unsqueeze(0), alpha=1 - keep)
            return
        for first in range(0, self.num_clients, self.chunk_size):
            chunk = torch.arange(first, min(first + self.chunk_size, self.num_clients), device=self.device)
            self.write_tables(chunk, keep * self.tables(chunk) + (1 - keep) * table.unsqueeze(0))

    def write_columns(self, items, values):
        self.table[:, items.to(self.device)] = values.to(self.table.dtype).unsqueeze(0)

    def weighted_sum(self, clients, weights):
        if self.table.dtype == self.dtype:
            full = torch.zeros(self.num_clients, dtype=self.dtype, device=self.device)
            full[clients.to(self.device)] = weights.to(full)
            return torch.einsum("n,nid->id", full, self.table)  # [I, d]
        total = torch.zeros(self.num_items, self.dim, dtype=self.dtype, device=self.device)
        for first in range(0, clients.numel(), self.chunk_size):
            part = slice(first, first + self.chunk_size)
            total += torch.einsum("m,mid->id", weights[part].to(self.device, self.dtype), self.tables(clients[part]))
        return total

    def mean(self):
        if self.table.dtype == self.dtype:
            return self.table.mean(0)
        everyone = torch.arange(self.num_clients, device=self.device)
        return self.weighted_sum(everyone, torch.ones(self.num_clients, dtype=self.dtype)) / self.num_clients

    def full(self):
        return self.table if self.table.dtype == self.dtype else self._compute(self.table)

    def state(self):
        return {"items": self.table}

    def load_state(self, state):
        self.table.copy_(state["items"])


class HalfStore(DenseStore):
    """``half``: the tables in ``table`` (bfloat16), computed in ``dtype``."""

    name = "half"

    def __init__(self, table: torch.Tensor, dtype: torch.dtype):
        super().__init__(table, dtype=dtype)


class DiskStore(DenseStore):
    """``disk``: the tables in a memory-mapped file ``folder / STORE_FILE`` (created, or reused
    and overwritten), in ``table``'s dtype."""

    name = "disk"

    def __init__(self, table: torch.Tensor, folder: Path):
        if table.device.type != "cpu":
            raise FedcaError("store=disk keeps the tables in a memory-mapped file on the CPU; use store=dense with "
                             "device=cuda")
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / STORE_FILE
        check_disk_space(table.numel() * table.element_size(), folder)
        dtype = torch.empty(0, dtype=table.dtype).numpy().dtype
        self._mapped = np.memmap(self.path, dtype=dtype, mode="w+", shape=tuple(table.shape))  # keeps the map alive
        mapped_table = torch.from_numpy(self._mapped)
        step = max(1, CHUNK_VALUES // max(1, table[0].numel()))  # clients copied at once
        for first in range(0, table.shape[0], step):
            mapped_table[first:first + step] = table[first:first + step]
        super().__init__(mapped_table)


class GlobalStore(ItemStore):
    """``global``: ``server [I, d]`` plus the rows where a client's table differs from it
    (``keys [R]`` sorted client * I + item, ``values [R, d]``)."""

    name = "global"

    def __init__(self, server: torch.Tensor, num_clients: int):
        super().__init__(num_clients, server.shape[0], server.shape[1], server.dtype, server.device)
        self.server = server.clone()  # [I, d]
        self.keys = torch.zeros(0, dtype=torch.long, device=self.device)  # [R] sorted
        self.values = torch.zeros(0, self.dim, dtype=self.dtype, device=self.device)  # [R, d]

    def _lookup(self, keys: torch.Tensor) -> tuple:
        """(found [..] bool, position [..]) of ``keys`` among the stored changed rows."""
        if not self.keys.numel():
            return torch.zeros_like(keys, dtype=torch.bool), torch.zeros_like(keys)
        position = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        return self.keys[position] == keys, position

    def rows(self, clients, items):
        keys = (clients * self.num_items + items).to(self.device)
        found, position = self._lookup(keys)
        out = self.server[(keys % self.num_items).reshape(-1)].view(*keys.shape, self.dim)
        out[found] = self.values[position[found]]
        return out

    def write_rows(self, clients, items, values):
        keys = (clients * self.num_items + items).to(self.device).reshape(-1)
        values = values.reshape(-1, self.dim).to(self.dtype)
        found, position = self._lookup(keys)
        self.values[position[found]] = values[found]
        if bool((~found).any()):
            merged = torch.cat([self.keys, keys[~found]])
            order = torch.argsort(merged)
            self.keys = merged[order]
            self.values = torch.cat([self.values, values[~found]])[order]

    def tables(self, clients):
        clients = clients.to(self.device)
        out = self.server.unsqueeze(0).repeat(clients.numel(), 1, 1)  # [m, I, d]
        if self.keys.numel() and clients.numel():
            owner = self.keys // self.num_items
            lookup = torch.full((self.num_clients,), -1, dtype=torch.long, device=self.device)
            lookup[clients] = torch.arange(clients.numel(), device=self.device)
            mine = lookup[owner] >= 0
            out[lookup[owner[mine]], self.keys[mine] % self.num_items] = self.values[mine]
        return out

    def write_tables(self, clients, values):
        clients = clients.to(self.device)
        keep = ~torch.isin(self.keys // self.num_items, clients)
        self.keys, self.values = self.keys[keep], self.values[keep]
        items = torch.arange(self.num_items, device=self.device)
        self.write_rows(clients.repeat_interleave(self.num_items), items.repeat(clients.numel()), values)

    def blend_all(self, table, keep):
        if keep:
            raise FedcaError(f"store=global holds one table for every client, but this method keeps a share "
                             f"({keep}) of each client's own table: use store=dense, disk or half")
        self.server = table.to(self.dtype).clone()
        self.keys, self.values = self.keys[:0], self.values[:0]

    def write_columns(self, items, values):
        self.server[items.to(self.device)] = values.to(self.dtype)
        found = torch.isin(self.keys % self.num_items, items.to(self.device))
        self.keys, self.values = self.keys[~found], self.values[~found]

    def weighted_sum(self, clients, weights):
        clients, weights = clients.to(self.device), weights.to(device=self.device, dtype=self.dtype)
        total = weights.sum() * self.server  # [I, d]
        if self.keys.numel():
            full = torch.zeros(self.num_clients, dtype=self.dtype, device=self.device)
            full[clients] = weights
            owner, item = self.keys // self.num_items, self.keys % self.num_items
            total.index_add_(0, item, full[owner].unsqueeze(1) * (self.values - self.server[item]))
        return total

    def mean(self):
        everyone = torch.arange(self.num_clients, device=self.device)
        return self.weighted_sum(everyone, torch.ones(self.num_clients, dtype=self.dtype)) / self.num_clients

    def state(self):
        return {"server": self.server, "keys": self.keys, "values": self.values}

    def load_state(self, state):
        self.server, self.keys, self.values = (state[name].to(self.device) for name in ("server", "keys", "values"))


def check_disk_space(needed: int, folder: Path) -> None:
    """FedcaError naming the setting to change when ``needed`` bytes exceed ``folder``'s free disk."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FedcaError(f"store=disk needs {needed / 2 ** 30:.1f} GiB for the client tables in {folder}, which has "
                         f"{free / 2 ** 30:.1f} GiB free: set store.dir to a bigger disk, or use store=half "
                         f"(half the size) or store=global (one-table methods)")


def saved_tables(state: dict) -> torch.Tensor:
    """[N, I, d] every table of a saved simulation state (any store's ``state()`` in it)."""
    if "items" in state:
        return state["items"]
    store = GlobalStore(state["server"], state["user"].shape[0])
    store.load_state(state)
    return store.full()


def table_bytes(num_clients: int, num_items: int, dim: int, dtype: torch.dtype) -> int:
    """Bytes of one dense [N, I, d] tensor of ``dtype``."""
    return num_clients * num_items * dim * torch.empty(0, dtype=dtype).element_size()


def budget_bytes(cfg: StoreConfig) -> int:
    """``store.budget_gb`` in bytes; 0: half the physical memory."""
    if cfg.budget_gb > 0:
        return int(cfg.budget_gb * 2 ** 30)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def choose_store(cfg: StoreConfig, num_clients: int, num_items: int, dim: int, dtype: torch.dtype,
                 one_table: bool) -> str:
    """The store to use: ``cfg.name``, or for ``auto`` the cheapest exact one that fits the
    budget: ``global`` when the method's clients all hold the server's table (``one_table``),
    else ``dense`` when it fits, else ``disk``. FedcaError for ``global`` with a method whose
    clients keep tables of their own."""
    if cfg.name == "global" and not one_table:
        raise FedcaError("store=global holds one table for every client, but this method's clients keep tables "
                         "of their own: use store=dense, disk or half")
    needed, budget = table_bytes(num_clients, num_items, dim, dtype), budget_bytes(cfg)
    if cfg.name == "dense" and needed > 2 * budget_bytes(StoreConfig()):
        raise FedcaError(f"store=dense needs {needed / 2 ** 30:.1f} GiB for the client tables, more than this "
                         f"machine's memory: use store=disk, half or global (store=auto picks one that fits)")
    if cfg.name != "auto":
        return cfg.name
    if one_table:
        return "global"
    return "dense" if needed <= budget else "disk"


def build_store(name: str, table: torch.Tensor, num_clients: int, folder: Path) -> ItemStore:
    """The store ``name`` holding ``num_clients`` copies of ``table`` [I, d] (the shared start)."""
    if name == "global":
        return GlobalStore(table, num_clients)
    if name == "half":
        return HalfStore(table.to(torch.bfloat16).unsqueeze(0).repeat(num_clients, 1, 1), table.dtype)
    if name == "disk":
        return DiskStore(table.unsqueeze(0).expand(num_clients, *table.shape), folder)
    return DenseStore(table.unsqueeze(0).repeat(num_clients, 1, 1))
