"""Compiled local training of FCF clients with Adam (numba, CPU): a whole round per client.

Within a round the clients never share a parameter, so each client's round (its epochs, each
a shuffle of its instances cut into mini-batches, each batch followed by its own Adam step,
and its early stop) can run start to finish while its rows and Adam moments stay in the CPU
cache. Threads take whole clients in groups of about equal cost; each client's arithmetic is
sequential, so the result does not depend on the thread count.

The arithmetic is that of the batched torch path (``local_train.AdamRule`` with the FCF
backbone and the epoch loop of ``local_train``): the same shuffle noise from the same
generator, BCE on sigmoid(u . v) with PyTorch's clamps, per-client mean over the batch, the
item gradient (d loss / d logit) x u at the user vector before the step, Adam with per-client
step counts (see ``_adam_rank_one`` for its one rounding difference), the optional pull term, and the
official early stop. Otherwise only the summation order differs.
"""

import math

import numba
import numpy as np
import torch

from fedca.federation.adam import BETA1, BETA2, EPS
from fedca.federation.batches import EpochShuffle
from fedca.models.backbones import NonFiniteScores

NOISE_BITS = EpochShuffle.NOISE_BITS

# hyper[...]: float constants in the table's dtype, so the compiled loops stay in that dtype
BETA1_AT, BETA2_AT, EPS_AT, REST1_AT, REST2_AT, ONE_AT, TINY_AT, CLAMP_AT = range(8)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _adam_rank_one(rows, exp_avg, exp_avg_sq, scales, direction, kappa, along, back, step_size, inv_bias2_sqrt,
                   hyper):
    """Adam on the rows [r, d] (and their moments, same shape) whose gradient is the rank-one
    scales [r] x direction [d], plus, when ``kappa`` [r, d] is not empty, the pull term's
    along * kappa - back * rows. The denominator is sqrt(v) * inv_bias2_sqrt + eps: torch divides
    by sqrt(1 - beta2^t) instead, one division more, within an ulp of it."""
    beta1, beta2, eps = hyper[BETA1_AT], hyper[BETA2_AT], hyper[EPS_AT]
    rest1, rest2 = hyper[REST1_AT], hyper[REST2_AT]
    pulled = kappa.shape[0] > 0
    for row in range(rows.shape[0]):
        value, avg_row, avg_sq_row = rows[row], exp_avg[row], exp_avg_sq[row]
        scale = scales[row]
        for k in range(rows.shape[1]):
            g = scale * direction[k]
            if pulled:
                g = (g + along * kappa[row, k]) - back * value[k]
            avg = avg_row[k] * beta1 + g * rest1
            avg_sq = avg_sq_row[k] * beta2 + g * g * rest2
            avg_row[k] = avg
            avg_sq_row[k] = avg_sq
            value[k] -= step_size * avg / (math.sqrt(avg_sq) * inv_bias2_sqrt + eps)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _pull_coefficients(values, kappa, rest_dot, rest_sq, scale, scalars):
    """Write the pull term's (along, back) into scalars[4], scalars[5]: its gradient for the
    client's rows ``values`` [r, d] is along * kappa - back * values (kappa [r, d]); rest_dot and
    rest_sq: <kappa, theta> and ||theta||^2 of the rest of its block."""
    dot, sq = rest_dot, rest_sq
    for row in range(values.shape[0]):
        for k in range(values.shape[1]):
            dot += kappa[row, k] * values[row, k]
            sq += values[row, k] * values[row, k]
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
def _batch(rows, labels, table, user, row_logit_grad, hyper, scalars, user_grad):
    """Forward and backward of one mini-batch (compact rows and labels [b]) at the user vector
    ``user`` [d] over table [R, d]: adds d loss / d logit into row_logit_grad [R], writes
    d loss / d u into user_grad [d]; returns the summed BCE, or NaN when a score is NaN."""
    one, tiny, clamp = hyper[ONE_AT], hyper[TINY_AT], hyper[CLAMP_AT]
    count, dim = rows.shape[0], user.shape[0]
    scalars[0] = 1.0 / count
    weight = scalars[0]
    batch_loss = one - one
    user_grad[:] = 0.0
    for t in range(count):
        row = rows[t]
        vector = table[row]
        logit = one - one
        for k in range(dim):
            logit += vector[k] * user[k]
        prob = one / (one + math.exp(-logit))
        if prob != prob:
            return math.nan
        if labels[t] > 0:
            batch_loss -= max(math.log(prob), clamp)
        else:
            batch_loss -= max(math.log1p(-prob), clamp)
        slope = (one - prob) * prob
        grad = weight * (prob - labels[t]) / max(slope, tiny) * slope
        row_logit_grad[row] += grad
        for k in range(dim):
            user_grad[k] += grad * vector[k]
    return batch_loss


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _client_round(client, noise, offsets, row_offsets, instance_rows, labels, batch_size, table, table_avg,
                  table_avg_sq, user, user_avg, user_avg_sq, row_logit_grad, lr, hyper, epochs, early_stop,
                  threshold, pull_scale, kappa, rest_dot, rest_sq, scalars, user_grad, old_user, unit, order,
                  bucket_ends, batch_rows, batch_labels, loss_sum, seen, epochs_run):
    """Train ``client`` for up to ``epochs`` epochs; returns False when a score turned NaN."""
    first, end = offsets[client], offsets[client + 1]
    block = slice(row_offsets[client], row_offsets[client + 1])
    rows, avg_rows, avg_sq_rows, logit_grad = table[block], table_avg[block], table_avg_sq[block], row_logit_grad[block]
    kappa_rows = kappa[block] if pull_scale != 0.0 else kappa
    size = end - first
    steps = 0
    previous = 0.0
    for epoch in range(epochs):
        epochs_run[client] += 1
        _epoch_order(noise[epoch, first:end], order, bucket_ends)
        for start in range(0, size, batch_size):
            count = min(batch_size, size - start)
            for t in range(count):
                instance = first + order[start + t]
                batch_rows[t] = instance_rows[instance]
                batch_labels[t] = labels[instance]
            old_user[:] = user[client]
            batch_loss = _batch(batch_rows[:count], batch_labels[:count], table, old_user, row_logit_grad, hyper,
                                scalars, user_grad)
            if batch_loss != batch_loss:
                return False
            scalars[1] = batch_loss / count
            loss_sum[client] += np.float64(scalars[1]) * count
            seen[client] += count
            steps += 1
            scalars[2] = lr / (1.0 - BETA1 ** steps)
            scalars[3] = 1.0 / math.sqrt(1.0 - BETA2 ** steps)
            if pull_scale != 0.0:
                _pull_coefficients(rows, kappa_rows, rest_dot[client], rest_sq[client], pull_scale, scalars)
            _adam_rank_one(rows, avg_rows, avg_sq_rows, logit_grad, old_user, kappa_rows, scalars[4], scalars[5],
                           scalars[2], scalars[3], hyper)
            logit_grad[:] = 0.0
            _adam_rank_one(user[client:client + 1], user_avg[client:client + 1], user_avg_sq[client:client + 1],
                           unit, user_grad, kappa[0:0], 0.0, 0.0, scalars[2], scalars[3], hyper)  # 1 x grad: exact
        running = loss_sum[client] / max(seen[client], 1.0)
        if early_stop and epoch > 0 and abs(running - previous) / abs(previous + 1e-5) < threshold:
            break
        previous = running
    return True


