"""Client stores (fedca/federation/store.py): every operation of every store against a plain
[N, I, d] tensor operated on with indexing, whole runs of each store against the dense one,
checkpoint round trips, and the bad settings that stop before anything runs."""

import json
import subprocess
import sys

import pytest
import torch

from fedca.aggregators.registry import build_aggregator
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.errors import FedcaError
from fedca.federation.population import Population
from fedca.federation.simulate import Simulation
from fedca.federation.store import StoreConfig, build_store, choose_store
from fedca.models.backbones import build_backbone
from fedca.run import run, simulation_settings
from fedca.schedules.registry import build_schedule
from fedca.seeding import generator

N, I, D = 7, 11, 3


@pytest.fixture(scope="module")
def tiny(tiny_data_env):
    cfg = compose_run_config(tiny_data_env)
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0)


def _simulation(data, overrides, folder):
    cfg = compose_run_config(["local_epochs=1", *overrides])
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    population = Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone,
                                    init=cfg.model.init, user_init=cfg.model.user_init,
                                    generator=generator(0, "init"), device=torch.device("cpu"),
                                    store=cfg.store.name, folder=folder)
    return Simulation(data, population, backbone, build_aggregator(cfg.agg, cfg.model.mlp_layers),
                      build_schedule(cfg), simulation_settings(cfg), cfg.seed)


def _operations(generator):
    """A fixed sequence of store operations with random arguments, as (name, args) pairs; each
    applied to a plain tensor by ``_apply_plain`` and to a store by ``_apply_store``."""
    ops = []
    for _ in range(3):
        count = 9
        clients = torch.randint(0, N, (count,), generator=generator)
        items = torch.randint(0, I, (count,), generator=generator)
        keys = torch.unique(clients * I + items)  # distinct rows: a write's result does not depend on order
        ops.append(("write_rows", keys // I, keys % I, torch.randn(keys.numel(), D, generator=generator,
                                                                  dtype=torch.float64)))
        chosen = torch.randperm(N, generator=generator)[:3]
        ops.append(("write_tables", chosen, torch.randn(3, I, D, generator=generator, dtype=torch.float64)))
        columns = torch.randperm(I, generator=generator)[:2]
        ops.append(("write_columns", columns, torch.randn(2, D, generator=generator, dtype=torch.float64)))
    return ops


def _apply_plain(plain, op):
    name, *args = op
    if name == "write_rows":
        plain[args[0], args[1]] = args[2]
    elif name == "write_tables":
        plain[args[0]] = args[1]
    else:
        plain[:, args[0]] = args[1].unsqueeze(0)


def _apply_store(store, op):
    getattr(store, op[0])(*op[1:])


def _round_bf16(values):
    return values.to(torch.bfloat16).to(values.dtype)


@pytest.mark.parametrize("name", ["dense", "disk", "half", "global"])
def test_every_operation_matches_a_plain_tensor(name, tmp_path):
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(I, D, generator=generator, dtype=torch.float64)
    store = build_store(name, start, N, tmp_path)
    # half stores every value rounded to bfloat16: the plain tensor is rounded where it is written
    rounded = _round_bf16 if name == "half" else (lambda values: values)
    plain = rounded(start).unsqueeze(0).repeat(N, 1, 1)
    clients, weights = torch.tensor([5, 0, 3, 6]), torch.tensor([0.5, -1.25, 2.0, 0.125], dtype=torch.float64)
    for op in _operations(generator):
        _apply_plain(plain, op)
        plain.copy_(rounded(plain))
        _apply_store(store, op)
        assert torch.equal(store.full(), plain), op[0]
        query_clients, query_items = torch.tensor([[1], [4]]), torch.tensor([[0, 10, 3], [2, 2, 7]])
        assert torch.equal(store.rows(query_clients, query_items), plain[query_clients, query_items])
        assert torch.equal(store.tables(clients), plain[clients])
        expected_sum = torch.einsum("m,mid->id", weights, plain[clients])
        # float64; global adds its changed rows to sum(w) * server in another order than the GEMV: 1e-13
        assert torch.allclose(store.weighted_sum(clients, weights), expected_sum, rtol=0, atol=1e-13)
        assert torch.allclose(store.mean(), plain.mean(0), rtol=0, atol=1e-15)
    table = torch.randn(I, D, generator=generator, dtype=torch.float64)
    store.blend_all(table, 0.0)
    assert torch.equal(store.full(), rounded(table).unsqueeze(0).expand(N, I, D))
    if name == "global":
        assert store.keys.numel() == 0  # one table again: no per-client rows are kept
        with pytest.raises(FedcaError, match="store=global holds one table"):
            store.blend_all(table, 0.25)
    else:
        store.write_rows(torch.tensor([2]), torch.tensor([4]), torch.ones(1, D, dtype=torch.float64))
        own = store.full().clone()
        store.blend_all(table, 0.25)
        assert torch.allclose(store.full(), rounded(0.25 * own + 0.75 * table.unsqueeze(0)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name", ["dense", "disk", "half", "global"])
def test_a_stores_state_restores_it_into_a_fresh_store(name, tmp_path):
    generator = torch.Generator().manual_seed(4)
    start = torch.randn(I, D, generator=generator)
    store = build_store(name, start, N, tmp_path / "a")
    for op in _operations(generator):
        _apply_store(store, (op[0], *(arg.float() if arg.is_floating_point() else arg for arg in op[1:])))
    torch.save(store.state(), tmp_path / "state.pt")
    fresh = build_store(name, start, N, tmp_path / "b")
    fresh.load_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert torch.equal(fresh.full(), store.full())


def test_half_takes_half_the_memory_and_disk_lives_in_its_file(tmp_path):
    start = torch.randn(I, D)
    assert build_store("half", start, N, tmp_path).table.element_size() == 2
    disk = build_store("disk", start, N, tmp_path)
    assert (tmp_path / "items.store").stat().st_size == N * I * D * 4
    disk.write_rows(torch.tensor([6]), torch.tensor([10]), torch.full((1, D), 7.0))
    on_file = torch.from_file(str(tmp_path / "items.store"), size=N * I * D, dtype=torch.float32).view(N, I, D)
    assert torch.equal(on_file[6, 10], torch.full((D,), 7.0))


def test_auto_takes_global_for_one_table_methods_else_dense_until_the_budget_then_disk():
    gib = 2 ** 30
    assert choose_store(StoreConfig(name="auto"), 100, 10, 4, torch.float32, one_table=True) == "global"
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), gib // 16, 1, 4, torch.float32,
                        one_table=False) == "dense"  # exactly 1 GiB
    assert choose_store(StoreConfig(name="auto", budget_gb=1.0), gib // 16 + 1, 1, 4, torch.float32,
                        one_table=False) == "disk"
    with pytest.raises(FedcaError, match="store=global holds one table"):
        choose_store(StoreConfig(name="global"), 10, 10, 4, torch.float32, one_table=False)


