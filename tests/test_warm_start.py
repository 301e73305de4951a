"""Warm start from another run: round 0 reproduces the source, transfer choices move only what
they name, other datasets map items by raw id, and bad sources fail with one line."""

import json

import pandas as pd
import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.errors import FedcaError
from fedca.federation.population import Population
from fedca.federation.warm_start import SourceState, apply_warm_start
from fedca.models.backbones import build_backbone
from fedca.run import run
from fedca.seeding import generator

BASE = ["rounds=2", "local_epochs=1", "progress=false"]


@pytest.fixture(scope="module")
def base(tiny_data_env):
    """BASE on the generated tiny dataset (tests/conftest.py)."""
    return [*tiny_data_env, *BASE]


@pytest.fixture(scope="module")
def source_runs(base, tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    for agg in ("fedavg", "composite"):
        run(compose_run_config([f"agg={agg}", "save_selected=true", *base]), root / agg)
    return root


@pytest.mark.parametrize("agg", ["fedavg", "composite"])
def test_warm_start_reproduces_the_source_metrics_at_round_zero(source_runs, base, tmp_path, agg):
    source = json.loads((source_runs / agg / "summary.json").read_text())
    summary = run(compose_run_config([f"agg={agg}", f"init.from_run={source_runs / agg}", *base]), tmp_path)
    assert summary["round_zero"]["test"] == source["final"]["test"]
    assert summary["round_zero"]["val"] == source["final"]["val"]
    assert summary["selected"]["round"] >= 1  # round 0 is the starting point, never selected
    assert summary["protocol"]["warm_start"]["mode"] == "per_client"
    rows = pd.read_csv(tmp_path / "rounds.csv")
    assert sorted(rows["round"].unique()) == [0, 1, 2]


def test_warm_start_from_the_selected_round(source_runs, base, tmp_path):
    source = json.loads((source_runs / "fedavg" / "summary.json").read_text())
    summary = run(compose_run_config(["agg=fedavg", f"init.from_run={source_runs / 'fedavg'}",
                                      "init.checkpoint=selected", *base]), tmp_path)
    assert summary["round_zero"]["test"] == source["selected"]["test"]


def _fresh(data, model="ncf"):
    cfg = compose_run_config([f"model={model}"])
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    return Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone, init="official",
                              user_init="shared", generator=generator(0, "init"), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny(tiny_data_env):
    cfg = compose_run_config(tiny_data_env)
    return load_fed_data(cfg.dataset, cfg.protocol, seed=0).subset_users(50)


def _trained_source(data, seed=3):
    fresh = _fresh(data)
    gen = torch.Generator().manual_seed(seed)
    return SourceState(user=fresh.user + torch.randn(fresh.user.shape, generator=gen),
                       items=fresh.items + torch.randn(fresh.items.shape, generator=gen),
                       mlp=fresh.mlp + torch.randn(fresh.mlp.shape, generator=gen),
                       raw_user_ids=data.raw_user_ids, raw_item_ids=data.raw_item_ids)


def test_transfer_mlp_leaves_item_tables_and_user_vectors_freshly_initialised(tiny):
    source, target, fresh = _trained_source(tiny), _fresh(tiny), _fresh(tiny)
    warm = apply_warm_start(target, tiny, source, "mlp", "src", "final")
    assert torch.equal(target.items, fresh.items) and torch.equal(target.user, fresh.user)
    assert torch.equal(target.mlp, source.mlp)
    assert warm.record["transfer"] == "mlp"


def test_transfer_items_to_other_users_maps_rows_by_raw_item_id(tiny):
    source = _trained_source(tiny)
    keep = torch.arange(0, tiny.num_items, 2)  # the source knows every other item, in reversed order
    source = SourceState(user=source.user, items=source.items[:, keep.flip(0)], mlp=source.mlp,
                         raw_user_ids=source.raw_user_ids + 10_000, raw_item_ids=tiny.raw_item_ids[keep.flip(0)])
    target, fresh = _fresh(tiny), _fresh(tiny)
    warm = apply_warm_start(target, tiny, source, "items", "src", "final")
    assert warm.record["mode"] == "mean_over_source_clients" and warm.record["items_matched"] == keep.numel()
    expected = source.items.mean(0).flip(0)  # back in the target's item order
    assert torch.allclose(target.items[7, keep], expected)
    odd = torch.arange(1, tiny.num_items, 2)
    assert torch.equal(target.items[:, odd], fresh.items[:, odd])
    assert torch.equal(target.mlp, fresh.mlp)


@pytest.mark.parametrize("overrides,fragment", [
    (["init.from_run=/nonexistent/run"], "not a run folder"),
    (["init.transfer=everything"], "init.transfer"),
])
def test_bad_warm_start_settings_fail_with_one_line(overrides, fragment):
    with pytest.raises(FedcaError, match=fragment) as info:
        compose_run_config(overrides)
    assert "\n" not in str(info.value)


def test_warm_start_from_a_run_without_selected_checkpoint_or_other_dim_fails(source_runs, base, tmp_path):
    folder = source_runs / "composite"
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "status.json").write_text('{"status": "running"}')
    cases = [(["init.from_run=" + str(tmp_path / "incomplete")], "not complete"),
             (["model.latent_dim=8", "agg.k_principal=4", f"init.from_run={folder}"], "latent_dim")]
    (folder / "selected.pt").rename(tmp_path / "selected.pt")
    try:
        cases.append(([f"init.from_run={folder}", "init.checkpoint=selected"], "save_selected=true"))
        for overrides, fragment in cases:
            with pytest.raises(FedcaError, match=fragment):
                run(compose_run_config([*overrides, *base]), tmp_path / "out")
    finally:
        (tmp_path / "selected.pt").rename(folder / "selected.pt")
