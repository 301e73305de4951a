"""An independent per-client reference of the federated engine, used only as its oracle.

It imports no engine code. What it shares with the engine is the raw random draws of each
round (:class:`RoundDraws`), which the test records while the engine runs and hands over as
plain tensors: the participants, each positive's sampled negatives, each epoch's shuffle noise
and the aggregated subset. From those and the clients' training positives it builds, one client
at a time, as the official FedCA code does (hongleizhang/FedCA ``model/engine.py``,
``model/tools.py``):

* each client's instances: every positive (label 1) followed by its negatives (label 0);
* each epoch's order: the client's instances sorted by their noise (ties by position), cut
  into mini-batches of ``batch_size``;
* a fresh ``torch.optim.Adam`` per client per round over a full [I, d] item table, the user
  vector and (NCF) the MLP, ``nn.BCELoss`` on sigmoid outputs, and the official early stop on
  the running-average loss;
* the server step: FedAvg weights n_i / sum n (or uniform) and a global replace; or the FedCA
  composite weights from per-pair loops (PCA-1 similarity with scikit-learn 1.0.2's
  sign rule, greedy matching of the principal-basis cosines, each row's QP solved by SLSQP and
  certified by its KKT conditions), the personal aggregates and the interpolated merge;
  or GPFedRec as its official code (Zhangcx19/GPFedRec ``engine.py``, ``utils.py``): three
  ``torch.optim.SGD`` (MLP, user, items) with ``nn.MSELoss`` to the client's personal table
  added to the BCE, and on the server the per-pair cosine-distance graph, its threshold or
  top-k rows and the message passing, with the participants loading the mean table.

The population's flat NCF parameter row is read as the engine stores it: layer after layer,
the weight [out, in] row-major, then the bias [out].
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from qp_reference import kkt_simplex_qp


@dataclass
class OracleSettings:
    """Everything the oracle needs from the run configuration, as plain values."""

    epochs: int
    batch_size: int
    lr_embedding: float
    lr_structure: float
    weight_decay: float
    early_stop: bool
    threshold: float
    mlp_layers: List[int]  # [] for FCF
    agg: str  # local, fedavg, fcf, composite or gpfedrec
    weighting: str = "samples"
    optimizer: str = "adam"  # adam | sgd (GPFedRec's three plain SGDs)
    lr_user: float = 0.0  # sgd: the user-vector rate
    item_lr: float = 0.0  # sgd: the item-table rate
    reg: float = 0.0  # gpfedrec: weight of the mean squared difference to the personal table
    similarity: str = "official"  # gpfedrec: official (cosine distance) | cosine | euclidean
    neighborhood_size: int = 0
    neighborhood_threshold: float = 1.0
    mp_layers: int = 1
    agg_clients_ratio: float = 1.0
    k_principal: int = 4
    comp_sign: int = 1
    w_sim: float = 0.0
    w_comp: float = 0.0
    interpolation: float = 0.0


@dataclass
class RoundDraws:
    """One round's raw random draws: participants (population ids); negatives[c] [P_c, K], the
    negatives of client c's positives in time order; noise[c], one [P_c * (1 + K)] int tensor per
    epoch drawn (at least as many as the client runs); aggregated, the composite subset."""

    participants: List[int]
    negatives: Dict[int, torch.Tensor]
    noise: Dict[int, List[torch.Tensor]]
    aggregated: Optional[List[int]] = None


@dataclass
class OracleRound:
    """What a round gave: each participant's last running-average loss and epochs run."""

    losses: Dict[int, float] = field(default_factory=dict)
    epochs: Dict[int, int] = field(default_factory=dict)


