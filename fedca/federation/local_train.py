"""Local training of all participants at once (ALGORITHMS.md §0.3, §0.6).

Per round, each participant's item rows that its instances touch are gathered into one
*compact table* [R, d] (rows grouped by client, in training order). Rows a client never
touches have zero gradient and zero Adam moments, so they cannot move: training the compact
table and scattering it back equals training the full [I, d] table. Every step:

* the clients still busy are a prefix of the training order (minus early-stopped ones);
* each busy client takes its next mini-batch; the loss is the sum over clients of each
  client's mean BCE, so gradients never mix between clients;
* Adam updates only the busy clients' rows, each with its own step counter.

The official early stop ends a client's epochs when its running-average loss (all batches
of all epochs so far) changes by less than ``threshold`` relative to the previous epoch's.
"""

from dataclasses import dataclass
import torch

from fedca.federation.adam import RowAdam
from fedca.federation.batches import RoundBatches, epoch_order
from fedca.federation.population import Population
from fedca.models.backbones import Backbone


@dataclass
class LocalSettings:
    """Optimiser and stopping settings of local training."""

    epochs: int
    lr_embedding: float
    lr_structure: float
    weight_decay: float
    early_stop: bool
    threshold: float


@dataclass
class LocalResult:
    """losses [n] each client's last running-average loss; epochs [n] epochs each client ran;
    finite [n] whether the client's loss and trained parameters are all finite;
    row_keys [R] ``position * I + item`` of the compact rows (position in training order)."""

    losses: torch.Tensor
    finite: torch.Tensor
    epochs: torch.Tensor
    row_keys: torch.Tensor
    row_counts: torch.Tensor


def _runs(active: torch.Tensor, steps: torch.Tensor, row_offsets: torch.Tensor) -> tuple:
    """Group the busy positions ``active`` (ascending) into runs of neighbours with equal step
    numbers; return (row runs, client runs) as lists of (first, end, step)."""
    if active.numel() == 0:
        return [], []
    step_of = steps[active]
    breaks = torch.ones(active.numel(), dtype=torch.bool)
    breaks[1:] = (active[1:] != active[:-1] + 1) | (step_of[1:] != step_of[:-1])
    starts = torch.nonzero(breaks).squeeze(1)
    ends = torch.cat([starts[1:], torch.tensor([active.numel()])]) - 1
    first, last, step = active[starts], active[ends] + 1, step_of[starts]
    rows = torch.stack([row_offsets[first], row_offsets[last], step], 1).tolist()
    clients = torch.stack([first, last, step], 1).tolist()
    return [tuple(r) for r in rows], [tuple(c) for c in clients]


