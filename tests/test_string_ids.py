"""String ids (Amazon-style codes) through the reader, the split, `fedca data stats`, a run and
warm start's id matching. The string-id file is the real ML-100K with every id renamed by a
bijection, so every expectation is either ML-100K's own or a plain pandas count."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.data.readers import read_ratings
from fedca.errors import FedcaError
from fedca.federation.population import Population
from fedca.federation.warm_start import SourceState, apply_warm_start
from fedca.models.backbones import build_backbone
from fedca.run import run
from fedca.seeding import generator

TENSORS = ("train_items", "train_offsets", "val_items", "test_items", "val_negatives", "test_negatives",
           "interacted_keys", "train_excluded_keys")
CSV = ["dataset=csv", "dataset.header=true", "dataset.user_col=user", "dataset.item_col=item",
       "dataset.rating_col=rating", "dataset.timestamp_col=timestamp", "dataset.time_rule=column"]


def user_token(user: int) -> str:
    return f"A{user * 7919:011X}K"   # 13 characters like AGZ8SM1BGK3CK


def item_token(item: int) -> str:
    return f"B000{item * 104729:06X}"   # like B000GFDAUG


@pytest.fixture(scope="module")
def amazon_like(real_data_env, tmp_path_factory):
    """(path of ML-100K with string ids as user,item,rating,timestamp CSV, the raw ML-100K frame)."""
    raw = pd.read_csv(real_data_env / "ml-100k" / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
    renamed = raw.assign(user=raw["user"].map(user_token), item=raw["item"].map(item_token))
    path = tmp_path_factory.mktemp("amazon") / "ratings.csv"
    renamed.to_csv(path, index=False)
    return path, raw


def test_string_tokens_are_ids_and_an_integer_column_beside_them_stays_integer(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("AGZ8SM1BGK3CK,17,5,100\n 007 ,17,4,101\n7,B000GFDAUG,3,102\n")
    cfg = compose_run_config(["dataset=csv", f"dataset.file={path}", "dataset.rating_col=2",
                              "dataset.timestamp_col=3", "dataset.time_rule=column"])
    frame = read_ratings(path, cfg.dataset)
    assert frame["user"].tolist() == ["AGZ8SM1BGK3CK", "007", "7"]   # text, stripped: 007 and 7 differ
    assert frame["item"].tolist() == ["17", "17", "B000GFDAUG"]


def test_empty_id_fails_naming_its_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("AGZ8SM1BGK3CK,17\n  ,18\n")
    cfg = compose_run_config(["dataset=csv", f"dataset.file={path}"])
    with pytest.raises(FedcaError, match=r"line 2: user id ' *' is empty"):
        read_ratings(path, cfg.dataset)


def test_renamed_ml100k_splits_exactly_like_ml100k(amazon_like, fedca_cache):
    path, raw = amazon_like
    numbers_cfg = compose_run_config(["dataset=ml100k"])
    tokens_cfg = compose_run_config([*CSV, f"dataset.file={path}"])
    numbers = load_fed_data(numbers_cfg.dataset, numbers_cfg.protocol, 0, use_cache=False)
    tokens = load_fed_data(tokens_cfg.dataset, tokens_cfg.protocol, 0)
    for name in TENSORS:
        assert torch.equal(getattr(numbers, name), getattr(tokens, name)), name
    assert tokens.raw_user_ids == [user_token(u) for u in numbers.raw_user_ids.tolist()]
    assert tokens.raw_item_ids == [item_token(i) for i in numbers.raw_item_ids.tolist()]
    cached = load_fed_data(tokens_cfg.dataset, tokens_cfg.protocol, 0)   # the id mapping comes back from the cache
    assert list(fedca_cache.rglob("csv-*.pt"))
    assert cached.raw_user_ids == tokens.raw_user_ids and cached.raw_item_ids == tokens.raw_item_ids


@pytest.mark.slow
def test_data_stats_on_string_ids_agrees_with_a_pandas_count(amazon_like, tmp_path):
    path, _ = amazon_like
    table = pd.read_csv(path)
    kept = table[table["rating"] > 0]
    kept = kept[kept.groupby("user")["item"].transform("size") >= 100]   # the filter set below
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fedca"), "data", "stats", "csv", *CSV[1:],
                             f"dataset.file={path}", "protocol.min_interactions=100"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "FEDCA_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    stats = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert (int(stats["users"]), int(stats["items"]), int(stats["interactions"])) \
        == (kept["user"].nunique(), kept["item"].nunique(), len(kept))
    assert kept["user"].nunique() < table["user"].nunique()   # the filter did drop users


@pytest.mark.slow
def test_a_short_run_on_string_ids_completes(amazon_like, tmp_path, fedca_cache):
    path, _ = amazon_like
    summary = run(compose_run_config([*CSV, f"dataset.file={path}", "rounds=2", "local_epochs=1",
                                      "progress=false"]), tmp_path)
    assert summary["final"]["round"] == 2
    assert 0 < summary["final"]["test"]["hr@10"] <= 1


def _fresh(data) -> Population:
    cfg = compose_run_config(["model=ncf"])
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    return Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone, init="official",
                              user_init="shared", generator=generator(0, "init"), device=torch.device("cpu"))


def test_warm_start_matches_string_item_ids_by_token(amazon_like, fedca_cache):
    path, _ = amazon_like
    cfg = compose_run_config([*CSV, f"dataset.file={path}"])
    target = load_fed_data(cfg.dataset, cfg.protocol, 0).subset_users(30)
    fresh = _fresh(target)
    order = torch.randperm(target.num_items, generator=torch.Generator().manual_seed(1))[:500]
    source_items = torch.randn(2, 500, fresh.items.shape[2], generator=torch.Generator().manual_seed(2))
    source = SourceState(user=fresh.user[:2].clone(), items=source_items, mlp=fresh.mlp[:2].clone(),
                         raw_user_ids=["someone", "else"],
                         raw_item_ids=[target.raw_item_ids[j] for j in order.tolist()])
    before = fresh.items.clone()
    warm = apply_warm_start(fresh, target, source, "items", "src", "final")
    assert warm.record["mode"] == "mean_over_source_clients" and warm.record["items_matched"] == 500
    assert torch.allclose(fresh.items[:, order], source_items.mean(0).expand(fresh.items.shape[0], -1, -1))
    untouched = torch.ones(target.num_items, dtype=torch.bool)
    untouched[order] = False
    assert torch.equal(fresh.items[:, untouched], before[:, untouched])