@numba.njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _train_round(group_offsets, group_clients, noise, offsets, row_offsets, instance_rows, labels, batch_size,
                 table, table_avg, table_avg_sq, user, user_avg, user_avg_sq, row_logit_grad, lr, hyper, epochs,
                 early_stop, threshold, pull_scale, kappa, rest_dot, rest_sq, max_size, loss_sum, seen, epochs_run,
                 broken):
    """Train every client; thread group g takes group_clients[group_offsets[g]: group_offsets[g + 1]]."""
    for group in numba.prange(group_offsets.shape[0] - 1):
        scalars = np.zeros(6, dtype=table.dtype)
        user_grad = np.empty(user.shape[1], dtype=table.dtype)
        old_user = np.empty(user.shape[1], dtype=table.dtype)
        unit = np.ones(1, dtype=table.dtype)
        order = np.empty(max_size, dtype=np.int64)
        bucket_ends = np.empty(2 * max_size + 2, dtype=np.int64)
        batch_rows = np.empty(batch_size, dtype=instance_rows.dtype)
        batch_labels = np.empty(batch_size, dtype=labels.dtype)
        for position in range(group_offsets[group], group_offsets[group + 1]):
            client = group_clients[position]
            broken[client] = not _client_round(
                client, noise, offsets, row_offsets, instance_rows, labels, batch_size, table, table_avg,
                table_avg_sq, user, user_avg, user_avg_sq, row_logit_grad, lr, hyper, epochs, early_stop,
                threshold, pull_scale, kappa, rest_dot, rest_sq, scalars, user_grad, old_user, unit, order,
                bucket_ends, batch_rows, batch_labels, loss_sum, seen, epochs_run)


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


