"""PerFedRec's server (aggregators/perfedrec.py, docs/methods/perfedrec.md) on hand-sized inputs.

One aggregation is worked out by hand (``HAND``): N = 5 clients, four participants (uniform
weights 1/4, so every mean of the binary-fraction tables below is exact), a non-participant whose
server-side features must be kept, K = 3 with one cluster that has no participant (it gets the
global block), and features with exactly three distinct values (so k-means with K = 3 gives the
same partition from any start). The rest:

* defaults and the ``cluster_on`` / ``sampling`` checks, matched on the error message;
* ``start``, the three phases of ``before_training`` and their round boundaries, ``experts``,
  ``cold_start`` and ``select`` (when it samples and which rule);
* ``code_sample`` against a step-by-step transcription of the rule in the method page, drawing
  from the generator passed in (checked by replaying the draws on a fresh generator);
* the ``trained_items`` signature of a participant and the zero signature of the others.
"""

import pytest
import torch

from fedca.aggregators.base import USER_VECTORS, RoundContext, Uploads
from fedca.aggregators.clustering import kmeans, stratified_sample
from fedca.aggregators.perfedrec import ITEM_SIGNATURE, PerFedRec, code_sample
from fedca.federation.population import Population

F64 = torch.float64

# --- the hand-worked round ------------------------------------------------------------------------
# I = 2 items, d = 1, P = 2. Participants 0, 1, 3, 4; client 2 sits out (its own blocks are 100s,
# which no server block may contain).
TABLES = torch.tensor([[[1.0], [2.0]], [[3.0], [2.0]], [[100.0], [100.0]], [[-1.0], [4.0]], [[5.0], [6.0]]],
                      dtype=F64)  # [N, I, d]
MLPS = torch.tensor([[4.0, 0.0], [0.0, 8.0], [100.0, 100.0], [2.0, 2.0], [6.0, -2.0]], dtype=F64)
# Trained user vectors; client 2's 99 is never uploaded.
USERS = torch.tensor([[0.0], [0.0], [99.0], [20.0], [20.0]], dtype=F64)
# The server's copy before the round: client 2's 10 must survive, the participants' 7s are replaced.
SERVER_USERS = torch.tensor([[7.0], [7.0], [10.0], [7.0], [7.0]], dtype=F64)
PARTICIPANTS = torch.tensor([0, 1, 3, 4])
SAMPLES = torch.tensor([10, 30, 50, 70])  # uniform weighting: must not matter
START_ASSIGNMENT = torch.tensor([0, 2, 0, 0, 2])  # participants 0, 3 -> cluster 0; 1, 4 -> cluster 2; 1 empty

# Global: row 0 (1 + 3 - 1 + 5) / 4 = 2, row 1 (2 + 2 + 4 + 6) / 4 = 3.5; MLP (4 + 0 + 2 + 6) / 4 = 3,
# (0 + 8 + 2 - 2) / 4 = 2.
HAND_ITEMS = [[2.0], [3.5]]
HAND_MLP = [3.0, 2.0]
# Cluster 0 = clients 0, 3: (0, 3), MLP (3, 1); cluster 1 empty -> global; cluster 2 = clients 1, 4: (4, 4), (3, 3).
HAND_CLUSTER_ITEMS = [[[0.0], [3.0]], HAND_ITEMS, [[4.0], [4.0]]]
HAND_CLUSTER_MLP = [[3.0, 1.0], HAND_MLP, [3.0, 3.0]]
HAND_FEATURES = [[0.0], [0.0], [10.0], [20.0], [20.0]]
HAND_PARTITION = [[0, 1], [2], [3, 4]]  # three distinct feature values, K = 3: one cluster each


def _population():
    return Population(user=USERS.clone(), items=TABLES.clone(), mlp=MLPS.clone())


def _uploads(population, reveal_users=True, row_keys=None, row_counts=None):
    empty = torch.zeros(0, dtype=torch.long)
    return Uploads(population, PARTICIPANTS, SAMPLES, empty if row_keys is None else row_keys,
                   empty if row_counts is None else row_counts, reveal_users=reveal_users)


def _context(seed):
    return RoundContext(round=3, weights={}, generator=torch.Generator().manual_seed(seed))


