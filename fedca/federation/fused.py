"""Compiled local training with Adam (numba, CPU): a whole round per client, FCF or NCF.

Within a round the clients never share a parameter, so each client's round (its epochs, each
a shuffle of its instances cut into mini-batches, each batch followed by its own Adam step,
and its early stop) can run start to finish while its rows and Adam moments stay in the CPU
cache. Threads take whole clients in groups of about equal cost; each client's arithmetic is
sequential, so the result does not depend on the thread count.

The arithmetic is that of the batched torch path (``local_train.AdamRule`` and the epoch loop
of ``local_train``): the same shuffle noise from the same generator, BCE on sigmoid scores
with PyTorch's clamps and closed-form backward, per-client mean over the batch, gradients at
the parameters before the step, Adam with per-client step counts (see ``_adam_step`` for its
one rounding difference) at ``lr_embedding`` for u and V and ``lr_structure`` with L2
``weight_decay`` for the MLP, the optional pull term, and the official early stop. Otherwise
only the summation order differs.

Backbones: FCF (logit u . v; the item gradient (d loss / d logit) x u is formed inside the
Adam loop, never stored) and NCF (logit MLP([u; v]), ReLU between layers; the MLP is one flat
row per client, layer by layer weight [out, in] then bias [out], as ``backbones.NCF`` keeps it).
"""

import math
from collections import namedtuple

import numba
import numpy as np
import torch

from fedca.federation import distributed
from fedca.federation.adam import BETA1, BETA2, EPS
from fedca.federation.batches import EpochShuffle
from fedca.models.backbones import NonFiniteScores

NOISE_BITS = EpochShuffle.NOISE_BITS

# hyper[...]: float constants in the table's dtype, so the compiled loops stay in that dtype
BETA1_AT, BETA2_AT, EPS_AT, REST1_AT, REST2_AT, ONE_AT, TINY_AT, CLAMP_AT = range(8)

Params = namedtuple("Params", "table table_avg table_avg_sq user user_avg user_avg_sq mlp mlp_avg mlp_avg_sq")
Params.__doc__ = """Trained in place: table [R, d] compact rows, user [n, d], mlp [n, P], each with its two
Adam moments."""
Round = namedtuple("Round", "noise offsets row_offsets instance_rows labels layers batch_size epochs early_stop "
                            "threshold lr_embedding lr_structure weight_decay hyper")
Round.__doc__ = """What the round trains on: noise [E, T] int32 per epoch; offsets [n + 1] and row_offsets
[n + 1] delimit each client's instances and compact rows; instance_rows [T], labels [T];
layers [L, 4] (in, out, weight offset, bias offset) of each MLP layer (L = 0: FCF); the
local-training settings; hyper [8] float constants (``*_AT``)."""
Pull = namedtuple("Pull", "scale kappa kappa_mlp rest_dot rest_sq")
Pull.__doc__ = """pFedGraph's pull term: scale = sign * strength (0: none); kappa [R, d] and kappa_mlp
[n, P] the anchors (empty without a pull); rest_dot, rest_sq [n] float64: <kappa, theta> and
||theta||^2 of the rows outside the compact table."""
Totals = namedtuple("Totals", "loss_sum seen epochs_run broken")
Totals.__doc__ = """Per client [n]: summed BCE and instances (float64), epochs run, and whether a score
turned NaN."""
Scratch = namedtuple("Scratch", "scalars user_grad old_user logit_grad row_grad mlp_grad ones hidden deltas "
                                "order bucket_ends batch_rows batch_labels")
