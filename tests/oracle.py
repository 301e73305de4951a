"""A plain per-client reference loop, used only as the oracle for the batched engine.

One client at a time, an ``torch.optim.Adam`` per client per round over a full [I, d] item
table, ``nn.BCELoss`` on sigmoid outputs and the official early-stop rule, exactly as the
official FedCA code trains. It shares with the engine only the random draws (participants,
negatives, per-epoch shuffles, aggregation subset), which it obtains by calling the same
sampling functions with identically seeded generators in the same order.
"""

import torch

from fedca.aggregators.base import data_weights
from fedca.aggregators.composite import Composite
from fedca.federation.batches import EpochShuffle, build_round
from fedca.federation.simulate import sample_participants
from fedca.seeding import generator


class ClientModel(torch.nn.Module):
    """One client's model: user vector [1, d], item table [I, d], optional MLP layers."""

    def __init__(self, user, items, mlp_flat, layers):
        super().__init__()
        self.user = torch.nn.Parameter(user.clone().unsqueeze(0))
        self.items = torch.nn.Parameter(items.clone())
        self.linears = torch.nn.ModuleList()
        start = 0
        for out, inp in zip(layers[1:], layers[:-1]):
            linear = torch.nn.Linear(inp, out)
            with torch.no_grad():
                linear.weight.copy_(mlp_flat[start: start + out * inp].view(out, inp))
                start += out * inp
                linear.bias.copy_(mlp_flat[start: start + out])
                start += out
            self.linears.append(linear.to(items.dtype))

    def forward(self, item_ids):
        vectors = self.items[item_ids]
        if not len(self.linears):
            return torch.sigmoid((self.user * vectors).sum(1))
        vectors = vectors.to(self.linears[0].weight.dtype)
        hidden = torch.cat([self.user.repeat(vectors.shape[0], 1), vectors], dim=-1)
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


def train_round(population, data, settings, layers, gens):
    """Train the round's participants one by one; returns (batches, {client: last running-average loss})."""
    participants = sample_participants(torch.arange(data.num_users), settings.clients_sample_ratio,
                                       gens["client_sampling"])
    batches = build_round(data, participants, settings.num_train_negatives, settings.batch_size,
                          gens["train_negatives"])
    local = settings.local
    models, optimizers, history, stopped = {}, {}, {}, {}
    sums, seen = {}, {}
    for position, client in enumerate(batches.clients.tolist()):
        model = ClientModel(population.user[client], population.items[client], population.mlp[client], layers)
        groups = [{"params": [model.user], "lr": local.lr_embedding},
                  {"params": [model.items], "lr": local.lr_embedding}]
        if len(model.linears):
            groups.append({"params": list(model.linears.parameters()), "lr": local.lr_structure,
                           "weight_decay": local.weight_decay})
        models[position], optimizers[position] = model, torch.optim.Adam(groups)
        history[position], stopped[position], sums[position], seen[position] = [], False, 0.0, 0
    criterion = torch.nn.BCELoss()
    shuffle = EpochShuffle(batches)
    for epoch in range(local.epochs):
        if all(stopped.values()):
            break
        order = shuffle.order(gens["shuffle"])
        for position in models:
            if stopped[position]:
                continue
            start, end = int(batches.offsets[position]), int(batches.offsets[position + 1])
            mine = order[start:end]
            for first in range(0, end - start, settings.batch_size):
                instances = mine[first: first + settings.batch_size]
                optimizers[position].zero_grad()
                predictions = models[position](batches.items[instances])
                loss = criterion(predictions, batches.labels[instances].to(predictions.dtype))
                loss.backward()
                optimizers[position].step()
                sums[position] += loss.item() * len(instances)
                seen[position] += len(instances)
            history[position].append(sums[position] / seen[position])
            if local.early_stop and epoch > 0:
                last, before = history[position][-1], history[position][-2]
                if abs(last - before) / abs(before + 1e-5) < local.threshold:
                    stopped[position] = True
    for position, client in enumerate(batches.clients.tolist()):
        population.user[client] = models[position].user.detach()[0]
        population.items[client] = models[position].items.detach()
        population.mlp[client] = models[position].mlp_flat()
    return batches, {position: history[position][-1] for position in models}


def aggregate(population, batches, agg_name, agg, gens, round_index):
    """The server step written as per-client loops over the trained states."""
    clients = batches.clients.tolist()
    sizes = batches.sizes
    if agg_name in ("fedavg", "fcf"):
        weights = data_weights(sizes, agg.weighting)
        items = sum(float(w) * population.items[c] for w, c in zip(weights, clients))
        mlp = sum(float(w) * population.mlp[c] for w, c in zip(weights, clients))
        for client in range(population.num_clients):
            population.items[client] = items
            population.mlp[client] = mlp
    elif agg_name == "composite":
        m = int(len(clients) * agg.agg_clients_ratio)
        picked = torch.randperm(len(clients), generator=gens["agg_sampling"])[:m].tolist()
        tables = torch.stack([population.items[clients[p]] for p in picked])
        counts = torch.zeros(m, population.items.shape[1], dtype=torch.float64)
        for row, p in enumerate(picked):
            start, end = int(batches.offsets[p]), int(batches.offsets[p + 1])
            for item in batches.items[start:end].tolist():
                counts[row, item] += 1
        composite = Composite(k_principal=agg.k_principal, agg_clients_ratio=agg.agg_clients_ratio,
                              comp_sign=agg.comp_sign, comp_metric=agg.comp_metric,
                              pca_sign_rule=agg.pca_sign_rule, weighting=agg.weighting)
        weights, _, _ = composite.weight_matrix(tables, counts, sizes[picked], agg.w_sim, agg.w_comp)
        mixed_items, mixed_mlp = [], []
        for i in range(m):
            mixed_items.append(sum(float(weights[i, j]) * population.items[clients[p]] for j, p in enumerate(picked)))
            mixed_mlp.append(sum(float(weights[i, j]) * population.mlp[clients[p]] for j, p in enumerate(picked)))
        mu = agg.interpolation
        for i, p in enumerate(picked):
            client = clients[p]
            population.items[client] = mu * population.items[client] + (1 - mu) * mixed_items[i]
            population.mlp[client] = mu * population.mlp[client] + (1 - mu) * mixed_mlp[i]


def run_oracle(population, data, settings, layers, agg_name, agg, seed, rounds):
    """Run ``rounds`` rounds on ``population`` in place; returns each round's {position: loss}."""
    gens = {name: generator(seed, name) for name in ("client_sampling", "train_negatives", "shuffle",
                                                     "agg_sampling")}
    losses = []
    for round_index in range(rounds):
        batches, round_losses = train_round(population, data, settings, layers, gens)
        aggregate(population, batches, agg_name, agg, gens, round_index)
        losses.append(round_losses)
    return losses