def local_train(population: Population, batches: RoundBatches, backbone: Backbone, settings: LocalSettings,
                shuffle: torch.Generator) -> LocalResult:
    """Train every client of ``batches`` from its current state in ``population`` (updated in place)."""
    device = population.items.device
    clients = batches.clients.to(device)
    n, num_items = clients.numel(), population.items.shape[1]
    owner = batches.owner
    keys = owner * num_items + batches.items
    row_keys, instance_rows, row_counts = torch.unique(keys, return_inverse=True, return_counts=True)
    row_owner = row_keys // num_items
    row_offsets = torch.zeros(n + 1, dtype=torch.long)
    row_offsets[1:] = torch.cumsum(torch.bincount(row_owner, minlength=n), 0)
    row_clients, row_items = clients[row_owner.to(device)], (row_keys % num_items).to(device)

    table = population.items[row_clients, row_items]  # [R, d]
    user = population.user[clients].clone()  # [n, d]
    mlp = population.mlp[clients].clone()  # [n, P]
    item_adam = RowAdam(table, settings.lr_embedding)
    user_adam = RowAdam(user, settings.lr_embedding)
    mlp_adam = RowAdam(mlp, settings.lr_structure, settings.weight_decay)
    dim = table.shape[1]
    table_grad, user_grad, mlp_grad = torch.zeros_like(table), torch.zeros_like(user), torch.zeros_like(mlp)

    instance_rows, labels = instance_rows.to(device), batches.labels.to(device)
    sizes, num_batches = batches.sizes, batches.num_batches
    steps = torch.zeros(n, dtype=torch.long)
    stopped = torch.zeros(n, dtype=torch.bool)
    epochs_run = torch.zeros(n, dtype=torch.long)
    loss_sum = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.float64)
    previous = torch.zeros(n, dtype=torch.float64)
    step_tensors: dict = {}
    offsets = batches.offsets.to(device)
    within_batch = torch.arange(batches.batch_size, device=device)
    busy_count = torch.bincount(num_batches, minlength=int(num_batches.max()) + 1).flip(0).cumsum(0).flip(0)

    for epoch in range(settings.epochs):
        if bool(stopped.all()):
            break
        order = epoch_order(batches, shuffle).to(device)
        epochs_run += (~stopped).long()
        for step in range(int(num_batches[~stopped].max())):
            prefix = int(busy_count[step + 1])
            active = torch.nonzero(~stopped[:prefix]).squeeze(1)
            steps[active] += 1
            row_runs, client_runs = _runs(active, steps, row_offsets)
            for _, _, number in client_runs:
                if number not in step_tensors:
                    step_tensors[number] = torch.tensor(float(number), device=device)
            active_dev = active.to(device)
            position = step * batches.batch_size + within_batch  # [B]
            valid = position.unsqueeze(0) < sizes[active].to(device).unsqueeze(1)  # [a, B]
            first = offsets[active_dev].unsqueeze(1)  # [a, 1]
            picked = order.index_select(0, torch.where(valid, first + position, first).reshape(-1))
            rows = instance_rows.index_select(0, picked).view(valid.shape)  # [a, B], padding -> own first instance
            target = labels.index_select(0, picked).view(valid.shape)  # [a, B]

            flat_rows = rows.reshape(-1)
            user_rows = user.index_select(0, active_dev)  # [a, d]
            item_vectors = table.index_select(0, flat_rows).view(*rows.shape, dim)  # [a, B, d]
            mlp_rows = mlp.index_select(0, active_dev)  # [a, P]
            counts = valid.sum(1)  # [a]
            weight = valid / counts.unsqueeze(1)  # [a, B]: each client's mean over its batch
            per_instance, grad_user, grad_items, grad_mlp = backbone.loss_and_grads(
                user_rows, item_vectors, mlp_rows, target.to(table.dtype), weight)
            per_client = (per_instance * valid).sum(1) / counts  # [a]

            table_grad.index_add_(0, flat_rows, grad_items.reshape(-1, dim))
            user_grad[active_dev] = grad_user
            item_adam.step(table_grad, row_runs, step_tensors)
            user_adam.step(user_grad, client_runs, step_tensors)
            if mlp.shape[1]:
                mlp_grad[active_dev] = grad_mlp
                mlp_adam.step(mlp_grad, client_runs, step_tensors)
            table_grad.index_fill_(0, flat_rows, 0.0)
            batch_losses = per_client.detach().double().cpu()
            loss_sum[active] += batch_losses * counts.cpu()
            seen[active] += counts.cpu().double()

        running = loss_sum / seen.clamp(min=1)
        if settings.early_stop and epoch > 0:
            converged = (running - previous).abs() / (previous + 1e-5).abs() < settings.threshold
            stopped |= converged
        previous = running

    finite_rows = torch.isfinite(table).all(1).cpu()  # [R]
    bad_rows = torch.bincount(row_owner[~finite_rows], minlength=n)
    losses = loss_sum / seen.clamp(min=1)
    finite = (torch.isfinite(losses) & (bad_rows == 0) & torch.isfinite(user).all(1).cpu()
              & torch.isfinite(mlp).all(1).cpu())
    population.items[row_clients, row_items] = table
    population.user[clients] = user
    population.mlp[clients] = mlp
    return LocalResult(losses=losses, finite=finite, epochs=epochs_run, row_keys=row_keys,
                       row_counts=row_counts)