Scratch.__doc__ = """One thread's working arrays, sized for the largest client. scalars [7] holds values
rounded to the table's dtype: batch-mean weight, batch loss, embedding step size, 1 / sqrt(1 -
beta2^t), pull (along, back), MLP step size."""


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adam_step(value, avg, avg_sq, grad, step_size, inv_bias2_sqrt, hyper):
    """One Adam update of one element: (value, avg, avg_sq) after it. The denominator is
    sqrt(v) * inv_bias2_sqrt + eps: torch divides by sqrt(1 - beta2^t) instead, one division
    more, within an ulp of it."""
    avg = avg * hyper[BETA1_AT] + grad * hyper[REST1_AT]
    avg_sq = avg_sq * hyper[BETA2_AT] + grad * grad * hyper[REST2_AT]
    return value - step_size * avg / (math.sqrt(avg_sq) * inv_bias2_sqrt + hyper[EPS_AT]), avg, avg_sq


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adam(param, exp_avg, exp_avg_sq, grad, step_size, inv_bias2_sqrt, hyper):
    """Adam on the flat arrays param, exp_avg, exp_avg_sq with gradient grad (one length; slices
    that start at index 0, so the loop vectorises)."""
    for j in range(param.shape[0]):
        param[j], exp_avg[j], exp_avg_sq[j] = _adam_step(param[j], exp_avg[j], exp_avg_sq[j], grad[j], step_size,
                                                         inv_bias2_sqrt, hyper)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adam_rank_one(rows, exp_avg, exp_avg_sq, logit_grad, user, kappa, along, back, step_size, inv_bias2_sqrt,
                   hyper):
    """Adam on one client's FCF rows [r, d] (and their moments) whose gradient is logit_grad [r] x
    user [d], plus, when ``kappa`` [r, d] is not empty, the pull term's along * kappa - back * rows."""
    pulled = kappa.shape[0] > 0
    for row in range(rows.shape[0]):
        value, avg, avg_sq = rows[row], exp_avg[row], exp_avg_sq[row]
        scale = logit_grad[row]
        for k in range(rows.shape[1]):
            g = scale * user[k]
            if pulled:
                g = (g + along * kappa[row, k]) - back * value[k]
            value[k], avg[k], avg_sq[k] = _adam_step(value[k], avg[k], avg_sq[k], g, step_size, inv_bias2_sqrt,
                                                     hyper)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _add_pull(grad, values, kappa, along, back):
    """grad += along * kappa - back * values (flat arrays of one length)."""
    for j in range(grad.shape[0]):
        grad[j] = (grad[j] + along * kappa[j]) - back * values[j]


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz"})
def _dot_and_square(kappa, values):
    """(sum kappa * values, sum values^2) in float64 over two flat arrays of one length, summed in
    any order (vectorised)."""
    dot, sq = 0.0, 0.0
    for j in range(values.shape[0]):
        dot += kappa[j] * values[j]
        sq += values[j] * values[j]
    return dot, sq


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _pull_coefficients(rows, kappa, mlp, kappa_mlp, rest_dot, rest_sq, scale, scalars):
    """Write the pull term's (along, back) into scalars[4], scalars[5]: its gradient is
    along * kappa - back * theta for the client's rows [r, d] (kappa [r, d]) and MLP [P]
    (kappa_mlp [P]); rest_dot and rest_sq: <kappa, theta> and ||theta||^2 of the rest of its block."""
    row_dot, row_sq = _dot_and_square(kappa.reshape(-1), rows.reshape(-1))
    mlp_dot, mlp_sq = _dot_and_square(kappa_mlp, mlp)
    dot, sq = rest_dot + row_dot + mlp_dot, rest_sq + row_sq + mlp_sq
    norm = math.sqrt(sq)
    scalars[4] = scale / norm
    scalars[5] = scale * dot / norm ** 3


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _epoch_order(noise, order, bucket_ends):
    """order[:size] = the positions 0 .. size-1 of ``noise`` [size] (values in [0, 2^31)) by (noise,
    position): the order of a stable sort by noise. The noise is uniform, so a bucket pass on its
    top bits leaves about one position per bucket and an insertion sort finishes in O(size)."""
    size = noise.shape[0]
    bits = 0
    while (1 << bits) < size:
        bits += 1
    shift = NOISE_BITS - bits
    ends = bucket_ends[:(1 << bits) + 1]
    ends[:] = 0
    for position in range(size):
        ends[(noise[position] >> shift) + 1] += 1
    for bucket in range((1 << bits)):
        ends[bucket + 1] += ends[bucket]
    for position in range(size):
        bucket = noise[position] >> shift
        order[ends[bucket]] = position
        ends[bucket] += 1
    for i in range(1, size):
        position = order[i]
        value = noise[position]
        j = i - 1
        while j >= 0 and noise[order[j]] > value:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = position


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _bce(logit, label, weight, hyper):
    """(BCE of sigmoid(logit), d weight * BCE / d logit, whether the score is NaN), in PyTorch's
    clamps and closed-form backward: (p - y) / max(p (1 - p), 1e-12) * p (1 - p)."""
    one, tiny, clamp = hyper[ONE_AT], hyper[TINY_AT], hyper[CLAMP_AT]
    prob = one / (one + math.exp(-logit))
    if label > 0:
        loss = -max(math.log(prob), clamp)
    else:
        loss = -max(math.log1p(-prob), clamp)
    slope = (one - prob) * prob
    return loss, weight * (prob - label) / max(slope, tiny) * slope, prob != prob


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _fcf_batch(rows, labels, table, user, weight, hyper, row_logit_grad, user_grad):
    """FCF forward and backward of one mini-batch (rows of ``table`` [r, d] and labels [b]) at the
    user vector ``user`` [d]: adds d loss / d logit into row_logit_grad [r] and d loss / d u into
    user_grad [d]; returns the summed BCE, or NaN when a score is NaN."""
    batch_loss = hyper[ONE_AT] - hyper[ONE_AT]
    for t in range(rows.shape[0]):
        row = rows[t]
        vector = table[row]
        logit = hyper[ONE_AT] - hyper[ONE_AT]
        for k in range(user.shape[0]):
            logit += vector[k] * user[k]
        loss, grad, broken = _bce(logit, labels[t], weight, hyper)
        if broken:
            return math.nan
        batch_loss += loss
        row_logit_grad[row] += grad
        for k in range(user.shape[0]):
            user_grad[k] += grad * vector[k]
    return batch_loss


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz"})
def _dot(left, right):
    """sum(left * right) over two 1-D arrays of one length, summed in any order (vectorised)."""
    total = left[0] - left[0]
    for j in range(left.shape[0]):
        total += left[j] * right[j]
    return total


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _ncf_batch(rows, labels, table, user, mlp, layers, weight, hyper, scratch):
    """NCF forward and backward of one mini-batch (rows of ``table`` [r, d] and labels [b]) at
    ``user`` [d] and ``mlp`` [P]: adds d loss / d V into scratch.row_grad [r, d], d loss / d u into
    scratch.user_grad and d loss / d mlp into scratch.mlp_grad; returns the summed BCE, or NaN when
    a score is NaN. Activations and deltas are kept unit by instance ([width, b] per layer), so
    every inner loop runs along the batch."""
    dim, depth, count = user.shape[0], layers.shape[0], rows.shape[0]
    hidden, deltas, ones = scratch.hidden, scratch.deltas, scratch.ones[:count]  # [L + 1, width, B]: first count
    for k in range(dim):
        hidden[0, k, :] = user[k]
    for t in range(count):
        vector = table[rows[t]]
        for k in range(dim):
            hidden[0, dim + k, t] = vector[k]
    for layer in range(depth):
        fan_in, fan_out, at, bias_at = layers[layer, 0], layers[layer, 1], layers[layer, 2], layers[layer, 3]
        for o in range(fan_out):
            outputs = hidden[layer + 1, o]
            outputs[:] = mlp[bias_at + o]
            for i in range(fan_in):
                w, inputs = mlp[at + o * fan_in + i], hidden[layer, i]
                for t in range(count):
                    outputs[t] += w * inputs[t]
            if layer < depth - 1:
                for t in range(count):
                    if outputs[t] < 0:
                        outputs[t] = 0.0
    batch_loss = hyper[ONE_AT] - hyper[ONE_AT]
    logits, top = hidden[depth, 0], deltas[depth, 0]
    for t in range(count):
        loss, top[t], broken = _bce(logits[t], labels[t], weight, hyper)
        if broken:
            return math.nan
        batch_loss += loss
    for layer in range(depth - 1, -1, -1):
        fan_in, fan_out, at, bias_at = layers[layer, 0], layers[layer, 1], layers[layer, 2], layers[layer, 3]
        for o in range(fan_out):
            up = deltas[layer + 1, o]
            scratch.mlp_grad[bias_at + o] += _dot(up[:count], ones)
            for i in range(fan_in):
                scratch.mlp_grad[at + o * fan_in + i] += _dot(up[:count], hidden[layer, i, :count])
        for i in range(fan_in):
            down = deltas[layer, i]
            down[:] = 0.0
            for o in range(fan_out):
                w, up = mlp[at + o * fan_in + i], deltas[layer + 1, o]
                for t in range(count):
                    down[t] += w * up[t]
            if layer > 0:
                inputs = hidden[layer, i]
                for t in range(count):
                    if inputs[t] <= 0:
                        down[t] = 0.0
    for k in range(dim):
        scratch.user_grad[k] += _dot(deltas[0, k, :count], ones)
    for t in range(count):
        item_grad = scratch.row_grad[rows[t]]
        for k in range(dim):
            item_grad[k] += deltas[0, dim + k, t]
    return batch_loss


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _client_round(client, params, plan, pull, scratch, totals):
    """Train ``client`` for up to ``plan.epochs`` epochs; returns False when a score turned NaN."""
    first, end = plan.offsets[client], plan.offsets[client + 1]
    row_first = plan.row_offsets[client]
    block = slice(row_first, plan.row_offsets[client + 1])
    rows, avg_rows, avg_sq_rows = params.table[block], params.table_avg[block], params.table_avg_sq[block]
    user, mlp = params.user[client], params.mlp[client]
    pulled = pull.scale != 0.0
    kappa_rows = pull.kappa[block] if pulled else pull.kappa
    kappa_mlp = pull.kappa_mlp[client] if pulled else pull.kappa_mlp[0:0].reshape(-1)
    scalars, old_user, user_grad = scratch.scalars, scratch.old_user, scratch.user_grad  # scalars: see Scratch
    ncf = plan.layers.shape[0] > 0
    row_grad, logit_grad = scratch.row_grad[:rows.shape[0]], scratch.logit_grad[:rows.shape[0]]
    size = end - first
    steps = 0
    previous = 0.0
    for epoch in range(plan.epochs):
        totals.epochs_run[client] += 1
        _epoch_order(plan.noise[epoch, first:end], scratch.order, scratch.bucket_ends)
        for start in range(0, size, plan.batch_size):
            count = min(plan.batch_size, size - start)
            batch_rows, batch_labels = scratch.batch_rows[:count], scratch.batch_labels[:count]
            for t in range(count):
                instance = first + scratch.order[start + t]
                batch_rows[t] = plan.instance_rows[instance] - row_first
                batch_labels[t] = plan.labels[instance]
            scalars[0] = 1.0 / count
            old_user[:] = user
            user_grad[:] = 0.0
            if ncf:
                scratch.mlp_grad[:] = 0.0
                batch_loss = _ncf_batch(batch_rows, batch_labels, rows, old_user, mlp, plan.layers, scalars[0],
                                        plan.hyper, scratch)
            else:
                batch_loss = _fcf_batch(batch_rows, batch_labels, rows, old_user, scalars[0], plan.hyper,
                                        logit_grad, user_grad)
            if batch_loss != batch_loss:
                return False
            scalars[1] = batch_loss / count
            totals.loss_sum[client] += np.float64(scalars[1]) * count
            totals.seen[client] += count
            steps += 1
            scalars[2] = plan.lr_embedding / (1.0 - BETA1 ** steps)
            scalars[3] = 1.0 / math.sqrt(1.0 - BETA2 ** steps)
            if pulled:
                _pull_coefficients(rows, kappa_rows, mlp, kappa_mlp, pull.rest_dot[client], pull.rest_sq[client],
                                   pull.scale, scalars)
            if ncf:
                if pulled:
                    _add_pull(row_grad.reshape(-1), rows.reshape(-1), kappa_rows.reshape(-1), scalars[4], scalars[5])
                    _add_pull(scratch.mlp_grad, mlp, kappa_mlp, scalars[4], scalars[5])
                _adam(rows.reshape(-1), avg_rows.reshape(-1), avg_sq_rows.reshape(-1), row_grad.reshape(-1),
                      scalars[2], scalars[3], plan.hyper)
                row_grad[:] = 0.0
                for j in range(mlp.shape[0]):
                    scratch.mlp_grad[j] += plan.weight_decay * mlp[j]
                scalars[6] = plan.lr_structure / (1.0 - BETA1 ** steps)
                _adam(mlp, params.mlp_avg[client], params.mlp_avg_sq[client], scratch.mlp_grad, scalars[6],
                      scalars[3], plan.hyper)
            else:
                _adam_rank_one(rows, avg_rows, avg_sq_rows, logit_grad, old_user, kappa_rows, scalars[4], scalars[5],
                               scalars[2], scalars[3], plan.hyper)
                logit_grad[:] = 0.0
            _adam(user, params.user_avg[client], params.user_avg_sq[client], user_grad, scalars[2], scalars[3],
                  plan.hyper)
        running = totals.loss_sum[client] / max(totals.seen[client], 1.0)
        if plan.early_stop and epoch > 0 and abs(running - previous) / abs(previous + 1e-5) < plan.threshold:
            break
        previous = running
    return True


