"""Local training of all participants at once (docs/methods/local_training.md).

Per round, each participant's item rows that its instances touch are gathered into one
*compact table* [R, d] (rows grouped by client, in training order). Rows a client never
touches have zero gradient and zero Adam moments, so they cannot move: training the compact
table and scattering it back equals training the full [I, d] table. Every step:

* the clients still busy are a prefix of the training order (minus early-stopped ones);
* each busy client takes its next mini-batch; the loss is the sum over clients of each
  client's mean BCE, so gradients never mix between clients;
* the update rule moves only the busy clients' parameters: ``adam`` (a fresh Adam per client
  per round, each with its own step counter, §Adam), ``alternating_sgd`` (PFedRec, §Alternating SGD: a
  plain SGD step of the score function with the item table fixed, then a plain SGD step of the
  item rows at the new score function) or ``sgd`` (GPFedRec: one plain SGD step of every block at
  once, each block at its own rate).

The official early stop ends a client's epochs when its running-average loss (all batches
of all epochs so far) changes by less than ``threshold`` relative to the previous epoch's.

An optional pull term (``Anchors``, pFedGraph, ``pull.AnchorPull``, with ``adam``) or proximal
term (``Proximal``, GPFedRec, ``ProximalRows``, with ``sgd``) adds to each client's loss. The
proximal term reaches every row of the table, also rows outside the compact table: those only
decay towards the target, by the factor (1 - item_lr * 2 coef) per step, applied in closed form
after the round.

Two kernels train the compact table (``choose_kernel``). ``torch`` (``_train_batched``) steps all
busy clients at once as above, on any device and backbone. ``numba`` (``fused.train_round``)
runs each client's whole round in a compiled loop, for FCF or NCF with Adam on the CPU;
``auto`` takes it where it applies.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import torch

from fedca.aggregators.base import Anchors, Proximal
from fedca.errors import FedcaError
from fedca.federation import distributed
from fedca.federation.adam import RowAdam
from fedca.federation.batches import EpochShuffle, RoundBatches
from fedca.federation.population import Population
from fedca.federation.pull import AnchorPull
from fedca.models.backbones import BACKBONES, Backbone, ItemGrads

try:
    from fedca.federation import fused
except ImportError:  # numba missing or unusable here: only the torch kernel runs
    fused = None

KERNELS = ("auto", "torch", "numba")


@dataclass
class LocalSettings:
    """Optimiser and stopping settings of local training. The item learning rate of the SGD
    optimisers is ``lr_embedding * I * item_lr_eta + item_lr_offset`` when ``item_lr_eta`` > 0
    (PFedRec's official rule; GPFedRec's subtracts lr), else ``lr_embedding + item_lr_offset``.
    ``lr_user``: the user-vector rate of ``sgd`` (None: lr_embedding)."""

    epochs: int
    lr_embedding: float
    lr_structure: float
    weight_decay: float
    early_stop: bool
    threshold: float
    optimizer: str = "adam"
    item_lr_eta: float = 0.0
    kernel: str = "auto"
    lr_user: Optional[float] = None
    item_lr_offset: float = 0.0

    def item_lr(self, num_items: int) -> float:
        """The item-row learning rate of the SGD optimisers for a table of ``num_items`` rows."""
        return item_learning_rate(self.lr_embedding, self.item_lr_eta, self.item_lr_offset, num_items)


def item_learning_rate(lr_embedding: float, item_lr_eta: float, item_lr_offset: float, num_items: int) -> float:
    """lr_embedding * I * item_lr_eta + item_lr_offset (item_lr_eta = 0: lr_embedding + item_lr_offset)."""
    scale = num_items * item_lr_eta if item_lr_eta else 1.0
    return lr_embedding * scale + item_lr_offset


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


@dataclass
class Step:
    """One mini-batch step of the busy clients. active [a] positions (CPU) and active_dev (on the
    device); rows [a, B] compact rows of the batch (padding repeats the client's first instance);
    target, weight [a, B] labels and per-client mean weights; runs of rows and clients sharing a
    step counter; the busy prefix is clients [0, busy_clients) with compact rows [0, busy_rows)."""

    active: torch.Tensor
    active_dev: torch.Tensor
    rows: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    row_runs: list
    client_runs: list
    step_tensors: dict
    busy_clients: int
    busy_rows: int


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


class StepLayout:
    """Where each mini-batch of a round sits, fixed for the round (only the order changes per epoch).

    Step s of an epoch takes the busy prefix of the training order, clients [0, prefix[s]), and
    for each of them the instances at block positions s*B .. s*B + B - 1; slots past a client's
    last instance repeat its first one with weight 0. ``slots`` [S] lists, step after step, the
    block position of every slot (S = sum over steps of prefix * B), so one gather per epoch
    gives every step's rows and labels as a contiguous slice. ``dtype``: that of the trained
    parameters, for the per-slot batch-mean weights.
    """

    def __init__(self, batches: RoundBatches, device: torch.device, dtype: torch.dtype):
        self.num_batches = batches.num_batches  # [n]
        size = batches.batch_size
        most = int(self.num_batches.max())
        busy = torch.bincount(self.num_batches, minlength=most + 1).flip(0).cumsum(0).flip(0)
        self.prefix = busy[1:].tolist()  # clients busy at each step
        within = torch.arange(size)
        slots, valid = [], []
        for step, prefix in enumerate(self.prefix):
            position = step * size + within  # [B]
            fits = position.unsqueeze(0) < batches.sizes[:prefix].unsqueeze(1)  # [prefix, B]
            first = batches.offsets[:prefix].unsqueeze(1)
            slots.append(torch.where(fits, first + position, first).reshape(-1))
            valid.append(fits)
        self.slots = torch.cat(slots).to(device)  # [S]
        self.starts = [0, *torch.cumsum(torch.tensor(self.prefix) * size, 0).tolist()]
        self.size = size
        self.valid = [fits.to(device) for fits in valid]  # [prefix, B] per step
        self.counts = [fits.sum(1) for fits in self.valid]  # [prefix]
        # [prefix, B] per step, in the parameters' dtype (a float32 1 / count would round float64 gradients)
        self.weight = [fits.to(dtype) / counts.unsqueeze(1) for fits, counts in zip(self.valid, self.counts)]

    def step(self, step: int, epoch_rows: torch.Tensor, epoch_target: torch.Tensor,
             active: Optional[torch.Tensor]) -> tuple:
        """(rows, target, valid, weight [a, B], counts [a]) of step ``step`` for the busy positions
        ``active`` (None: the whole prefix), given this epoch's rows and labels per slot [S]."""
        shape = (self.prefix[step], self.size)
        span = slice(self.starts[step], self.starts[step + 1])
        parts = (epoch_rows[span].view(shape), epoch_target[span].view(shape), self.valid[step],
                 self.weight[step], self.counts[step])
        if active is None:
            return parts
        return tuple(part.index_select(0, active) for part in parts)


class EpochFeed:
    """Each epoch's rows and labels per slot of the step layout (``slots`` [S]), drawn one epoch
    ahead on a worker thread while the current epoch trains.

    The shuffle generator is still used in epoch order, one draw at a time, and a draw for an
    epoch that never runs (every client stopped early) is undone when the ``with`` block ends,
    so the generator ends where drawing epoch by epoch would have left it.
    """

    def __init__(self, shuffle_keys: EpochShuffle, generator: torch.Generator, slots: torch.Tensor,
                 instance_rows: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype, epochs: int):
        self.shuffle_keys, self.generator, self.slots = shuffle_keys, generator, slots
        self.instance_rows, self.labels, self.dtype = instance_rows, labels, dtype
        self.remaining = epochs
        self.worker = ThreadPoolExecutor(max_workers=1)
        self.pending, self.state_before = None, None
        self._submit()

    def _draw(self) -> tuple:
        picked = self.shuffle_keys.order(self.generator).to(self.instance_rows.device)
        picked = picked.index_select(0, self.slots)  # [S] instance of every slot
        return self.instance_rows.index_select(0, picked), self.labels.index_select(0, picked).to(self.dtype)

    def _submit(self) -> None:
        self.pending = None
        if self.remaining:
            self.remaining -= 1
            self.state_before = self.generator.get_state()
            self.pending = self.worker.submit(self._draw)

    def next(self) -> tuple:
        """(rows, labels) [S] of the next epoch."""
        drawn = self.pending.result()
        self._submit()
        return drawn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pending is not None:
            self.pending.result()
            self.generator.set_state(self.state_before)
        self.worker.shutdown()


def batch_loss_and_grads(backbone: Backbone, table: torch.Tensor, user: torch.Tensor, mlp: torch.Tensor,
                         step: Step) -> tuple:
    """The busy clients' mini-batch through the backbone: (flat_rows [a*B], per-instance BCE [a, B],
    grads of user [a, d], item vectors (``ItemGrads``) and mlp [a, P])."""
    flat_rows = step.rows.reshape(-1)
    item_vectors = table.index_select(0, flat_rows).view(*step.rows.shape, table.shape[1])  # [a, B, d]
    grads = backbone.loss_and_grads(user.index_select(0, step.active_dev), item_vectors,
                                    mlp.index_select(0, step.active_dev), step.target, step.weight)
    return (flat_rows, *grads)


@dataclass
class RuleInputs:
    """What an update rule is built from for one round: the compact table [R, d], user [n, d]
    and mlp [n, P] it steps in place, the backbone, the settings, I, the local terms (pull,
    proximal; each rule takes only those it declares), the round's batches and the compact rows'
    owners [R] and offsets [n + 1]."""

    table: torch.Tensor
    user: torch.Tensor
    mlp: torch.Tensor
    backbone: Backbone
    settings: LocalSettings
    num_items: int
    pull: Optional[AnchorPull]
    proximal: Optional["ProximalRows"]
    batches: RoundBatches
    row_owner: torch.Tensor
    row_offsets: torch.Tensor


class AdamRule:
    """A fresh Adam per client per round over (u, V rows) at ``lr_embedding`` and the MLP at
    ``lr_structure`` with L2 ``weight_decay`` (the official optimiser).

    The item gradient of the busy rows is built in one of two ways, chosen per client for the
    round (``rank_one_split``): clients before position ``split`` in training order scatter,
    the rest (backbones whose item gradient is logit gradient x user vector) go rank-one.

    * *scatter*: their table_grad rows [0, split_row) are zero between steps; the batch's
      d-vectors are summed into their rows (``index_add_``) and those rows are zeroed again
      after the update. The cost grows with the client's instances in the batch.
    * *rank-one*: one number per instance is summed into ``row_logit_grad`` [R] and each busy
      row from ``split_row`` on is overwritten with it times its owner's user vector. The cost
      grows with the client's rows, so it suits clients with few rows per batch.

    The compiled CPU kernel (``fused.py``) implements this rule too (``fused_kernel``). Local
    terms it trains (``terms``): the pull term.
    """

    fused_kernel = True
    terms = ("pull",)

    @classmethod
    def build(cls, inputs: RuleInputs) -> "AdamRule":
        counts = inputs.row_offsets[1:] - inputs.row_offsets[:-1]
        split = rank_one_split(inputs.batches.num_batches, counts, inputs.batches.batch_size,
                               inputs.backbone.rank_one_item_grads)
        return cls(inputs.table, inputs.user, inputs.mlp, inputs.backbone, inputs.settings, inputs.pull,
                   inputs.row_owner.to(inputs.table.device), split, int(inputs.row_offsets[split]))

    def __init__(self, table, user, mlp, backbone: Backbone, settings: LocalSettings, pull: Optional[AnchorPull],
                 row_owner: torch.Tensor, split: int, split_row: int):
        self.table, self.user, self.mlp, self.backbone, self.pull = table, user, mlp, backbone, pull
        self.row_owner = row_owner  # [R] training-order position of each compact row's client
        self.split, self.split_row = split, split_row
        self.item_adam = RowAdam(table, settings.lr_embedding)
        self.user_adam = RowAdam(user, settings.lr_embedding)
        self.mlp_adam = RowAdam(mlp, settings.lr_structure, settings.weight_decay)
        self.table_grad, self.user_grad = torch.zeros_like(table), torch.zeros_like(user)
        self.mlp_grad = torch.zeros_like(mlp)
        self.row_logit_grad = torch.zeros(table.shape[0], dtype=table.dtype, device=table.device)

    def _item_grad(self, step: Step, grads: ItemGrads) -> torch.Tensor:
        """Write d loss / d V into table_grad for the busy rows (zero on rows the batch missed);
        returns the scattered rows, to be zeroed after the update."""
        scattering = int(torch.searchsorted(step.active, self.split)) if self.split < step.busy_clients \
            else step.active.numel()  # active positions before the split
        scattered = step.rows[:scattering].reshape(-1)
        if scattering:
            self.table_grad.index_add_(0, scattered, grads.part(0, scattering).full().reshape(-1, self.table.shape[1]))
        if scattering < step.active.numel():
            rank_one = step.rows[scattering:].reshape(-1)
            self.row_logit_grad.index_add_(0, rank_one, grads.logit[scattering:].reshape(-1))
            rows = slice(self.split_row, step.busy_rows)
            owners = torch.index_select(self.user, 0, self.row_owner[rows], out=self.table_grad[rows])
            owners.mul_(self.row_logit_grad[rows].unsqueeze(1))
            self.row_logit_grad[rows].zero_()
        return scattered

    def step(self, step: Step) -> torch.Tensor:
        """Take one step; returns the per-instance BCE [a, B]."""
        _, per_instance, grad_user, grad_items, grad_mlp = batch_loss_and_grads(
            self.backbone, self.table, self.user, self.mlp, step)
        scattered = self._item_grad(step, grad_items)
        self.user_grad[step.active_dev] = grad_user
        if self.mlp.shape[1]:
            self.mlp_grad[step.active_dev] = grad_mlp
        if self.pull is not None:
            self.pull.add_grads(self.table, self.mlp, self.table_grad, self.mlp_grad, step)
        self.item_adam.step(self.table_grad, step.row_runs, step.step_tensors)
        self.user_adam.step(self.user_grad, step.client_runs, step.step_tensors)
        if self.mlp.shape[1]:
            self.mlp_adam.step(self.mlp_grad, step.client_runs, step.step_tensors)
        if self.pull is not None:
            self.mlp_grad.zero_()
            self.table_grad[:min(self.split_row, step.busy_rows)].zero_()
        else:
            self.table_grad.index_fill_(0, scattered, 0.0)
        return per_instance


RANK_ONE_ROWS_PER_INSTANCE = 8  # on a CPU, scattering one instance costs about as much as 8 rank-one rows


def rank_one_split(num_batches: torch.Tensor, rows: torch.Tensor, batch_size: int, rank_one: bool) -> int:
    """The training-order position from which clients take the rank-one path (n: none does).

    num_batches and rows [n] per client. A client costs num_batches * rows per epoch on the
    rank-one path and num_batches * batch_size * RANK_ONE_ROWS_PER_INSTANCE scattering; the
    scattering clients must be a prefix (the busy clients of a step are one), so the split is
    the prefix length with the least total cost."""
    n = num_batches.numel()
    if not rank_one or n == 0:
        return n
    extra = (num_batches * (batch_size * RANK_ONE_ROWS_PER_INSTANCE - rows)).double()  # [n] cost of scattering
    totals = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(extra, 0)])  # [n + 1]
    return int(torch.argmin(totals))