class ClientModel(torch.nn.Module):
    """One client's model in the population's dtype: user [1, d], items [I, d], NCF layers."""

    def __init__(self, user, items, mlp_flat, layers):
        super().__init__()
        dtype = items.dtype
        self.user = torch.nn.Parameter(user.clone().unsqueeze(0))
        self.items = torch.nn.Parameter(items.clone())
        self.linears = torch.nn.ModuleList()
        start = 0
        for out, inp in zip(layers[1:], layers[:-1]):
            linear = torch.nn.Linear(inp, out, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(mlp_flat[start: start + out * inp].view(out, inp))
                start += out * inp
                linear.bias.copy_(mlp_flat[start: start + out])
                start += out
            self.linears.append(linear)
        assert start == mlp_flat.numel()

    def forward(self, item_ids):
        """Sigmoid scores [b] of ``item_ids`` [b]."""
        vectors = self.items[item_ids]
        if not len(self.linears):
            return torch.sigmoid((self.user * vectors).sum(1))
        hidden = torch.cat([self.user.expand(vectors.shape[0], -1), vectors], dim=1)
        for index, linear in enumerate(self.linears):
            hidden = linear(hidden)
            if index < len(self.linears) - 1:
                hidden = torch.relu(hidden)
        return torch.sigmoid(hidden).view(-1)

    def mlp_flat(self):
        if not len(self.linears):
            return torch.zeros(0, dtype=self.items.dtype)
        return torch.cat([torch.cat([layer.weight.detach().reshape(-1), layer.bias.detach()])
                          for layer in self.linears])


def client_instances(positives: torch.Tensor, negatives: torch.Tensor) -> tuple:
    """(items [P * (1 + K)], labels [P * (1 + K)]): each positive, then its K negatives."""
    items, labels = [], []
    for positive, drawn in zip(positives.tolist(), negatives.tolist()):
        items += [positive, *drawn]
        labels += [1.0] + [0.0] * len(drawn)
    return torch.tensor(items, dtype=torch.long), torch.tensor(labels)


class ThreeSGD:
    """GPFedRec's optimisers: plain SGD on the MLP, the user vector and the item table, stepped together."""

    def __init__(self, model: ClientModel, settings: OracleSettings):
        self.optimizers = [torch.optim.SGD([model.user], lr=settings.lr_user),
                           torch.optim.SGD([model.items], lr=settings.item_lr)]
        if len(model.linears):
            self.optimizers.insert(0, torch.optim.SGD(model.linears.parameters(), lr=settings.lr_structure))

    def zero_grad(self):
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def step(self):
        for optimizer in self.optimizers:
            optimizer.step()


def train_client(model: ClientModel, items, labels, noises, settings: OracleSettings,
                 target: Optional[torch.Tensor] = None) -> tuple:
    """Train one client in place; returns (last running-average BCE, epochs run). ``target``
    [I, d]: the table of GPFedRec's regulariser."""
    if settings.optimizer == "sgd":
        optimizer = ThreeSGD(model, settings)
    else:
        groups = [{"params": [model.user], "lr": settings.lr_embedding},
                  {"params": [model.items], "lr": settings.lr_embedding}]
        if len(model.linears):
            groups.append({"params": list(model.linears.parameters()), "lr": settings.lr_structure,
                           "weight_decay": settings.weight_decay})
        optimizer = torch.optim.Adam(groups)
    criterion = torch.nn.BCELoss()
    loss_sum, seen, history = 0.0, 0, []
    for epoch in range(settings.epochs):
        assert noises[epoch].numel() == items.numel()
        order = torch.sort(noises[epoch], stable=True).indices  # by (noise, position)
        for first in range(0, items.numel(), settings.batch_size):
            batch = order[first: first + settings.batch_size]
            optimizer.zero_grad()
            predictions = model(items[batch])
            loss = criterion(predictions, labels[batch].to(predictions.dtype))
            total = loss
            if target is not None:
                total = loss + settings.reg * torch.nn.MSELoss(reduction="mean")(model.items, target)
            total.backward()
            optimizer.step()
            loss_sum += loss.item() * batch.numel()
            seen += batch.numel()
        history.append(loss_sum / seen)
        if settings.early_stop and epoch > 0 and \
                abs(history[-1] - history[-2]) / abs(history[-2] + 1e-5) < settings.threshold:
            break
    return history[-1], len(history)


def data_weights(sizes: List[int], weighting: str) -> np.ndarray:
    """p [n]: n_i / sum n (``samples``) or 1 / n (``uniform``)."""
    if weighting == "uniform":
        return np.full(len(sizes), 1.0 / len(sizes))
    assert weighting == "samples", weighting
    total = float(sum(sizes))
    return np.array([size / total for size in sizes])


def _sign(values: np.ndarray) -> np.ndarray:
    return np.where(values < 0, -1.0, 1.0)


def pca(rows: np.ndarray, k: int) -> tuple:
    """scikit-learn 1.0.2 ``PCA(k).fit_transform`` with an exact solver (the top eigenvectors of the
    centred scatter, which are the SVD's right singular vectors) and its u-based ``svd_flip``:
    (scores [r, k], components [k, d]) with each score column's largest-|.| entry positive (ties:
    first row). The d x d eigh keeps this cheap whatever the BLAS threads do."""
    centred = rows - rows.mean(axis=0)
    components = np.linalg.eigh(centred.T @ centred)[1][:, ::-1][:, :k].T  # [k, d], descending
    scores = centred @ components.T  # [r, k]
    signs = _sign(scores[np.argmax(np.abs(scores), axis=0), np.arange(k)])
    return scores * signs, components * signs[:, np.newaxis]


def similarity(tables: List[np.ndarray]) -> np.ndarray:
    """calculate_l2_similarity: S_ij = -1 / (1 + ||z_i - z_j||) over PC-1 score vectors of the
    whole tables, set to -1 below -0.9 (the reference's template shift cancels in z_i - z_j)."""
    m = len(tables)
    scores = [pca(table, 1)[0][:, 0] for table in tables]
    result = np.zeros((m, m))
    for i in range(m):
        for j in range(i, m):
            value = -1.0 / (1.0 + np.linalg.norm(scores[i] - scores[j]))
            result[i, j] = result[j, i] = -1.0 if value < -0.9 else value
    return result


def greedy_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """compute_principal_angles: k times the largest remaining cosine, removing its row and column."""
    cosines = (a @ b.T) / (np.linalg.norm(a, axis=1)[:, np.newaxis] * np.linalg.norm(b, axis=1))
    picked = []
    for _ in range(a.shape[0]):
        i, j = np.unravel_index(np.argmax(cosines), cosines.shape)
        picked.append(cosines[i, j])
        cosines[i, :] = -np.inf
        cosines[:, j] = -np.inf
    return np.arccos(np.clip(picked, -1, 1))


def complementarity(bases: List[np.ndarray]) -> np.ndarray:
    """calculate_complementary: C_ij = cos(mean greedy angle), upper triangle mirrored."""
    m, k = len(bases), bases[0].shape[0]
    result = np.zeros((m, m))
    for i in range(m):
        for j in range(i, m):
            result[i, j] = result[j, i] = np.cos(np.sum(greedy_angles(bases[i], bases[j])) / k)
    return result


def composite_weights(tables, instance_items, sizes, settings: OracleSettings) -> np.ndarray:
    """The official per-row QPs: W_i = argmin_{x in simplex} x^T x + q_i^T x with
    q_i = -2 w_comp comp_sign C_i + 2 w_sim S_i - 2 p, then entries below 1e-20 zeroed and rows
    renormalised (sub_matrix_shift). A zero weight switches its matrix off, as the reference gates it."""
    m = len(tables)
    s = similarity(tables) if settings.w_sim else np.zeros((m, m))
    c = np.zeros((m, m))
    if settings.w_comp:
        c = complementarity([pca(table[items], settings.k_principal)[1] for table, items in zip(tables, instance_items)])
    p = data_weights(sizes, settings.weighting)
    graph = np.zeros((m, m))
    for i in range(m):
        q = -settings.w_comp * settings.comp_sign * 2 * c[i] + settings.w_sim * 2 * s[i] - 2 * p
        graph[i] = kkt_simplex_qp(q)
    graph[np.abs(graph) < 1e-20] = 0
    return graph / graph.sum(axis=1, keepdims=True)


def gpfedrec_graph(tables: List[np.ndarray], settings: OracleSettings) -> np.ndarray:
    """GPFedRec's top-k or threshold graph [n, n] over the flattened tables, pair by pair."""
    n = len(tables)
    scores = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = tables[i].ravel(), tables[j].ravel()
            if i == j:
                scores[i, j] = 0.0  # scikit-learn's pairwise distances are 0 on the diagonal
            elif settings.similarity == "euclidean":
                scores[i, j] = -np.sqrt(((a - b) ** 2).sum())
            else:
                cosine = float(a @ b) / (np.sqrt(a @ a) * np.sqrt(b @ b))
                scores[i, j] = min(max(1.0 - cosine, 0.0), 2.0) if settings.similarity == "official" else cosine
            if i == j and settings.similarity == "cosine":
                scores[i, j] = 1.0
    graph = np.zeros((n, n))
    if settings.neighborhood_size > 0:
        for i in range(n):
            for j in scores[i].argsort()[-settings.neighborhood_size:][::-1]:
                graph[i][j] = 1 / settings.neighborhood_size
        return graph
    threshold = np.mean(scores) * settings.neighborhood_threshold
    for i in range(n):
        high = np.sum(scores[i] > threshold)
        if high > 0:
            for j in range(n):
                if scores[i][j] > threshold:
                    graph[i][j] = 1 / high
        else:
            graph[i][i] = 1
    return graph


def gpfedrec_tables(tables: List[np.ndarray], settings: OracleSettings) -> tuple:
    """(personal tables [n] of [I, d], global [I, d]): message passing on the graph, then the mean."""
    flat = np.stack([table.ravel() for table in tables])
    graph = gpfedrec_graph(tables, settings)
    mixed = np.matmul(graph, flat)
    for _ in range(settings.mp_layers - 1):
        mixed = np.matmul(graph, mixed)
    personal = [row.reshape(tables[0].shape) for row in mixed]
    return personal, sum(personal) / len(personal)


def run_oracle(user, items, mlp, positives: List[torch.Tensor], draws: List[RoundDraws],
               settings: OracleSettings) -> tuple:
    """Play the recorded rounds from user [N, d], items [N, I, d], mlp [N, P] (not modified);
    ``positives[c]`` are client c's training positives in time order. Returns the final
    user, items and mlp, and one :class:`OracleRound` per round."""
    user, items, mlp = user.clone(), items.clone(), mlp.clone()
    initial = items[0].clone()  # every client starts from this table
    global_table, personal = initial.clone(), {}  # GPFedRec's server state
    rounds = []
    for draw in draws:
        record = OracleRound()
        instances = {}
        for client in draw.participants:
            instances[client] = client_instances(positives[client], draw.negatives[client])
            target = None
            if settings.agg == "gpfedrec":
                items[client] = global_table
                target = personal.get(client, initial) if settings.reg else None
            model = ClientModel(user[client], items[client], mlp[client], settings.mlp_layers)
            record.losses[client], record.epochs[client] = train_client(model, *instances[client],
                                                                        draw.noise[client], settings, target)
            user[client], items[client], mlp[client] = model.user.detach()[0], model.items.detach(), model.mlp_flat()
        sizes = [instances[client][0].numel() for client in draw.participants]
        if settings.agg in ("fedavg", "fcf"):
            weights = data_weights(sizes, settings.weighting)
            shared_items = sum(float(w) * items[c] for w, c in zip(weights, draw.participants))
            shared_mlp = sum(float(w) * mlp[c] for w, c in zip(weights, draw.participants))
            for client in range(user.shape[0]):
                items[client], mlp[client] = shared_items, shared_mlp
        elif settings.agg == "composite":
            picked = draw.aggregated
            assert len(picked) == int(len(draw.participants) * settings.agg_clients_ratio)
            assert set(picked) <= set(draw.participants)
            tables = [items[c].double().numpy() for c in picked]
            weights = composite_weights(tables, [instances[c][0].numpy() for c in picked],
                                        [instances[c][0].numel() for c in picked], settings)
            mixed = [(sum(float(weights[i, j]) * items[c] for j, c in enumerate(picked)),
                      sum(float(weights[i, j]) * mlp[c] for j, c in enumerate(picked))) for i in range(len(picked))]
            mu = settings.interpolation
            for client, (mixed_items, mixed_mlp) in zip(picked, mixed):
                items[client] = mu * items[client] + (1 - mu) * mixed_items
                mlp[client] = mu * mlp[client] + (1 - mu) * mixed_mlp
        elif settings.agg == "gpfedrec":
            assert settings.weighting == "uniform", settings.weighting
            tables, global_numpy = gpfedrec_tables([items[c].double().numpy() for c in draw.participants], settings)
            for client, table in zip(draw.participants, tables):
                personal[client] = torch.from_numpy(table).to(items.dtype)
            global_table = torch.from_numpy(global_numpy).to(items.dtype)
        else:
            assert settings.agg == "local", settings.agg
        rounds.append(record)
    return user, items, mlp, rounds
