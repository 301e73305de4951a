"""Unseen clients: held out of every training round (on the generated tiny dataset of
tests/conftest.py), evaluated as new devices without touching the federation, and reported as
split=unseen_test."""

import copy

import pandas as pd
import pytest
import torch

from fedca.aggregators.registry import build_aggregator
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.federation.population import Population
from fedca.federation.simulate import Simulation
from fedca.models.backbones import build_backbone
from fedca.results.report import collect
from fedca.run import run, simulation_settings
from fedca.schedules.registry import build_schedule
from fedca.seeding import generator


@pytest.fixture(scope="module")
def tiny(tiny_data_env):
    cfg = compose_run_config(tiny_data_env)
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0)


def _simulation(data, overrides):
    cfg = compose_run_config(["eval.holdout_clients=0.2", "local_epochs=1", "rounds=2", *overrides])
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    population = Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone,
                                    init=cfg.model.init, user_init=cfg.model.user_init,
                                    generator=generator(0, "init"), device=torch.device("cpu"))
    return Simulation(data, population, backbone, build_aggregator(cfg.agg, cfg.model.mlp_layers),
                      build_schedule(cfg), simulation_settings(cfg), cfg.seed)


@pytest.mark.parametrize("overrides", [["agg=fedavg", "clients_sample_ratio=0.5"], ["agg=fedfast"],
                                       ["agg=perfedrec", "clients_sample_ratio=0.3"], ["agg=composite"]])
def test_held_out_clients_are_never_participants(tiny, overrides):
    simulation = _simulation(tiny, overrides)
    held_out = simulation.unseen.clients
    assert held_out.numel() == int(tiny.num_users * 0.2)
    for _ in range(2):
        simulation.run_round()
        assert not bool(torch.isin(simulation._participants(), held_out).any())


def test_held_out_rows_are_never_trained_and_unseen_evaluation_leaves_no_trace(tiny):
    simulation = _simulation(tiny, ["agg=local"])
    start = copy.deepcopy(simulation.population)
    record = simulation.run_round()
    record = simulation.run_round()
    held_out = simulation.unseen.clients
    for name in ("user", "items", "mlp"):
        assert torch.equal(getattr(simulation.population, name)[held_out], getattr(start, name)[held_out])
    assert not torch.equal(simulation.population.items[simulation.training_clients],
                           start.items[simulation.training_clients])
    assert set(record) >= {"val", "test", "unseen_test"}


def test_unseen_metrics_reach_rounds_summary_and_report(tiny_data_env, tmp_path):
    cfg = compose_run_config([*tiny_data_env, "agg=fedavg", "rounds=2", "local_epochs=1", "progress=false",
                              "eval.holdout_clients=0.1", "eval.adapt_steps=2"])
    summary = run(cfg, tmp_path / "run")
    rows = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert list(rows[rows["split"] == "unseen_test"]["round"]) == [2]
    assert 0 <= summary["final"]["unseen_test"]["hr@10"] <= 1
    assert summary["protocol"]["unseen_clients"]["share"] == 0.1
    complete, _ = collect([tmp_path])
    assert complete["unseen_test_hr@10"].iloc[0] == summary["final"]["unseen_test"]["hr@10"]


@pytest.mark.parametrize("agg", ["fedfast", "perfedrec", "pfedgraph"])
def test_state_dict_round_trip_continues_exactly_with_holdout_and_privacy(tiny, tmp_path, agg):
    overrides = [f"agg={agg}", "privacy.clip=2", "privacy.noise_multiplier=0.5", "eval.unseen_every_eval=true",
                 "rounds=3"]
    straight = _simulation(tiny, overrides)
    expected = [straight.run_round() for _ in range(3)]
    first = _simulation(tiny, overrides)
    first.run_round()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = _simulation(tiny, overrides)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    continued = [resumed.run_round() for _ in range(2)]
    for want, got in zip(expected[1:], continued):
        for split in ("val", "test", "unseen_test"):
            assert got[split] == want[split]
    assert torch.equal(resumed.population.items, straight.population.items)