class AlternatingSGDRule:
    """PFedRec's two plain SGD steps per mini-batch: the score function (u = w_i, mlp = b_i) at
    ``lr_structure`` with the item rows fixed, then the item rows at ``item_lr`` with the new
    score function (no weight decay, no momentum). No local term."""

    fused_kernel = False
    terms = ()

    @classmethod
    def build(cls, inputs: RuleInputs) -> "AlternatingSGDRule":
        return cls(inputs.table, inputs.user, inputs.mlp, inputs.backbone, inputs.settings.lr_structure,
                   inputs.settings.item_lr(inputs.num_items))

    def __init__(self, table, user, mlp, backbone: Backbone, lr_structure: float, item_lr: float):
        self.table, self.user, self.mlp, self.backbone = table, user, mlp, backbone
        self.lr_structure, self.item_lr = lr_structure, item_lr

    def step(self, step: Step) -> torch.Tensor:
        _, per_instance, grad_user, _, grad_mlp = batch_loss_and_grads(self.backbone, self.table, self.user,
                                                                        self.mlp, step)
        self.user.index_add_(0, step.active_dev, grad_user, alpha=-self.lr_structure)
        if self.mlp.shape[1]:
            self.mlp.index_add_(0, step.active_dev, grad_mlp, alpha=-self.lr_structure)
        flat_rows, _, _, grad_items, _ = batch_loss_and_grads(self.backbone, self.table, self.user, self.mlp, step)
        self.table.index_add_(0, flat_rows, grad_items.full().reshape(-1, self.table.shape[1]), alpha=-self.item_lr)
        return per_instance


