"""The batched engine equals an independent per-client loop (tests/oracle.py) on real data.

While the engine runs, :class:`DrawRecorder` records each round's raw random draws (participants,
sampled negatives, shuffle noise, aggregated subset) and hands them to the oracle as plain
tensors; the oracle builds everything else itself, without engine code.
"""

import copy
import dataclasses

import pytest
import torch

from fedca.aggregators.registry import build_aggregator
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.federation import batches as batches_module
from fedca.federation import simulate as simulate_module
from fedca.federation.batches import EpochShuffle, build_round
from fedca.federation import local_train as local_train_module
from fedca.federation.local_train import local_train
from fedca.federation.population import Population
from fedca.federation.simulate import Simulation
from fedca.models.backbones import build_backbone
from fedca.run import simulation_settings
from fedca.schedules.registry import build_schedule
from fedca.seeding import generator

from oracle import OracleSettings, RoundDraws, run_oracle

USERS = 30
ROUNDS = 2


@pytest.fixture(scope="module")
def slice_30(real_data_env):
    cfg = compose_run_config(["dataset=ml100k"])
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(USERS)


class DrawRecorder:
    """Records the engine's raw random draws round by round, by wrapping their consumers:
    ``build_round`` (participants), ``sample_train_negatives`` (negatives [P, K] with each row's
    user), ``EpochShuffle.noise`` (one [T] draw per epoch drawn) and the aggregator's
    ``aggregate`` (the clients of a personal download)."""

    def __init__(self, monkeypatch, aggregator):
        self.rounds = []
        build, sample, noise = simulate_module.build_round, batches_module.sample_train_negatives, EpochShuffle.noise
        aggregate = aggregator.aggregate

        def recording_build(data, participants, *args):
            self.rounds.append({"participants": participants.tolist(), "noise": [], "aggregated": None})
            self.rounds[-1]["batches"] = build(data, participants, *args)
            return self.rounds[-1]["batches"]

        def recording_sample(users, *args):
            drawn = sample(users, *args)
            self.rounds[-1]["negatives"] = (users.clone(), drawn.clone())
            return drawn

        def recording_noise(shuffle, gen):
            drawn = noise(shuffle, gen)
            self.rounds[-1]["noise"].append(drawn.clone())
            return drawn

        def recording_aggregate(uploads, state, ctx):
            downloads, state = aggregate(uploads, state, ctx)
            if downloads.kind == "personal":
                self.rounds[-1]["aggregated"] = downloads.clients.tolist()
            return downloads, state

        monkeypatch.setattr(simulate_module, "build_round", recording_build)
        monkeypatch.setattr(batches_module, "sample_train_negatives", recording_sample)
        monkeypatch.setattr(EpochShuffle, "noise", recording_noise)
        monkeypatch.setattr(aggregator, "aggregate", recording_aggregate)

    def draws(self) -> list:
        """One ``RoundDraws`` per round: the recorded draws split by client."""
        result = []
        for record in self.rounds:
            users, negatives = record["negatives"]
            batches = record["batches"]
            noise = {}
            for position, client in enumerate(batches.clients.tolist()):
                start, end = int(batches.offsets[position]), int(batches.offsets[position + 1])
                noise[client] = [epoch[start:end] for epoch in record["noise"]]
            result.append(RoundDraws(participants=record["participants"],
                                     negatives={c: negatives[users == c] for c in record["participants"]},
                                     noise=noise, aggregated=record["aggregated"]))
        return result


def _setup(model: str, agg: str, early_stop: bool, extra=()):
    overrides = [f"model={model}", f"agg={agg}", "local_epochs=3", f"rounds={ROUNDS}",
                 f"protocol.early_stop={'official' if early_stop else 'off'}", *extra]
    if agg == "composite":
        overrides.append("agg.agg_clients_ratio=0.5")
    return compose_run_config(overrides)


def _oracle_settings(cfg) -> OracleSettings:
    """The run configuration as plain values, read from the config itself."""
    agg = cfg.agg
    composite = agg.name == "composite"
    return OracleSettings(
        epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr_embedding=cfg.model.lr_embedding,
        lr_structure=cfg.model.lr_structure, weight_decay=cfg.model.weight_decay,
        early_stop=cfg.protocol.early_stop == "official", threshold=cfg.protocol.early_stop_threshold,
        mlp_layers=list(cfg.model.mlp_layers) if cfg.model.name == "ncf" else [], agg=agg.name,
        weighting=getattr(agg, "weighting", "samples"),
        agg_clients_ratio=agg.agg_clients_ratio if composite else 1.0,
        k_principal=agg.k_principal if composite else 0, comp_sign=agg.comp_sign if composite else 1,
        w_sim=agg.w_sim if composite else 0.0, w_comp=agg.w_comp if composite else 0.0,
        interpolation=agg.interpolation if composite else 0.0)


@dataclasses.dataclass
class Outcome:
    start: Population
    engine: Population
    oracle: Population
    engine_records: list
    oracle_rounds: list


