"""Clients merge what the server sends (``Downloads``) into their stacked state."""

from fedca.aggregators.base import Downloads
from fedca.federation.population import Population


def apply_downloads(population: Population, downloads: Downloads) -> None:
    """Merge what the server sent into the clients' state; user vectors change only by an
    explicit ``user_delta``."""
    mu = downloads.keep_local
    columns = downloads.mlp_columns
    store = population.store
    if downloads.kind == "global" and downloads.clients is None:
        store.blend_all(downloads.items, mu)
        if downloads.mlp is not None and columns is None:
            population.mlp.mul_(mu).add_(downloads.mlp.unsqueeze(0), alpha=1 - mu)
        elif downloads.mlp is not None:
            population.mlp[:, columns] = mu * population.mlp[:, columns] + (1 - mu) * downloads.mlp.unsqueeze(0)
    elif downloads.kind in ("global", "personal"):
        clients = downloads.clients
        store.write_tables(clients, mu * store.tables(clients) + (1 - mu) * downloads.items)
        if downloads.mlp is not None:
            own_mlp = population.mlp[clients] if columns is None else population.mlp[clients][:, columns]
            mixed = mu * own_mlp + (1 - mu) * downloads.mlp
            if columns is None:
                population.mlp[clients] = mixed
            else:
                population.mlp[clients.unsqueeze(1), columns.unsqueeze(0)] = mixed
    if downloads.user_delta is not None:
        population.user.index_add_(0, downloads.user_clients, downloads.user_delta.to(population.user))
