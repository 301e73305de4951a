"""FedFast's server step (aggregators/fedfast.py, docs/methods/fedfast.md) on hand-sized inputs.

One aggregation is worked out by hand (``HAND``): update sizes that are exact binary fractions, a
row that two delegates moved by less than 1 in total, a row only one delegate moved, a row nobody
moved, and a cluster with no delegate that has the highest cluster index. The rest:

* defaults and the ``delegates_ratio`` check, matched on the error message;
* the delegate count m = max(1, floor(N * ratio)) and K = ``clusters`` or m;
* every random draw (k-means start, stratified sample, re-clustering) comes from the generator
  the server passes in, checked against a replay of the same draws on a fresh generator;
* the server state after a round (what the next round and the next ``select`` read), and the
  user-vector change computed in the precision of the server's copy.
"""

from fractions import Fraction

import numpy as np
import pytest
import torch

from fedca.aggregators.base import RoundContext, Uploads
from fedca.aggregators.clustering import kmeans, stratified_sample
from fedca.aggregators.fedfast import FedFast
from fedca.federation.population import Population

F64 = torch.float64

# --- the hand-worked round ------------------------------------------------------------------------
# N = 6 clients, I = 3 items, d = 2, P = 2; clusters [0, 0, 0, 1, 1, 2]; delegates 1 (cluster 0)
# and 4 (cluster 1); cluster 2 (client 5) has none.
SERVER_ITEMS = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]], dtype=F64)  # V [I, d]
# Delegate 1 moves row 0 by (0.375, 0.5), g = 0.625; delegate 4 moves row 0 by (-0.125, 0), g = 0.125,
# and row 1 by (0, 0.25), g = 0.25; row 2 stays. Every g is exact in binary.
TABLE_1 = torch.tensor([[1.375, 1.5], [2.0, 0.0], [0.0, 3.0]], dtype=F64)
TABLE_4 = torch.tensor([[0.875, 1.0], [2.0, 0.25], [0.0, 3.0]], dtype=F64)
MLP_1, MLP_4 = torch.tensor([4.0, 0.0], dtype=F64), torch.tensor([0.0, 8.0], dtype=F64)
USERS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [6.0, 5.0], [-5.0, 5.0]], dtype=F64)
TRAINED_1, TRAINED_4 = torch.tensor([1.5, 0.5], dtype=F64), torch.tensor([6.0, 4.0], dtype=F64)
ASSIGNMENT = torch.tensor([0, 0, 0, 1, 1, 2])
DELEGATES = torch.tensor([1, 4])
SAMPLES = torch.tensor([10, 30])

# Row 0: total 0.75, weights 0.625 / 0.75 = 5/6 and 1/6: (5 * 1.375 + 0.875) / 6 = 31/24,
# (5 * 1.5 + 1) / 6 = 17/12. Row 1: only delegate 4 moved it, weight 1: (2, 0.25). Row 2: kept.
HAND_ITEMS = [[float(Fraction(31, 24)), float(Fraction(17, 12))], [2.0, 0.25], [0.0, 3.0]]
# gamma_t = 0.5 * 0.5 ** 2 = 0.125; mean changes: cluster 0 (0.5, 0.5), cluster 1 (0, -1).
HAND_GAMMA = 0.125
HAND_CANDIDATES = [0, 2, 3]  # the non-delegates of clusters 0 and 1; client 5's cluster had no delegate
HAND_DELTA = [[0.0625, 0.0625], [0.0625, 0.0625], [0.0, -0.125]]
HAND_USERS = [[0.0625, 0.0625], [1.5, 0.5], [0.0625, 1.0625], [5.0, 4.875], [6.0, 4.0], [-5.0, 5.0]]