class ProximalRows:
    """The proximal term ``coef * ||V - target||^2`` on the compact rows: target_rows [R, d] are
    the targets of the compact rows; ``steps`` [n] counts each client's steps, for the rows
    outside the compact table (``decay_untouched``)."""

    def __init__(self, proximal: Proximal, row_owner: torch.Tensor, row_items: torch.Tensor, table: torch.Tensor,
                 clients: int):
        self.coef = proximal.coef
        self.target_rows = proximal.target.to(table)[row_owner.to(table.device), row_items]  # [R, d]
        self.steps = torch.zeros(clients, dtype=torch.long)

    def step(self, table: torch.Tensor, step: Step, lr: float) -> None:
        """One SGD step of the term's gradient 2 coef (V - target) on the busy clients' compact
        rows, from their values before this step's other updates."""
        self.steps[step.active] += 1
        for first, end, _ in step.row_runs:
            rows = table[first:end]
            rows.sub_(rows - self.target_rows[first:end], alpha=lr * 2 * self.coef)

    def decay_untouched(self, blocks: torch.Tensor, target: torch.Tensor, lr: float) -> torch.Tensor:
        """[m, I, d] the tables ``blocks`` [m, I, d] (a chunk of the participants, in training order,
        with their ``target`` [m, I, d]) after the round's steps of the term alone: what rows outside
        the compact table end at."""
        factor = (1.0 - lr * 2 * self.coef) ** self.steps[:blocks.shape[0]].to(blocks)  # [m]
        return target + factor.view(-1, 1, 1) * (blocks - target)