def _partition(assignment):
    groups = {}
    for client, cluster in enumerate(assignment.tolist()):
        groups.setdefault(cluster, []).append(client)
    return sorted(groups.values())


def _hand_round(server_users=SERVER_USERS, assignment=START_ASSIGNMENT, seed=3):
    aggregator = PerFedRec(clusters=3, cluster_on="user")
    state = aggregator.start(TABLES[0].clone(), MLPS[0].clone(), server_users.clone())
    state["assignment"] = None if assignment is None else assignment.clone()
    ctx = _context(seed)
    downloads, new_state = aggregator.aggregate(_uploads(_population()), state, ctx)
    return aggregator, downloads, new_state, ctx


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_hand_worked_round_blocks_features_clustering_and_stats(seed):
    _, downloads, state, ctx = _hand_round(seed=seed)
    # Every value is a sum of quarters or halves of small binary fractions: exact.
    assert state["items"].tolist() == HAND_ITEMS and state["mlp"].tolist() == HAND_MLP
    assert state["cluster_items"].tolist() == HAND_CLUSTER_ITEMS
    assert state["cluster_mlp"].tolist() == HAND_CLUSTER_MLP
    assert state["features"].tolist() == HAND_FEATURES and state["features"].dtype == F64
    assert torch.equal(state["model_of"], START_ASSIGNMENT)  # the clustering the round started with
    # Nothing is sent back: clients keep their own trained blocks.
    assert downloads.kind == "none" and downloads.items is None and downloads.mlp is None
    assert downloads.clients is None
    # Re-clustering of all five clients with the round's generator.
    replay = torch.Generator().manual_seed(seed)
    expected = kmeans(torch.tensor(HAND_FEATURES, dtype=F64), 3, replay)
    assert torch.equal(state["assignment"], expected)
    assert _partition(state["assignment"]) == HAND_PARTITION
    assert torch.equal(ctx.generator.get_state(), replay.get_state())  # the draws came from ctx.generator
    # Sizes 2, 1, 2: the largest holds 2 / 5; all three are used.
    assert downloads.stats == {"largest_cluster": 2 / 5, "clusters_used": 3}


def test_the_server_copy_of_user_vectors_may_be_float32():
    # The uploaded float64 vectors are cast into the server's float32 copy (0, 10, 20 are exact there).
    _, _, state, _ = _hand_round(server_users=SERVER_USERS.float())
    assert state["features"].dtype == torch.float32 and state["features"].tolist() == HAND_FEATURES
    assert _partition(state["assignment"]) == HAND_PARTITION


def test_first_round_without_a_clustering_puts_every_participant_in_cluster_zero():
    _, _, state, _ = _hand_round(assignment=None)
    assert state["model_of"].tolist() == [0, 0, 0, 0, 0]
    # Cluster 0 holds all four participants (= the global block); 1 and 2 are empty (= global too).
    assert state["cluster_items"].tolist() == [HAND_ITEMS] * 3
    assert state["cluster_mlp"].tolist() == [HAND_MLP] * 3


def test_stats_with_one_cluster_holding_everyone():
    aggregator = PerFedRec(clusters=2, cluster_on="user")
    population = _population()
    population.user[:] = 1.0  # one distinct feature value: the second cluster stays empty
    state = aggregator.start(TABLES[0].clone(), MLPS[0].clone(), torch.ones(5, 1, dtype=F64))
    downloads, state = aggregator.aggregate(_uploads(population), state, _context(0))
    assert state["assignment"].tolist() == [0, 0, 0, 0, 0]
    assert downloads.stats == {"largest_cluster": 1.0, "clusters_used": 1}