def draw_noise(shuffle_keys: EpochShuffle, generator: torch.Generator, epochs: int) -> tuple:
    """Every epoch's shuffle noise [epochs, T] (int32), drawn as ``EpochShuffle.noise`` draws it
    epoch after epoch, and the generator state before each draw (``epochs`` states)."""
    noise = torch.empty(epochs, shuffle_keys.count, dtype=torch.int32)
    states = []
    for epoch in range(epochs):
        states.append(generator.get_state())
        noise[epoch] = shuffle_keys.noise(generator)
    return noise, states


def train_round(table: torch.Tensor, user: torch.Tensor, batches, row_offsets: torch.Tensor,
                instance_rows: torch.Tensor, settings, shuffle: torch.Generator, pull=None) -> tuple:
    """Train every client of ``batches`` on the CPU: table [R, d] (compact rows grouped by client,
    delimited by row_offsets [n + 1]) and user [n, d] in place; instance_rows [T] is each
    instance's compact row. ``settings``: ``LocalSettings`` (FCF, Adam). Leaves ``shuffle`` where
    drawing epoch by epoch until every client stopped would have left it.

    Returns (loss_sum, seen) [n] float64 (summed BCE and instances over the epochs run) and
    epochs_run [n] int64. Raises NonFiniteScores when a score turned NaN."""
    n, dim = user.shape
    keys = EpochShuffle(batches)
    noise, states = draw_noise(keys, shuffle, settings.epochs)
    rows = row_offsets[1:] - row_offsets[:-1]
    cost = batches.num_batches * settings.epochs * (batches.batch_size + 3 * rows)  # [n] d-vector passes
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    group_offsets, group_clients = thread_groups(cost, threads)
    hyper = np.zeros(CLAMP_AT + 1, dtype=torch.empty(0, dtype=table.dtype).numpy().dtype)
    hyper[[BETA1_AT, BETA2_AT, EPS_AT, REST1_AT, REST2_AT, ONE_AT, TINY_AT, CLAMP_AT]] = \
        [BETA1, BETA2, EPS, 1 - BETA1, 1 - BETA2, 1.0, 1e-12, -100.0]
    if pull is None:
        pull_scale, kappa, rest_dot, rest_sq = 0.0, np.zeros((0, dim), dtype=hyper.dtype), np.zeros(n), np.zeros(n)
    else:
        pull_scale, kappa = float(pull.scale), pull.kappa_rows.numpy()
        rest_dot, rest_sq = pull.rest_dot.double().numpy(), pull.rest_sq.double().numpy()
    loss_sum, seen = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    epochs_run = torch.zeros(n, dtype=torch.long)
    broken = np.zeros(n, dtype=np.bool_)
    table_moments = (np.zeros(tuple(table.shape), dtype=hyper.dtype), np.zeros(tuple(table.shape), dtype=hyper.dtype))
    user_moments = (np.zeros(tuple(user.shape), dtype=hyper.dtype), np.zeros(tuple(user.shape), dtype=hyper.dtype))
    _train_round(group_offsets, group_clients, noise.numpy(), batches.offsets.numpy(), row_offsets.numpy(),
                 instance_rows.numpy(), batches.labels.to(table.dtype).numpy(), batches.batch_size, table.numpy(),
                 *table_moments, user.numpy(), *user_moments, np.zeros(table.shape[0], dtype=hyper.dtype),
                 settings.lr_embedding, hyper, settings.epochs, settings.early_stop, settings.threshold, pull_scale,
                 kappa, rest_dot, rest_sq, int(batches.sizes.max()) if n else 0, loss_sum.numpy(), seen.numpy(),
                 epochs_run.numpy(), broken)
    if broken.any():
        raise NonFiniteScores(int(broken.sum()))
    used = int(epochs_run.max()) if n else 0
    if used < settings.epochs:
        shuffle.set_state(states[used])
    return loss_sum, seen, epochs_run