def _engine_and_oracle(data, cfg, monkeypatch, dtype=torch.float64, oracle_settings=None) -> Outcome:
    """The engine's and the oracle's populations after ``cfg``'s rounds; ``oracle_settings``:
    the oracle's settings when ``_oracle_settings`` does not cover the method."""
    assert cfg.schedule.name == "constant"
    if oracle_settings is None:
        assert cfg.model.local_epochs is None
        oracle_settings = _oracle_settings(cfg)
    if cfg.agg.name == "composite":
        assert (cfg.agg.comp_metric, cfg.agg.pca_sign_rule) == ("greedy_signed", "scores")
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    start = Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone,
                               init=cfg.model.init, user_init=cfg.model.user_init,
                               generator=generator(cfg.seed, "init"), device=torch.device("cpu"))
    start = Population(user=start.user.to(dtype), items=start.items.to(dtype), mlp=start.mlp.to(dtype))
    engine = copy.deepcopy(start)
    aggregator = build_aggregator(cfg.agg, cfg.model.mlp_layers)
    recorder = DrawRecorder(monkeypatch, aggregator)
    records = []
    Simulation(data, engine, backbone, aggregator, build_schedule(cfg), simulation_settings(cfg),
               cfg.seed).run(records.append)
    positives = [data.train_items[data.train_offsets[c]: data.train_offsets[c + 1]] for c in range(data.num_users)]
    *oracle, rounds = run_oracle(start.user, start.items, start.mlp, positives, recorder.draws(), oracle_settings)
    return Outcome(start, engine, Population(*oracle), records, rounds)


def _max_abs_difference(left: Population, right: Population) -> float:
    return max(float((getattr(left, name) - getattr(right, name)).abs().max()) if getattr(left, name).numel() else 0.0
               for name in ("user", "items", "mlp"))