def _hand_round(weighting="samples", server_users=None):
    """(aggregator, state before, uploads) of the hand-worked round."""
    items = SERVER_ITEMS.unsqueeze(0).repeat(6, 1, 1)
    items[1], items[4] = TABLE_1, TABLE_4
    mlp = torch.zeros(6, 2, dtype=F64)
    mlp[1], mlp[4] = MLP_1, MLP_4
    user = USERS.clone()
    user[1], user[4] = TRAINED_1, TRAINED_4
    population = Population(user=user, items=items, mlp=mlp)
    # ratio 0.5 and clusters = 0: K = m = floor(6 * 0.5) = 3, the three clusters of ASSIGNMENT.
    aggregator = FedFast(delegates_ratio=0.5, clusters=0, gamma0=0.5, gamma_decay=0.5, weighting=weighting)
    state = aggregator.start(SERVER_ITEMS.clone(), torch.zeros(2, dtype=F64),
                             USERS.clone() if server_users is None else server_users)
    state["assignment"] = ASSIGNMENT.clone()
    uploads = Uploads(population, DELEGATES, SAMPLES, torch.zeros(0, dtype=torch.long),
                      torch.zeros(0, dtype=torch.long), reveal_users=True)
    return aggregator, state, uploads


def _context(round_index, seed):
    return RoundContext(round=round_index, weights={}, generator=torch.Generator().manual_seed(seed))


def test_hand_worked_round_items_mlp_users_and_stats():
    aggregator, state, uploads = _hand_round()
    ctx = _context(2, seed=7)
    downloads, new_state = aggregator.aggregate(uploads, state, ctx)
    # Row 0 divides by 0.75 and adds two terms: a few ulps at most; rows 1 and 2 are exact.
    torch.testing.assert_close(downloads.items, torch.tensor(HAND_ITEMS, dtype=F64), rtol=0, atol=4e-16)
    assert downloads.items[1:].tolist() == HAND_ITEMS[1:]
    # samples weighting: 10 / 40 and 30 / 40 of (4, 0) and (0, 8), exact.
    assert downloads.mlp.tolist() == [1.0, 6.0]
    assert downloads.kind == "global" and downloads.clients is None
    assert downloads.user_clients.tolist() == HAND_CANDIDATES
    assert downloads.user_delta.tolist() == HAND_DELTA
    assert downloads.stats == {"delegates": 2, "propagated": 3, "gamma": HAND_GAMMA, "rows_changed": 2 / 3}
    # The state the next round reads: the new global block, the updated user copy (delegates hold
    # exactly their trained vectors, no delta on top) and a re-clustering with the round's generator.
    assert new_state["items"] is downloads.items and new_state["mlp"] is downloads.mlp
    assert new_state["users"].tolist() == HAND_USERS
    replay = torch.Generator().manual_seed(7)
    expected = kmeans(torch.tensor(HAND_USERS, dtype=F64), 3, replay)  # K = m = 3 from N = 6
    assert torch.equal(new_state["assignment"], expected)
    assert new_state["assignment"].unique().numel() == 3
    assert torch.equal(ctx.generator.get_state(), replay.get_state())  # the draws came from ctx.generator


def test_hand_worked_round_uniform_weighting_of_the_mlp():
    aggregator, state, uploads = _hand_round(weighting="uniform")
    downloads, _ = aggregator.aggregate(uploads, state, _context(2, seed=0))
    assert downloads.mlp.tolist() == [2.0, 4.0]  # (4, 0) / 2 + (0, 8) / 2


