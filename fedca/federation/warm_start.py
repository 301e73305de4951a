"""Warm start: a run begins from another run's trained state (federated + transfer learning).

``transfer`` picks what moves: ``items`` (item tables), ``mlp`` (the score function's MLP),
``all`` (both, and the user vectors when the clients are the same). When source and target have
the same users and items (same raw ids), every client gets its own source state
(``per_client``). Otherwise (another dataset, other users) every target client starts from the
mean over the source clients, with item rows matched by raw item id; unmatched rows keep their
fresh initialisation (``mean_over_source_clients``). Raw ids are matched as tokens: an integer
id by its decimal text, a string id as it is, so integer 7 matches token ``7`` but not ``007``.

Shapes: N target clients, I target items, N_s / I_s source clients / items, d dims, P MLP size.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from fedca.data.fed_data import FedData, RawIds
from fedca.errors import FedcaError
from fedca.federation.population import Population
from fedca.federation.store import saved_tables

TRANSFERS = ("items", "mlp", "all")


@dataclass
class SourceState:
    """A trained run's clients: user [N_s, d], items [N_s, I_s, d], mlp [N_s, P] and their raw ids."""

    user: torch.Tensor
    items: torch.Tensor
    mlp: torch.Tensor
    raw_user_ids: RawIds
    raw_item_ids: RawIds


@dataclass
class WarmStart:
    """What was transferred (for the protocol record) and the server's starting block."""

    record: dict
    server_items: torch.Tensor
    server_mlp: torch.Tensor


def _tokens(ids: RawIds) -> list:
    """[K] raw ids as text tokens: integers in decimal, strings as they are."""
    return [str(value) for value in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]


def _matching_items(source: SourceState, data: FedData) -> Tuple[torch.Tensor, torch.Tensor]:
    """(target rows [k], source rows [k]) of the items both datasets hold, by raw item token."""
    row_of = {token: row for row, token in enumerate(_tokens(source.raw_item_ids))}  # ids are unique
    where = torch.as_tensor([row_of.get(token, -1) for token in _tokens(data.raw_item_ids)], dtype=torch.int64)
    found = where >= 0
    return torch.nonzero(found).squeeze(1), where[found]


def apply_warm_start(population: Population, data: FedData, source: SourceState, transfer: str,
                     from_run: str, checkpoint: str) -> WarmStart:
    """Overwrite the transferred parts of ``population`` in place; raise FedcaError when the
    shapes of source and target cannot carry them."""
    if transfer not in TRANSFERS:
        raise FedcaError(f"init.transfer={transfer!r} is not a known choice; use one of: {', '.join(TRANSFERS)}")
    store = population.store
    if source.items.shape[2] != store.dim:
        raise FedcaError(f"init.from_run={from_run}: latent_dim {source.items.shape[2]} there, "
                         f"{store.dim} here; set model.latent_dim to match")
    if transfer in ("mlp", "all") and source.mlp.shape[1] != population.mlp.shape[1]:
        raise FedcaError(f"init.from_run={from_run}: its MLP has {source.mlp.shape[1]} parameters, this backbone "
                         f"{population.mlp.shape[1]}; use the same model or init.transfer=items")
    same = (_tokens(source.raw_user_ids) == _tokens(data.raw_user_ids)
            and _tokens(source.raw_item_ids) == _tokens(data.raw_item_ids))
    target_rows, source_rows = _matching_items(source, data)
    if same:
        if transfer in ("items", "all"):
            store.write_tables(torch.arange(store.num_clients), source.items.to(store.dtype))
        if transfer in ("mlp", "all"):
            population.mlp.copy_(source.mlp.to(population.mlp))
        if transfer == "all":
            population.user.copy_(source.user.to(population.user))
    else:
        if transfer in ("items", "all"):
            mean_table = source.items.mean(0).to(store.dtype)  # [I_s, d]
            store.write_columns(target_rows, mean_table[source_rows])
        if transfer in ("mlp", "all"):
            population.mlp.copy_(source.mlp.mean(0).to(population.mlp).expand_as(population.mlp))
    record = {"from_run": from_run, "checkpoint": checkpoint, "transfer": transfer,
              "mode": "per_client" if same else "mean_over_source_clients",
              "items_matched": int(target_rows.numel()), "items": data.num_items}
    return WarmStart(record=record, server_items=store.mean(), server_mlp=population.mlp.mean(0))


def source_from_checkpoint(state: dict, from_run: str) -> SourceState:
    """The clients of a saved simulation state (``checkpoint.pt`` or ``selected.pt`` payload)."""
    simulation: Optional[dict] = state.get("simulation")
    if simulation is None or "raw_item_ids" not in state:
        raise FedcaError(f"init.from_run={from_run}: the checkpoint holds no client state with item ids; "
                         f"rerun the source with this fedca version")
    return SourceState(user=simulation["user"], items=saved_tables(simulation), mlp=simulation["mlp"],
                       raw_user_ids=state["raw_user_ids"], raw_item_ids=state["raw_item_ids"])