@numba.njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _train_round(group_offsets, group_clients, params, plan, pull, totals, max_rows, max_size, width):
    """Train every client; thread group g takes group_clients[group_offsets[g]: group_offsets[g + 1]]."""
    dtype = params.table.dtype
    for group in numba.prange(group_offsets.shape[0] - 1):
        dim, mlp_size, depth = params.user.shape[1], params.mlp.shape[1], plan.layers.shape[0]
        scratch = Scratch(np.zeros(7, dtype=dtype), np.zeros(dim, dtype=dtype), np.zeros(dim, dtype=dtype),
                          np.zeros(max_rows, dtype=dtype), np.zeros((max_rows, dim), dtype=dtype),
                          np.zeros(mlp_size, dtype=dtype), np.ones(plan.batch_size, dtype=dtype),
                          np.zeros((depth + 1, width, plan.batch_size), dtype=dtype),
                          np.zeros((depth + 1, width, plan.batch_size), dtype=dtype),
                          np.zeros(max_size, dtype=np.int64), np.zeros(2 * max_size + 2, dtype=np.int64),
                          np.zeros(plan.batch_size, dtype=np.int64), np.zeros(plan.batch_size, dtype=dtype))
        for position in range(group_offsets[group], group_offsets[group + 1]):
            client = group_clients[position]
            totals.broken[client] = not _client_round(client, params, plan, pull, scratch, totals)