def _summary(overrides, folder):
    return run(compose_run_config([*overrides, "progress=false"]), folder)


@pytest.mark.slow
@pytest.mark.parametrize("agg,store", [("fedavg", "global"), ("fedavg", "disk"), ("composite", "disk"),
                                       ("fedper", "global")])
def test_a_run_with_an_exact_store_scores_as_the_dense_one(real_data_env, tmp_path, agg, store):
    base = ["dataset=ml100k", f"agg={agg}", "rounds=3", "local_epochs=2"]
    if agg == "fedper":
        base.append("model=ncf")
    dense = _summary(base, tmp_path / "dense")
    other = _summary([*base, f"store={store}"], tmp_path / store)
    assert other["store"] == store and dense["store"] == "dense"
    for split in ("val", "test"):
        for metric, value in dense["final"][split].items():
            if store == "disk":  # the same tensor operations on a mapped file: bit for bit
                assert other["final"][split][metric] == value
            else:  # global's weighted sum adds in another order (float32): the bound
                assert abs(other["final"][split][metric] - value) <= 1e-6


@pytest.mark.parametrize("store", ["global", "disk"])
def test_a_simulation_with_a_store_restored_from_its_state_continues_exactly(tiny, tmp_path, store):
    overrides = ["agg=fedavg", "rounds=3", f"store={store}"]
    straight = _simulation(tiny, overrides, tmp_path / "straight")
    expected = [straight.run_round() for _ in range(3)]
    first = _simulation(tiny, overrides, tmp_path / "first")
    first.run_round()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = _simulation(tiny, overrides, tmp_path / "resumed")
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    continued = [resumed.run_round() for _ in range(2)]
    for want, got in zip(expected[1:], continued):
        assert got["test"] == want["test"] and got["train_loss"] == want["train_loss"]
    assert torch.equal(resumed.population.items, straight.population.items)


@pytest.mark.parametrize("overrides,message", [
    (["agg=composite", "store=global"], "store=global holds one table for every client, but agg=composite"),
    (["store=disk", "device=cuda"], "store=disk keeps the tables in a memory-mapped file"),
    (["store=tape"], "store"),
])
def test_a_store_that_cannot_serve_stops_with_one_line_before_anything_is_written(tmp_path, overrides, message):
    folder = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "fedca", "run", *overrides, f"hydra.run.dir={folder}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1
    assert not folder.exists()


def test_the_summary_names_the_store_auto_picked(tiny_dataset, fedca_cache, tmp_path):
    summary = _summary([*tiny_dataset, "agg=composite", "rounds=1", "local_epochs=1", "store=auto"], tmp_path)
    assert summary["store"] == "dense"
    assert json.loads((tmp_path / "summary.json").read_text())["store"] == "dense"


@pytest.mark.parametrize("agg,store", [("fedavg", "global"), ("fedavg", "disk"), ("fedavg", "half"),
                                       ("composite", "disk"), ("composite", "half"), ("pfedgraph", "disk")])
def test_the_torch_kernel_runs_on_every_store(tiny_dataset, fedca_cache, tmp_path, agg, store):
    # the batched torch path (GPUs, kernel=torch) reads and writes the tables only through the store
    base = [*tiny_dataset, f"agg={agg}", "rounds=2", "local_epochs=2", "kernel=torch"]
    dense, other = _summary(base, tmp_path / "dense"), _summary([*base, f"store={store}"], tmp_path / store)
    assert other["kernel"] == "torch" and other["store"] == store
    for metric, value in dense["final"]["test"].items():
        if store == "half":  # bfloat16 tables: at most one of the 60 users may flip (measured: none)
            assert abs(other["final"]["test"][metric] - value) <= 1 / 60 + 1e-12
        elif store == "disk":
            assert other["final"]["test"][metric] == value
        else:
            assert abs(other["final"]["test"][metric] - value) <= 1e-6