def test_hand_worked_round_matches_a_numpy_transcription():
    """The same round against a float64 loop over rows, delegates and clusters of the spec."""
    aggregator, state, uploads = _hand_round()
    downloads, new_state = aggregator.aggregate(uploads, state, _context(2, seed=0))
    server = SERVER_ITEMS.numpy()
    tables = [TABLE_1.numpy(), TABLE_4.numpy()]
    expected = server.copy()
    for j in range(3):
        g = [float(np.linalg.norm(t[j] - server[j])) for t in tables]
        if sum(g) > 0:
            expected[j] = sum(gk / sum(g) * t[j] for gk, t in zip(g, tables))
    # The numpy sum runs in another order than torch's einsum: 4e-16 covers the last-bit differences.
    assert np.abs(downloads.items.numpy() - expected).max() <= 4e-16
    users = USERS.numpy().copy()
    trained = {1: TRAINED_1.numpy(), 4: TRAINED_4.numpy()}
    gamma = 0.5 * 0.5 ** 2
    for cluster in range(3):
        members = [c for c in range(6) if ASSIGNMENT[c] == cluster]
        chosen = [c for c in members if c in trained]
        if not chosen:
            continue
        mean_change = sum(trained[c] - USERS.numpy()[c] for c in chosen) / len(chosen)
        for c in members:
            users[c] = trained[c] if c in trained else users[c] + gamma * mean_change
    assert np.abs(new_state["users"].numpy() - users).max() == 0  # binary fractions: exact


def test_rows_moved_by_less_than_one_in_total_are_still_normalised():
    # A single delegate moves one row by 0.5: its weight is 0.5 / 0.5 = 1, so the row becomes its row.
    population = Population(user=torch.zeros(2, 1, dtype=F64),
                            items=torch.tensor([[[0.5]], [[0.0]]], dtype=F64), mlp=torch.zeros(2, 1, dtype=F64))
    aggregator = FedFast(delegates_ratio=0.5)
    state = aggregator.start(torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=F64), torch.zeros(2, 1, dtype=F64))
    state["assignment"] = torch.tensor([0, 0])
    uploads = Uploads(population, torch.tensor([0]), torch.tensor([3]), torch.zeros(0, dtype=torch.long),
                      torch.zeros(0, dtype=torch.long), reveal_users=True)
    downloads, _ = aggregator.aggregate(uploads, state, _context(0, seed=0))
    assert downloads.items.tolist() == [[0.5]]
    assert downloads.stats["rows_changed"] == 1.0


def test_a_float32_server_copy_gets_float32_user_changes():
    # Clients train in float64, the server keeps its copy of the user vectors in float32: the
    # trained vectors are cast to the server's dtype before the change is taken, so the delta the
    # clients receive is in float32 (the values are binary fractions, exact in both).
    aggregator, state, uploads = _hand_round(server_users=USERS.to(torch.float32))
    downloads, new_state = aggregator.aggregate(uploads, state, _context(2, seed=0))
    assert downloads.user_delta.dtype == torch.float32 and new_state["users"].dtype == torch.float32
    assert downloads.user_delta.tolist() == HAND_DELTA
    assert new_state["users"].tolist() == HAND_USERS


# --- defaults and argument checks -----------------------------------------------------------------


def test_defaults_follow_the_spec():
    aggregator = FedFast()
    # docs/methods/fedfast.md: ratio 0.1, K = m (clusters 0), gamma0 1.0, gamma_decay 0.9, data-size FedAvg.
    assert (aggregator.delegates_ratio, aggregator.clusters, aggregator.gamma0, aggregator.gamma_decay,
            aggregator.weighting) == (0.1, 0, 1.0, 0.9, "samples")


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.0000001, 1.5])
def test_delegates_ratio_outside_zero_one_is_rejected(ratio):
    with pytest.raises(ValueError, match=r"delegates_ratio must be in \(0, 1\]"):
        FedFast(delegates_ratio=ratio)


def test_delegates_ratio_one_is_accepted_and_selects_everyone():
    aggregator = FedFast(delegates_ratio=1.0, clusters=1)
    state = aggregator.start(torch.zeros(1, 1), torch.zeros(1), torch.arange(5.0).unsqueeze(1))
    assert aggregator.select(5, 5, state, torch.Generator().manual_seed(0)).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("num_clients, ratio, delegates", [(5, 0.1, 1), (19, 0.1, 1), (20, 0.1, 2), (7, 0.5, 3)])