def _assert_same_losses_and_epochs(outcome: Outcome, loss_bound: float) -> None:
    """Each round's mean last running-average loss and mean epochs run, as the engine records them."""
    for record, oracle in zip(outcome.engine_records, outcome.oracle_rounds, strict=True):
        losses = list(oracle.losses.values())
        assert record["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=0, abs=loss_bound)
        assert record["local_epochs_mean"] == sum(oracle.epochs.values()) / len(oracle.epochs)


MODEL_KERNELS = [("fcf", "torch"), ("fcf", "numba"), ("ncf", "torch"), ("ncf", "numba")]

# float64, two rounds of 3 epochs, 30 clients. Measured max |engine - oracle| over user, items and
# mlp: FCF 3.1e-15 (both kernels), NCF 7.5e-14 (torch) and 3.6e-13 (numba). That is rounding: the
# engine sums the same products in other orders (fused Adam over stacked rows, batched GEMMs or
# the compiled loops against nn.Linear and torch.optim.Adam per client, the simplex projection
# against the KKT solve of each QP), and ~30 Adam steps carry it on. Bounds ~10x the largest gap.
FLOAT64_BOUND = {"fcf": 3e-14, "ncf": 4e-12}
LOSS_BOUND = 1e-14  # mean of the clients' running-average BCE (values ~0.5); measured <= 1.1e-15


@pytest.mark.parametrize("model,kernel", MODEL_KERNELS)
@pytest.mark.parametrize("agg", ["local", "fedavg", "composite"])
@pytest.mark.parametrize("early_stop", [True, False])
def test_batched_engine_matches_per_client_loop(slice_30, monkeypatch, model, kernel, agg, early_stop):
    cfg = _setup(model, agg, early_stop, [f"kernel={kernel}"])
    outcome = _engine_and_oracle(slice_30, cfg, monkeypatch)
    assert _max_abs_difference(outcome.start, outcome.engine) > 1e-2
    assert _max_abs_difference(outcome.engine, outcome.oracle) <= FLOAT64_BOUND[model]
    _assert_same_losses_and_epochs(outcome, LOSS_BOUND)


# float32, composite, two rounds. Measured max |engine - oracle|: FCF 7.2e-7 (both kernels), NCF
# 6.3e-6 (torch) and 1.2e-3 (numba, on the MLP; 2.4e-4 on the items). The compiled NCF kernel sums
# W^T delta in another order than the GEMMs of the oracle; Adam scales each step by the gradient's
# own size, so a gradient near the rounding level can move a row by up to lr (1e-2): after one round
# about 75 of the slice's 50,000 item rows differ by more than 1e-6, and two rounds reach ~1e-3 on
# the MLP. Bounds ~10x the measured gaps.
FLOAT32_BOUND = {("fcf", "torch"): 7e-6, ("fcf", "numba"): 7e-6, ("ncf", "torch"): 6e-5, ("ncf", "numba"): 1e-2}


@pytest.mark.parametrize("model,kernel", MODEL_KERNELS)
def test_float32_engine_matches_per_client_loop(slice_30, monkeypatch, model, kernel):
    cfg = _setup(model, "composite", True, [f"kernel={kernel}"])
    outcome = _engine_and_oracle(slice_30, cfg, monkeypatch, dtype=torch.float32)
    assert _max_abs_difference(outcome.engine, outcome.oracle) <= FLOAT32_BOUND[model, kernel]


def test_clients_with_uneven_batch_counts_and_small_batches_match(slice_30, monkeypatch):
    cfg = _setup("ncf", "fedavg", True, ["batch_size=37", "clients_sample_ratio=0.5"])
    outcome = _engine_and_oracle(slice_30, cfg, monkeypatch)
    assert len(outcome.oracle_rounds[0].losses) == USERS // 2
    assert _max_abs_difference(outcome.engine, outcome.oracle) <= FLOAT64_BOUND["ncf"]
    _assert_same_losses_and_epochs(outcome, LOSS_BOUND)


def test_only_rows_a_client_touched_can_move(slice_30, monkeypatch):
    cfg = _setup("fcf", "local", False, ["rounds=1"])
    outcome = _engine_and_oracle(slice_30, cfg, monkeypatch)
    moved = (outcome.engine.items - outcome.start.items).abs().amax(dim=2) > 0  # [N, I]
    touched = torch.zeros_like(moved)
    for user in range(slice_30.num_users):
        touched[user, slice_30.train_items[slice_30.train_offsets[user]: slice_30.train_offsets[user + 1]]] = True
    assert bool(moved[touched].any())
    positives_only = moved & ~touched
    negatives_per_client = positives_only.sum(1)
    assert int(negatives_per_client.max()) <= 4 * int(touched.sum(1).max())
    never_trainable = torch.zeros_like(moved)
    keys = slice_30.interacted_keys
    never_trainable.view(-1)[keys] = True
    never_trainable &= ~touched
    assert not bool(moved[never_trainable].any())


def test_epoch_shuffle_orders_each_block_by_its_noise_and_the_wide_key_fallback_agrees(slice_30):
    batches = build_round(slice_30, torch.arange(USERS), 4, 64, generator(0, "train_negatives"))
    shuffle = EpochShuffle(batches)
    assert shuffle.packed
    order = shuffle.order(generator(0, "shuffle"))
    owner = batches.owner
    assert torch.equal(owner[order], owner)
    assert torch.equal(torch.sort(order).values, torch.arange(order.numel()))
    noise = torch.randint(1 << EpochShuffle.NOISE_BITS, (order.numel(),), generator=generator(0, "shuffle"))
    expected = torch.sort((owner << 32) | noise, stable=True).indices  # by (block, noise, position)
    assert torch.equal(order, expected)
    wide = EpochShuffle(batches, key_bits=EpochShuffle.NOISE_BITS + 1)
    assert not wide.packed
    assert torch.equal(wide.order(generator(0, "shuffle")), expected)


@pytest.mark.parametrize("rows_per_instance", [0, 2, 10 ** 9], ids=["scatter", "both", "rank_one"])
def test_both_item_gradient_paths_match_per_client_loop(slice_30, monkeypatch, rows_per_instance):
    monkeypatch.setattr(local_train_module, "RANK_ONE_ROWS_PER_INSTANCE", rows_per_instance)
    splits = []
    choose = local_train_module.rank_one_split
    monkeypatch.setattr(local_train_module, "rank_one_split", lambda *args: splits.append(choose(*args)) or splits[-1])
    cfg = _setup("fcf", "composite", True, ["kernel=torch"])
    outcome = _engine_and_oracle(slice_30, cfg, monkeypatch)
    expected = {0: {USERS}, 2: None, 10 ** 9: {0}}[rows_per_instance]
    if expected is None:
        assert all(0 < split < USERS for split in splits)
    else:
        assert set(splits) == expected
    assert _max_abs_difference(outcome.start, outcome.engine) > 1e-2
    assert _max_abs_difference(outcome.engine, outcome.oracle) <= FLOAT64_BOUND["fcf"]


@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_a_shuffle_drawn_ahead_for_an_epoch_that_never_runs_is_undone(slice_30, kernel):
    cfg = compose_run_config(["dataset=ml100k", "local_epochs=10", "protocol.early_stop=official", f"kernel={kernel}"])
    settings = dataclasses.replace(simulation_settings(cfg).local, threshold=1e9)  # all stop after epoch 2
    backbone = build_backbone("fcf", [], cfg.model.latent_dim)
    population = Population.initial(slice_30.num_users, slice_30.num_items, cfg.model.latent_dim, backbone,
                                    init="official", user_init="shared", generator=generator(0, "init"),
                                    device=torch.device("cpu"))
    batches = build_round(slice_30, torch.arange(USERS), 4, 256, generator(0, "train_negatives"))
    shuffle = generator(0, "shuffle")
    result = local_train(population, batches, backbone, settings, shuffle)
    assert result.epochs.tolist() == [2] * USERS
    expected = generator(0, "shuffle")
    for _ in range(2):
        EpochShuffle(batches).order(expected)
    assert torch.equal(shuffle.get_state(), expected.get_state())