def test_trained_item_signatures_of_participants_and_zeros_for_the_others():
    aggregator = PerFedRec(clusters=2, cluster_on="trained_items")
    state = aggregator.start(TABLES[0].clone(), MLPS[0].clone())
    assert state["features"] is None
    # Row keys are position * I + item. Participant 0 trained item 0 once and item 1 three times:
    # (1 * 1 + 3 * 2) / 4 = 1.75; participant 1 (client 1): item 1 twice -> 2; participant 2 (client 3):
    # item 0 once, item 1 once -> (-1 + 4) / 2 = 1.5; participant 3 (client 4): item 0 once -> 5.
    row_keys = torch.tensor([0 * 2 + 0, 0 * 2 + 1, 1 * 2 + 1, 2 * 2 + 0, 2 * 2 + 1, 3 * 2 + 0])
    row_counts = torch.tensor([1, 3, 2, 1, 1, 1])
    uploads = _uploads(_population(), reveal_users=False, row_keys=row_keys, row_counts=row_counts)
    _, state = aggregator.aggregate(uploads, state, _context(0))
    assert state["features"].dtype == F64
    assert state["features"].tolist() == [[1.75], [2.0], [0.0], [1.5], [5.0]]  # client 2: no upload yet


# --- configuration, start and the hooks -----------------------------------------------------------
def test_defaults_and_what_the_server_sees():
    aggregator = PerFedRec()
    assert (aggregator.clusters, aggregator.cluster_on, aggregator.sampling, aggregator.cluster_start_round) == (
        5, "user", "code", 3)
    assert aggregator.reveals == (USER_VECTORS,)
    assert PerFedRec(cluster_on="user").reveals == (USER_VECTORS,)
    assert PerFedRec(cluster_on="trained_items").reveals == (ITEM_SIGNATURE,)
    assert aggregator.name == "perfedrec"


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match=r"cluster_on must be one of \('user', 'trained_items'\)"):
        PerFedRec(cluster_on="items")
    with pytest.raises(ValueError, match=r"sampling must be one of \('code', 'stratified'\)"):
        PerFedRec(sampling="uniform")
    PerFedRec(cluster_on="trained_items", sampling="stratified")  # both valid


def test_start_state():
    items, mlp, users = TABLES[0].clone(), MLPS[0].clone(), SERVER_USERS.clone()
    state = PerFedRec().start(items, mlp, users)
    assert set(state) == {"items", "mlp", "features", "assignment", "cluster_items", "cluster_mlp", "model_of"}
    assert torch.equal(state["items"], items) and state["items"] is not items  # copies
    assert torch.equal(state["mlp"], mlp) and state["mlp"] is not mlp
    assert state["features"] is users
    assert all(state[key] is None for key in ("assignment", "cluster_items", "cluster_mlp", "model_of"))
    assert PerFedRec().experts(state) == []  # no model adaptation before the first aggregation


def test_before_training_phases_with_the_default_start_round():
    aggregator, _, state, _ = _hand_round()
    participants = torch.tensor([4, 2])
    first = aggregator.before_training(participants, state, round_index=0)
    assert first.kind == "none" and first.items is None and first.mlp is None and first.clients is None
    second = aggregator.before_training(participants, state, round_index=1)  # round 2: the global block
    assert second.kind == "global" and second.items is state["items"] and second.mlp is state["mlp"]
    assert torch.equal(second.clients, participants)
    third = aggregator.before_training(participants, state, round_index=2)  # round 3 = cluster_start_round
    assert third.kind == "personal" and torch.equal(third.clients, participants)
    # model_of = START_ASSIGNMENT: client 4 -> cluster 2, client 2 -> cluster 0.
    assert third.items.tolist() == [HAND_CLUSTER_ITEMS[2], HAND_CLUSTER_ITEMS[0]]
    assert third.mlp.tolist() == [HAND_CLUSTER_MLP[2], HAND_CLUSTER_MLP[0]]


@pytest.mark.parametrize("start_round, first_personal", [(2, 1), (4, 3)])
def test_cluster_start_round_moves_the_switch(start_round, first_personal):
    aggregator, _, state, _ = _hand_round()
    aggregator.cluster_start_round = start_round
    participants = torch.tensor([1])
    assert aggregator.before_training(participants, state, first_personal - 1).kind == (
        "global" if first_personal > 1 else "none")
    assert aggregator.before_training(participants, state, first_personal).kind == "personal"


