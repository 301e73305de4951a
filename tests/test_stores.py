"""Client stores (fedca/federation/store.py) in whole runs: each store against the dense one (both
kernels), a simulation restored from its state, store=auto's record, and the bad settings that
stop before anything runs (their operations: tests/test_math_store.py)."""

import json
import subprocess
import sys

import pytest
import torch

from fedca.aggregators.registry import build_aggregator
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.federation.population import Population
from fedca.federation.simulate import Simulation
from fedca.models.backbones import build_backbone
from fedca.run import run, simulation_settings
from fedca.schedules.registry import build_schedule
from fedca.seeding import generator

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