def thread_groups(cost: torch.Tensor, threads: int) -> tuple:
    """Split the clients of ``cost`` [n] (any unit) into ``threads`` groups of about equal total
    cost: clients by descending cost dealt out in snake order (0, 1, .., t-1, t-1, .., 0, 0, ..).
    Returns (offsets [threads + 1], clients [n]) as int64 numpy arrays, clients grouped."""
    n = cost.numel()
    order = torch.argsort(cost, descending=True, stable=True)
    lap, seat = torch.arange(n) // threads, torch.arange(n) % threads
    group = torch.where(lap % 2 == 0, seat, threads - 1 - seat)  # [n] group of the k-th costliest
    grouped = torch.argsort(group, stable=True)
    offsets = torch.zeros(threads + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.bincount(group, minlength=threads), 0)
    return offsets.numpy(), order[grouped].numpy()


def _exchange(mine: np.ndarray, table: torch.Tensor, user: torch.Tensor, mlp: torch.Tensor, rows: torch.Tensor,
              totals) -> None:
    """Give every rank what the others trained: each rank sends its clients' positions ``mine``
    and their trained compact rows (of table [R, d], ``rows`` [n] rows per client), user
    vectors, MLPs and totals; every rank writes the others' into its own (``distributed``)."""
    row_owner = torch.repeat_interleave(torch.arange(rows.numel()), rows)  # [R]

    def packet(positions: np.ndarray) -> dict:
        index = torch.from_numpy(positions)
        row_index = torch.nonzero(torch.isin(row_owner, index)).squeeze(1)
        return {"positions": index, "row_index": row_index, "rows": table[row_index], "user": user[index],
                "mlp": mlp[index], **{name: torch.from_numpy(getattr(totals, name)[positions])
                                      for name in ("loss_sum", "seen", "epochs_run", "broken")}}

    for theirs in distributed.all_gather(packet(mine)):
        index = theirs["positions"]
        table[theirs["row_index"]] = theirs["rows"]
        user[index], mlp[index] = theirs["user"], theirs["mlp"]
        for name in ("loss_sum", "seen", "epochs_run", "broken"):
            getattr(totals, name)[index.numpy()] = theirs[name].numpy()


