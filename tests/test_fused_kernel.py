"""The compiled (numba) kernel against the torch kernel, and its parts on their own."""

import copy
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedca.aggregators.registry import build_aggregator
from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.errors import FedcaError
from fedca.federation import fused
from fedca.federation import local_train as local_train_module
from fedca.federation.batches import build_round
from fedca.federation.local_train import choose_kernel, local_train
from fedca.federation.population import Population
from fedca.federation.simulate import Simulation
from fedca.models.backbones import FCF, NCF, PFedRecHead, build_backbone
from fedca.run import run, simulation_settings
from fedca.schedules.registry import build_schedule
from fedca.seeding import generator

USERS = 40


@pytest.fixture(scope="module")
def slice_40(real_data_env):
    cfg = compose_run_config(["dataset=ml100k"])
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(USERS)


def _simulate(data, overrides) -> Population:
    cfg = compose_run_config(["rounds=2", "local_epochs=3", *overrides])
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    population = Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone,
                                    init=cfg.model.init, user_init=cfg.model.user_init,
                                    generator=generator(cfg.seed, "init"), device=torch.device("cpu"))
    population = Population(user=population.user.double(), items=population.items.double(),
                            mlp=population.mlp.double())
    start = copy.deepcopy(population)
    Simulation(data, population, backbone, build_aggregator(cfg.agg, cfg.model.mlp_layers), build_schedule(cfg),
               simulation_settings(cfg), cfg.seed).run(lambda record: None)
    assert float((population.items - start.items).abs().max()) > 1e-2
    return population


@pytest.mark.parametrize("agg,model", [("pfedgraph", "fcf"), ("pfedgraph", "ncf"), ("fedfast", "fcf"),
                                       ("perfedrec", "fcf"), ("fedper", "ncf")])
def test_both_kernels_agree_on_the_baselines_without_an_oracle(slice_40, agg, model):
    """pFedGraph's pull term (on the rows, and on the MLP with NCF), FedFast's delegates,
    PerFedRec's user-vector uploads and FedPer's personal layers run through the compiled kernel
    as through the torch one (float64; the torch kernel's batch-mean weights are float32, about
    1e-8 relative)."""
    compiled = _simulate(slice_40, [f"agg={agg}", f"model={model}", "kernel=numba"])
    batched = _simulate(slice_40, [f"agg={agg}", f"model={model}", "kernel=torch"])
    for name in ("user", "items", "mlp") if model == "ncf" else ("user", "items"):
        assert float((getattr(compiled, name) - getattr(batched, name)).abs().max()) <= 1e-7


@pytest.mark.parametrize("model", ["fcf", "ncf"])
def test_the_pull_term_moves_the_compiled_kernels_result_far_beyond_that_tolerance(slice_40, model):
    pulled = _simulate(slice_40, ["agg=pfedgraph", f"model={model}", "kernel=numba"])
    free = _simulate(slice_40, ["agg=pfedgraph", f"model={model}", "agg.lam=0", "kernel=numba"])
    assert float((pulled.items - free.items).abs().max()) > 1e-4


def _one_round(data, threads: int) -> tuple:
    cfg = compose_run_config(["kernel=numba", "local_epochs=4"])
    backbone = build_backbone("fcf", [], cfg.model.latent_dim)
    population = Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone,
                                    init="official", user_init="random", generator=generator(0, "init"),
                                    device=torch.device("cpu"))
    batches = build_round(data, torch.arange(data.num_users), 4, 64, generator(0, "train_negatives"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = local_train(population, batches, backbone, simulation_settings(cfg).local, generator(0, "shuffle"))
    finally:
        torch.set_num_threads(before)
    return population, result


def test_the_result_does_not_depend_on_the_thread_count(slice_40):
    one, one_result = _one_round(slice_40, 1)
    two, two_result = _one_round(slice_40, 2)
    assert torch.equal(one.items, two.items) and torch.equal(one.user, two.user)
    assert torch.equal(one_result.losses, two_result.losses)
    assert torch.equal(one_result.epochs, two_result.epochs)


@pytest.mark.parametrize("size,high", [(1, 10), (7, 3), (300, 1 << 31), (1000, 50)])
def test_epoch_order_is_a_stable_sort_by_noise(size, high):
    noise = torch.randint(high, (size,), generator=torch.Generator().manual_seed(size), dtype=torch.int32)
    order = np.empty(size, dtype=np.int64)
    fused._epoch_order(noise.numpy(), order, np.empty(2 * size + 2, dtype=np.int64))
    assert np.array_equal(order, torch.sort(noise, stable=True).indices.numpy())


def test_thread_groups_take_every_client_once_and_balance_the_cost():
    cost = torch.randint(1, 1000, (101,), generator=torch.Generator().manual_seed(3))
    offsets, clients = fused.thread_groups(cost, 4)
    assert sorted(clients.tolist()) == list(range(101))
    totals = [int(cost[clients[offsets[g]:offsets[g + 1]]].sum()) for g in range(4)]
    assert max(totals) - min(totals) <= int(cost.max())


def test_auto_takes_numba_for_fcf_with_adam_on_the_cpu_and_torch_otherwise(monkeypatch):
    settings = simulation_settings(compose_run_config([])).local
    cpu = torch.device("cpu")
    assert choose_kernel(settings, FCF(), cpu) == "numba"
    assert choose_kernel(settings, NCF([32, 16, 8, 1]), cpu) == "numba"
    assert choose_kernel(dataclasses.replace(settings, optimizer="alternating_sgd"), PFedRecHead(16), cpu) == "torch"
    assert choose_kernel(settings, FCF(), torch.device("cuda")) == "torch"
    assert choose_kernel(dataclasses.replace(settings, kernel="torch"), FCF(), cpu) == "torch"
    with pytest.raises(FedcaError, match="kernel=numba covers model=fcf or ncf"):
        choose_kernel(dataclasses.replace(settings, kernel="numba", optimizer="alternating_sgd"), PFedRecHead(16), cpu)
    monkeypatch.setattr(local_train_module, "fused", None)  # numba not installed
    assert choose_kernel(settings, FCF(), cpu) == "torch"
    with pytest.raises(FedcaError, match="needs the numba package"):
        choose_kernel(dataclasses.replace(settings, kernel="numba"), FCF(), cpu)


def test_the_run_records_the_kernel_it_used(real_data_env, tmp_path):
    cfg = compose_run_config(["dataset=filmtrust", "rounds=1", "local_epochs=1", "progress=false"])
    assert run(cfg, tmp_path)["kernel"] == "numba"


def test_a_compiled_round_leaves_torchs_thread_count_as_it_was(tiny_dataset, fedca_cache, tmp_path):
    # numba's OpenMP pool starts on the first compiled round and, unless fused.train_round puts it
    # back, leaves torch at every core: later torch reductions then split differently (the
    # resume-exactness tests caught this as last-bit changes of train_loss) and threads=1 is ignored.
    script = (f"import torch; torch.set_num_threads(1)\n"
              f"from fedca.config.compose import compose_run_config; from fedca.run import run\n"
              f"run(compose_run_config({[*tiny_dataset, 'rounds=1', 'local_epochs=1', 'kernel=numba', 'progress=false']!r}),"
              f" {str(tmp_path / 'run')!r})\n"
              f"print(torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["kernel"] == "numba"
    assert done.stdout.split()[-1] == "1"