class SGDRule:
    """GPFedRec's plain SGD: per mini-batch one step of every block from the same gradients,
    the user vectors at ``user_lr``, the item rows at ``item_lr`` and the MLP at ``mlp_lr``
    (no weight decay, no momentum), plus the proximal term's step on the item rows."""

    fused_kernel = False
    terms = ("proximal",)

    @classmethod
    def build(cls, inputs: RuleInputs) -> "SGDRule":
        settings = inputs.settings
        user_lr = settings.lr_embedding if settings.lr_user is None else settings.lr_user
        return cls(inputs.table, inputs.user, inputs.mlp, inputs.backbone, user_lr, settings.item_lr(inputs.num_items),
                   settings.lr_structure, inputs.proximal)

    def __init__(self, table, user, mlp, backbone: Backbone, user_lr: float, item_lr: float, mlp_lr: float,
                 proximal: Optional[ProximalRows]):
        self.table, self.user, self.mlp, self.backbone = table, user, mlp, backbone
        self.user_lr, self.item_lr, self.mlp_lr, self.proximal = user_lr, item_lr, mlp_lr, proximal

    def step(self, step: Step) -> torch.Tensor:
        flat_rows, per_instance, grad_user, grad_items, grad_mlp = batch_loss_and_grads(
            self.backbone, self.table, self.user, self.mlp, step)
        if self.proximal is not None:
            self.proximal.step(self.table, step, self.item_lr)
        self.table.index_add_(0, flat_rows, grad_items.full().reshape(-1, self.table.shape[1]), alpha=-self.item_lr)
        self.user.index_add_(0, step.active_dev, grad_user, alpha=-self.user_lr)
        if self.mlp.shape[1]:
            self.mlp.index_add_(0, step.active_dev, grad_mlp, alpha=-self.mlp_lr)
        return per_instance