def draw_noise(shuffle_keys: EpochShuffle, generator: torch.Generator, epochs: int) -> tuple:
    """Every epoch's shuffle noise [epochs, T] (int32), drawn as ``EpochShuffle.noise`` draws it
    epoch after epoch, and the generator state before each draw (``epochs`` states)."""
    noise = torch.empty(epochs, shuffle_keys.count, dtype=torch.int32)
    states = []
    for epoch in range(epochs):
        states.append(generator.get_state())
        noise[epoch] = shuffle_keys.noise(generator)
    return noise, states


def train_round(table: torch.Tensor, user: torch.Tensor, mlp: torch.Tensor, backbone, batches,
                row_offsets: torch.Tensor, instance_rows: torch.Tensor, settings, shuffle: torch.Generator,
                pull=None) -> tuple:
    """Train every client of ``batches`` on the CPU: table [R, d] (compact rows grouped by client,
    delimited by row_offsets [n + 1]), user [n, d] and mlp [n, P] in place; instance_rows [T] is
    each instance's compact row; ``backbone`` FCF or NCF; ``settings``: ``LocalSettings`` (Adam);
    ``pull``: an ``AnchorPull`` or None. Leaves ``shuffle`` where drawing epoch by epoch until every
    client stopped would have left it.

    Returns (loss_sum, seen) [n] float64 (summed BCE and instances over the epochs run) and
    epochs_run [n] int64. Raises NonFiniteScores when a score turned NaN."""
    n, dim = user.shape
    noise, states = draw_noise(EpochShuffle(batches), shuffle, settings.epochs)
    rows = row_offsets[1:] - row_offsets[:-1]  # [n]
    layers = np.array(backbone.layout(), dtype=np.int64).reshape(-1, 4)
    per_instance = dim + 3 * int((layers[:, 0] * layers[:, 1]).sum())  # multiply-adds per instance
    cost = batches.num_batches * (batches.batch_size * per_instance + 3 * (rows * dim + mlp.shape[1]))  # [n]
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(threads)  # its first call starts numba's OpenMP pool, which resets torch's count
    shard = distributed.ranks()
    mine = np.arange(n) if shard is None else distributed.shard_of(*thread_groups(cost, shard.world), shard.rank).numpy()
    group_offsets, group_clients = thread_groups(cost[torch.from_numpy(mine)], threads)
    group_clients = mine[group_clients]
    dtype = torch.empty(0, dtype=table.dtype).numpy().dtype
    hyper = np.array([BETA1, BETA2, EPS, 1 - BETA1, 1 - BETA2, 1.0, 1e-12, -100.0], dtype)  # in *_AT order
    params = Params(table.numpy(), np.zeros(tuple(table.shape), dtype), np.zeros(tuple(table.shape), dtype),
                    user.numpy(), np.zeros(tuple(user.shape), dtype), np.zeros(tuple(user.shape), dtype),
                    mlp.numpy(), np.zeros(tuple(mlp.shape), dtype), np.zeros(tuple(mlp.shape), dtype))
    plan = Round(noise.numpy(), batches.offsets.numpy(), row_offsets.numpy(), instance_rows.numpy(),
                 batches.labels.to(table.dtype).numpy(), layers, batches.batch_size, settings.epochs,
                 settings.early_stop, settings.threshold, settings.lr_embedding, settings.lr_structure,
                 settings.weight_decay, hyper)
    if pull is None:
        anchors = Pull(0.0, np.zeros((0, dim), dtype), np.zeros((0, mlp.shape[1]), dtype), np.zeros(n), np.zeros(n))
    else:
        anchors = Pull(float(pull.scale), pull.kappa_rows.numpy(), pull.kappa_mlp.numpy(),
                       pull.rest_dot.double().numpy(), pull.rest_sq.double().numpy())
    totals = Totals(np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.bool_))
    width = max(2 * dim, int(layers[:, :2].max(initial=0)))
    try:
        _train_round(group_offsets, group_clients, params, plan, anchors, totals, int(rows.max()) if n else 0,
                     int(batches.sizes.max()) if n else 0, width)
    finally:
        torch.set_num_threads(torch_threads)
    if shard is not None:
        _exchange(mine, table, user, mlp, rows, totals)
    if totals.broken.any():
        raise NonFiniteScores(int(totals.broken.sum()))
    used = int(totals.epochs_run.max()) if n else 0
    if used < settings.epochs:
        shuffle.set_state(states[used])
    return torch.from_numpy(totals.loss_sum), torch.from_numpy(totals.seen), torch.from_numpy(totals.epochs_run)