def test_delegate_count_is_floor_of_n_times_ratio_and_at_least_one(num_clients, ratio, delegates):
    aggregator = FedFast(delegates_ratio=ratio, clusters=1)  # one cluster: the quota is the whole count
    users = torch.arange(float(num_clients)).unsqueeze(1)
    state = aggregator.start(torch.zeros(1, 1), torch.zeros(1), users)
    chosen = aggregator.select(num_clients, num_clients, state, torch.Generator().manual_seed(0))
    assert chosen.numel() == delegates and chosen.unique().numel() == delegates


def _blobs(count=4, size=10, seed=0):
    """[count * size, 2] points in ``count`` far-apart blobs (client c in blob c // size)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]], dtype=F64)[:count]
    return centres.repeat_interleave(size, 0) + torch.randn(count * size, 2, generator=gen, dtype=F64)


@pytest.mark.parametrize("clusters, k", [(0, 4), (3, 3), (2, 2)])
def test_select_clusters_into_k_and_draws_everything_from_the_server_generator(clusters, k):
    users = _blobs()
    aggregator = FedFast(delegates_ratio=0.1, clusters=clusters)  # N = 40: m = 4
    state = aggregator.start(torch.zeros(1, 2), torch.zeros(2), users.clone())
    gen = torch.Generator().manual_seed(3)
    chosen = aggregator.select(4, 40, state, gen)
    replay = torch.Generator().manual_seed(3)
    assignment = kmeans(users, k, replay)
    assert torch.equal(state["assignment"], assignment) and assignment.unique().numel() == k
    assert torch.equal(chosen, stratified_sample(assignment, 4, replay))
    assert torch.equal(gen.get_state(), replay.get_state())
    # A later call keeps the clustering and draws only the sample from the generator.
    again = aggregator.select(4, 40, state, gen)
    assert torch.equal(state["assignment"], assignment)
    assert torch.equal(again, stratified_sample(assignment, 4, replay))
    assert torch.equal(gen.get_state(), replay.get_state())


def test_start_keeps_copies_of_the_initial_block_and_users():
    items, mlp, users = torch.ones(2, 2), torch.full((3,), 2.0), torch.zeros(4, 2)
    state = FedFast().start(items, mlp, users)
    items.add_(1), mlp.add_(1), users.add_(1)
    assert state["items"].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert state["mlp"].tolist() == [2.0, 2.0, 2.0]
    assert state["users"].tolist() == [[0.0, 0.0]] * 4
    assert state["assignment"] is None
    assert sorted(state) == ["assignment", "items", "mlp", "users"]


def test_two_rounds_chain_through_the_returned_state():
    """select -> aggregate -> select -> aggregate on the returned state, with clusters = 0."""
    users = _blobs(count=2, size=4)  # N = 8, ratio 0.25: m = K = 2
    population = Population(user=users.clone(), items=torch.zeros(8, 3, 2, dtype=F64), mlp=torch.zeros(8, 2, dtype=F64))
    aggregator = FedFast(delegates_ratio=0.25)
    state = aggregator.start(torch.zeros(3, 2, dtype=F64), torch.zeros(2, dtype=F64), users.clone())
    for round_index in range(2):
        chosen = aggregator.select(2, 8, state, torch.Generator().manual_seed(round_index))
        assert chosen.numel() == 2 and sorted((chosen // 4).tolist()) == [0, 1]
        population.items[chosen, round_index] += 1.0
        uploads = Uploads(population, chosen, torch.tensor([1, 1]), torch.zeros(0, dtype=torch.long),
                          torch.zeros(0, dtype=torch.long), reveal_users=True)
        downloads, state = aggregator.aggregate(uploads, state, _context(round_index, seed=round_index))
        population.items.copy_(downloads.items.expand_as(population.items))
        assert downloads.stats["gamma"] == 0.9 ** round_index
        assert state["assignment"].unique().numel() == 2  # re-clustered into K = 2 on the server's users
    assert state["items"].tolist() == [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