def _finite_rows(values: torch.Tensor) -> torch.Tensor:
    """[rows] whether each row of ``values`` [rows, k] is finite. One sum settles the usual case
    (all finite); a non-finite or overflowing sum falls back to the per-row check."""
    if bool(torch.isfinite(values.sum())):
        return torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    return torch.isfinite(values).all(1)


RULES = {"adam": AdamRule, "alternating_sgd": AlternatingSGDRule, "sgd": SGDRule}  # model.optimizer -> rule
OPTIMIZERS = tuple(RULES)


def optimizers_taking(term: str) -> str:
    """The ``model.optimizer`` choices whose rule trains the local term ``term``, as "a or b"."""
    return " or ".join(name for name, rule in RULES.items() if term in rule.terms)


def numba_scope_error(backbone, optimizer: str, device: str) -> Optional[str]:
    """Why the numba kernel cannot train ``backbone`` (a Backbone or its class) with ``optimizer``
    on ``device`` (None: it can; ``device`` may be ``auto``, which the config cannot rule out)."""
    rule = RULES.get(optimizer)
    if backbone.fused_kernel and rule is not None and rule.fused_kernel and device != "cuda":
        return None
    models = " or ".join(name for name, kind in BACKBONES.items() if kind.fused_kernel)
    rules = " or ".join(name for name, kind in RULES.items() if kind.fused_kernel)
    return (f"kernel=numba covers model={models} with model.optimizer={rules} on the CPU, not model={backbone.name} "
            f"model.optimizer={optimizer} device={device}; use kernel=auto or kernel=torch")