def test_experts_are_the_global_block_for_everyone_and_the_cluster_blocks():
    aggregator, _, state, _ = _hand_round()
    overall, clusters = aggregator.experts(state)
    assert overall.items.shape == (1, 2, 1) and overall.items.tolist() == [HAND_ITEMS]
    assert overall.mlp.shape == (1, 2) and overall.mlp.tolist() == [HAND_MLP]
    assert overall.assignment.tolist() == [0, 0, 0, 0, 0] and overall.assignment.dtype == torch.long
    assert clusters.items.tolist() == HAND_CLUSTER_ITEMS and clusters.mlp.tolist() == HAND_CLUSTER_MLP
    assert torch.equal(clusters.assignment, START_ASSIGNMENT)


def test_cold_start_sends_the_global_block():
    aggregator, _, state, _ = _hand_round()
    downloads = aggregator.cold_start(None, state, None)
    assert downloads.kind == "global" and downloads.clients is None
    assert downloads.items is state["items"] and downloads.mlp is state["mlp"]


# --- selection ----------------------------------------------------------------------------------
def _code_rule(assignment, count, generator):
    """The `code` rule of the method page, step by step: half uniform without replacement, half with
    replacement in proportion to the size of each client's cluster, duplicates topped up uniformly."""
    n = assignment.numel()
    sizes = {c: assignment.tolist().count(c) for c in set(assignment.tolist())}
    uniform = torch.randperm(n, generator=generator)[:count // 2].tolist()
    weights = torch.tensor([float(sizes[c]) for c in assignment.tolist()], dtype=F64)
    drawn = torch.multinomial(weights, count - count // 2, replacement=True, generator=generator).tolist()
    chosen = set(uniform) | set(drawn)
    rest = [client for client in range(n) if client not in chosen]
    missing = count - len(chosen)
    chosen |= {rest[i] for i in torch.randperm(len(rest), generator=generator)[:missing].tolist()}
    return sorted(chosen)


LOPSIDED = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 0, 1])  # sizes 2, 8, 2


@pytest.mark.parametrize("count", [2, 5, 6, 9, 11])
def test_code_sample_follows_the_rule_with_the_given_generator(count):
    for seed in range(6):
        gen, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        chosen = code_sample(LOPSIDED, count, gen)
        assert chosen.tolist() == _code_rule(LOPSIDED, count, replay)
        assert chosen.numel() == count and chosen.dtype == torch.long
        assert torch.equal(gen.get_state(), replay.get_state())  # every draw from the generator passed in


def test_code_sample_favours_clients_of_large_clusters():
    # count 2: one uniform pick and one draw with weights 2, 8, 2 per client (total 2*2 + 8*8 + 2*2 = 72).
    # A cluster-1 client is drawn with probability 64 / 72 by the weighted half, 8 / 12 by the uniform half.
    hits = torch.zeros(12)
    for seed in range(300):
        hits[code_sample(LOPSIDED, 2, torch.Generator().manual_seed(seed))] += 1
    big = float(hits[LOPSIDED == 1].sum())
    # Expected about 300 * (8 / 12 + 64 / 72) = 467 (a little less when both halves pick the same client
    # and the top-up is uniform); with both halves uniform it is 400. The sd is about 10 either way.
    assert big > 415


def test_select_samples_only_below_everyone_and_with_a_clustering():
    aggregator = PerFedRec(clusters=3)
    state = {"assignment": None}
    assert aggregator.select(4, 12, state, torch.Generator().manual_seed(0)) is None  # no clustering yet
    state["assignment"] = LOPSIDED.clone()
    gen = torch.Generator().manual_seed(0)
    assert aggregator.select(12, 12, state, gen) is None and aggregator.select(13, 12, state, gen) is None
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())  # no draws


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_uses_the_configured_rule_and_the_server_generator(seed):
    state = {"assignment": LOPSIDED.clone()}
    gen, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    chosen = PerFedRec(sampling="code").select(6, 12, state, gen)
    assert chosen.tolist() == _code_rule(LOPSIDED, 6, replay)
    assert torch.equal(gen.get_state(), replay.get_state())
    gen, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    chosen = PerFedRec(sampling="stratified").select(6, 12, state, gen)
    assert torch.equal(chosen, stratified_sample(LOPSIDED, 6, replay))
    assert torch.equal(gen.get_state(), replay.get_state())
    # sizes 2, 8, 2 and 6 to take: shares 1, 4, 1 exactly.
    assert torch.bincount(LOPSIDED[chosen], minlength=3).tolist() == [1, 4, 1]