def choose_kernel(settings: LocalSettings, backbone: Backbone, device: torch.device) -> str:
    """``torch`` or ``numba``: the kernel ``settings.kernel`` asks for, ``auto`` taking ``numba``
    for FCF or NCF with Adam on the CPU when numba is installed. Raises FedcaError when ``numba``
    is asked for a setup it does not cover."""
    scope_error = numba_scope_error(backbone, settings.optimizer, device.type)
    if settings.kernel == "torch" or (settings.kernel == "auto" and (scope_error or fused is None)):
        return "torch"
    if fused is None:
        raise FedcaError("kernel=numba needs the numba package (pip install numba); use kernel=torch")
    if scope_error:
        raise FedcaError(scope_error)
    return "numba"


def _term_error(settings: LocalSettings, anchors: Optional[Anchors], proximal: Optional[Proximal]) -> Optional[str]:
    """Why the local terms cannot be trained with ``settings.optimizer`` (None: they can)."""
    for term, given in (("pull", anchors), ("proximal", proximal)):
        if given is not None and term not in RULES[settings.optimizer].terms:
            return f"the {term} term is trained with model.optimizer={optimizers_taking(term)}, not {settings.optimizer}"
    return None


def local_train(population: Population, batches: RoundBatches, backbone: Backbone, settings: LocalSettings,
                shuffle: torch.Generator, anchors: Optional[Anchors] = None,
                proximal: Optional[Proximal] = None) -> LocalResult:
    """Train every client of ``batches`` from its current state in ``population`` (updated in place)."""
    term_error = _term_error(settings, anchors, proximal)
    if term_error:
        raise FedcaError(term_error)
    store = population.store
    device = store.device
    clients = batches.clients.to(device)
    n, num_items = clients.numel(), store.num_items
    owner = batches.owner
    keys = owner * num_items + batches.items
    row_keys, instance_rows, row_counts = torch.unique(keys, return_inverse=True, return_counts=True)
    row_owner = row_keys // num_items
    row_offsets = torch.zeros(n + 1, dtype=torch.long)
    row_offsets[1:] = torch.cumsum(torch.bincount(row_owner, minlength=n), 0)
    row_items = (row_keys % num_items).to(device)
    row_clients = clients[row_owner.to(device)]  # [R] the population index of each compact row

    table = store.rows(row_clients, row_items)  # [R, d]
    user = population.user[clients].clone()  # [n, d]
    mlp = population.mlp[clients].clone()  # [n, P]
    pull = None if anchors is None else AnchorPull(anchors, store, clients, row_owner, row_items, table, mlp)
    proximal_rows = None if proximal is None else ProximalRows(proximal, row_owner, row_items, table, n)
    instance_rows = instance_rows.to(device)
    kernel = choose_kernel(settings, backbone, device)
    if kernel != "numba" and distributed.ranks() is not None:
        raise FedcaError("a run across torchrun ranks shards the compiled kernel's local training (kernel=numba: "
                         "model=fcf or ncf with Adam on the CPU); run this one in a single process")
    if kernel == "numba":
        loss_sum, seen, epochs_run = fused.train_round(table, user, mlp, backbone, batches, row_offsets,
                                                       instance_rows, settings, shuffle, pull)
    else:
        loss_sum, seen, epochs_run = _train_batched(table, user, mlp, batches, backbone, settings, shuffle, pull,
                                                    row_owner, row_offsets, instance_rows, num_items,
                                                    proximal_rows)
    if proximal_rows is not None:
        _decay_untouched_rows(population, clients, proximal, proximal_rows, settings.item_lr(num_items))

    losses = loss_sum / seen.clamp(min=1)
    finite = torch.isfinite(losses) & _finite_rows(user).cpu() & _finite_rows(mlp).cpu()
    finite &= torch.bincount(row_owner[~_finite_rows(table).cpu()], minlength=n) == 0
    store.write_rows(row_clients, row_items, table)
    population.user[clients] = user
    population.mlp[clients] = mlp
    return LocalResult(losses=losses, finite=finite, epochs=epochs_run, row_keys=row_keys,
                       row_counts=row_counts)


PROXIMAL_CHUNK = 64  # participants whose whole tables are decayed at once (memory: 3 * 64 * I * d values)


def _decay_untouched_rows(population: Population, clients: torch.Tensor, proximal: Proximal,
                          proximal_rows: ProximalRows, item_lr: float) -> None:
    """Move every row of the participants' tables outside the compact table as the proximal term
    alone moved it over the round (the compact rows are written back afterwards)."""
    store = population.store
    for first in range(0, clients.numel(), PROXIMAL_CHUNK):
        chunk = clients[first:first + PROXIMAL_CHUNK]
        target = proximal.target[first:first + PROXIMAL_CHUNK].to(device=store.device, dtype=store.dtype)
        store.write_tables(chunk, proximal_rows.decay_untouched(store.tables(chunk), target, item_lr))


def _train_batched(table, user, mlp, batches: RoundBatches, backbone: Backbone, settings: LocalSettings,
                   shuffle: torch.Generator, pull: Optional[AnchorPull], row_owner: torch.Tensor,
                   row_offsets: torch.Tensor, instance_rows: torch.Tensor, num_items: int,
                   proximal: Optional[ProximalRows] = None) -> tuple:
    """The torch kernel: every busy client stepped at once, epoch after epoch, on table [R, d],
    user [n, d] and mlp [n, P] in place (``num_items`` sets the SGD item learning rate).
    Returns (loss_sum, seen) [n] float64 (summed BCE and instances over the epochs run) and
    epochs_run [n]."""
    device, n = table.device, user.shape[0]
    rule = RULES[settings.optimizer].build(RuleInputs(table, user, mlp, backbone, settings, num_items, pull, proximal,
                                                      batches, row_owner, row_offsets))
    layout = StepLayout(batches, device, table.dtype)
    labels = batches.labels.to(device)
    steps = torch.zeros(n, dtype=torch.long)
    stopped = torch.zeros(n, dtype=torch.bool)
    epochs_run = torch.zeros(n, dtype=torch.long)
    loss_sum = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.float64)
    previous = torch.zeros(n, dtype=torch.float64)
    step_tensors: dict = {}

    with EpochFeed(EpochShuffle(batches), shuffle, layout.slots, instance_rows, labels, table.dtype,
                   settings.epochs) as feed:
        for epoch in range(settings.epochs):
            if bool(stopped.all()):
                break
            epoch_rows, epoch_target = feed.next()
            epochs_run += (~stopped).long()
            for step in range(int(layout.num_batches[~stopped].max())):
                prefix = layout.prefix[step]
                active = torch.nonzero(~stopped[:prefix]).squeeze(1)
                steps[active] += 1
                row_runs, client_runs = _runs(active, steps, row_offsets)
                for _, _, number in client_runs:
                    if number not in step_tensors:
                        step_tensors[number] = torch.tensor(float(number), device=device)
                active_dev = active.to(device)
                rows, target, valid, weight, counts = layout.step(step, epoch_rows, epoch_target,
                                                                  None if active.numel() == prefix else active_dev)
                per_instance = rule.step(Step(active=active, active_dev=active_dev, rows=rows, target=target,
                                              weight=weight, row_runs=row_runs, client_runs=client_runs,
                                              step_tensors=step_tensors, busy_clients=prefix,
                                              busy_rows=int(row_offsets[prefix])))
                per_client = (per_instance * valid).sum(1) / counts  # [a]
                loss_sum[active] += per_client.detach().double().cpu() * counts.cpu()
                seen[active] += counts.cpu().double()

            running = loss_sum / seen.clamp(min=1)
            if settings.early_stop and epoch > 0:
                converged = (running - previous).abs() / (previous + 1e-5).abs() < settings.threshold
                stopped |= converged
            previous = running
    return loss_sum, seen, epochs_run
