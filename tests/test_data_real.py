"""The real ML-100K and FilmTrust files through the data pipeline: counts, leave-one-out split,
eval negatives, training negatives against eval candidates, and the processed-data cache.

Expectations are recomputed from the raw files with plain pandas, independently of fedca's reader.
"""

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.data.fed_data import FedData, load_fed_data
from fedca.data.negatives import contains
from fedca.federation.batches import build_round

RAW_FILES = {
    "ml100k": ("ml-100k/u.data", "\t", ["user", "item", "rating", "timestamp"]),
    "filmtrust": ("filmtrust/ratings.txt", " ", ["user", "item", "rating"]),
}
ALL_COMBOS = [("ml100k", "fedca"), ("ml100k", "strict"), ("filmtrust", "fedca"), ("filmtrust", "strict")]
LEAK_ROUNDS = 20


def config(dataset: str, protocol: str, *extra: str):
    return compose_run_config([f"dataset={dataset}", f"protocol={protocol}", *extra])


@pytest.fixture(scope="module")
def fed_data(real_data_env):
    """load(dataset, protocol) -> FedData, built once per module (seed 0)."""
    loaded = {}

    def load(dataset: str, protocol: str) -> FedData:
        if (dataset, protocol) not in loaded:
            cfg = config(dataset, protocol)
            loaded[dataset, protocol] = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, use_cache=False)
        return loaded[dataset, protocol]

    return load


@pytest.fixture(scope="module")
def raw_file(data_dir):
    """raw_file(dataset) -> the file as a frame with user, item, pos (line order) and time."""
    frames = {}

    def read(dataset: str) -> pd.DataFrame:
        if dataset not in frames:
            name, sep, columns = RAW_FILES[dataset]
            frame = pd.read_csv(data_dir / name, sep=sep, names=columns, header=None)
            frame["pos"] = np.arange(len(frame))
            if "timestamp" in frame:
                frame["time"] = frame["timestamp"]
            else:  # FilmTrust: the position at which the item first appears in the file
                frame["time"] = frame.groupby("item")["pos"].transform("min")
            frames[dataset] = frame
        return frames[dataset]

    return read


def expected_interactions(raw: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The rows a protocol keeps: fedca keeps duplicate pairs, strict the last of them; users need >= 10 rows."""
    kept = raw if protocol == "fedca" else raw.drop_duplicates(["user", "item"], keep="last")
    return kept[kept.groupby("user")["item"].transform("size") >= 10]


def raw_pair_codes(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return users.astype(np.int64) * 1_000_000 + items.astype(np.int64)


def eval_candidates(data: FedData) -> tuple:
    """([N * 2C] users, [N * 2C] items) of every val and test negative."""
    negatives = torch.cat([data.val_negatives, data.test_negatives], dim=1)
    users = torch.arange(data.num_users).unsqueeze(1).expand_as(negatives)
    return users.reshape(-1), negatives.reshape(-1)


def training_negatives_that_are_eval_candidates(data: FedData) -> int:
    """Over LEAK_ROUNDS rounds with every user taking part, how many training negatives are eval candidates."""
    users, items = eval_candidates(data)
    eval_keys = torch.unique(users * data.num_items + items)
    generator = torch.Generator().manual_seed(0)
    everyone = torch.arange(data.num_users)
    hits = 0
    for _ in range(LEAK_ROUNDS):
        batches = build_round(data, everyone, data.meta["protocol"]["num_train_negatives"], 256, generator)
        negative = batches.labels == 0
        owners = batches.clients[batches.owner][negative]
        hits += int(contains(eval_keys, owners * data.num_items + batches.items[negative]).sum())
    return hits


def assert_same_tensors(left: FedData, right: FedData) -> None:
    for field in fields(FedData):
        value = getattr(left, field.name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(right, field.name)), field.name


@pytest.mark.parametrize("dataset, users, items, interactions", [
    ("ml100k", 943, 1682, 100_000),
    ("filmtrust", 1002, 2042, 33_372),
])
def test_fedca_protocol_counts_match_the_published_figures(fed_data, dataset, users, items, interactions):
    data = fed_data(dataset, "fedca")

    assert (data.num_users, data.num_items, data.num_interactions) == (users, items, interactions)


def test_strict_protocol_drops_the_three_filmtrust_duplicates(fed_data):
    fedca, strict = fed_data("filmtrust", "fedca"), fed_data("filmtrust", "strict")

    assert (strict.num_users, strict.num_items) == (fedca.num_users, fedca.num_items)
    assert strict.num_interactions == fedca.num_interactions - 3


@pytest.mark.parametrize("dataset, protocol", ALL_COMBOS)
def test_each_user_has_one_val_one_test_item_and_the_rest_in_train(fed_data, raw_file, dataset, protocol):
    data = fed_data(dataset, protocol)
    expected = expected_interactions(raw_file(dataset), protocol)

    users = torch.cat([data.train_users, torch.arange(data.num_users), torch.arange(data.num_users)])
    items = torch.cat([data.train_items, data.val_items, data.test_items])
    got = raw_pair_codes(data.raw_user_ids[users].numpy(), data.raw_item_ids[items].numpy())

    assert data.val_items.shape == data.test_items.shape == (data.num_users,)
    per_user = expected.groupby("user").size().loc[data.raw_user_ids.numpy()].to_numpy()
    assert np.array_equal(torch.diff(data.train_offsets).numpy(), per_user - 2)
    assert np.array_equal(np.sort(got), np.sort(raw_pair_codes(expected["user"].to_numpy(),
                                                               expected["item"].to_numpy())))


@pytest.mark.parametrize("dataset, protocol", ALL_COMBOS)
def test_val_and_test_items_are_each_users_latest_by_time_then_file_position(fed_data, raw_file, dataset,
                                                                              protocol):
    data = fed_data(dataset, protocol)
    ordered = expected_interactions(raw_file(dataset), protocol).sort_values(["user", "time", "pos"])
    last_two = ordered.groupby("user").tail(2).groupby("user")["item"]
    expected_val, expected_test = last_two.first(), last_two.last()

    raw_users = data.raw_user_ids.numpy()

    assert np.array_equal(data.raw_item_ids[data.test_items].numpy(), expected_test.loc[raw_users].to_numpy())
    assert np.array_equal(data.raw_item_ids[data.val_items].numpy(), expected_val.loc[raw_users].to_numpy())


@pytest.mark.parametrize("dataset, protocol", ALL_COMBOS)
def test_no_eval_candidate_is_a_positive_of_its_user(fed_data, raw_file, dataset, protocol):
    data = fed_data(dataset, protocol)
    raw = raw_file(dataset)
    users, items = eval_candidates(data)

    in_keys = contains(data.interacted_keys, users * data.num_items + items)
    in_file = np.isin(raw_pair_codes(data.raw_user_ids[users].numpy(), data.raw_item_ids[items].numpy()),
                      raw_pair_codes(raw["user"].to_numpy(), raw["item"].to_numpy()))

    assert not in_keys.any()
    assert not in_file.any()


@pytest.mark.parametrize("dataset, protocol", ALL_COMBOS)
def test_eval_negatives_are_distinct_within_each_row(fed_data, dataset, protocol):
    data = fed_data(dataset, protocol)

    for negatives in (data.val_negatives, data.test_negatives):
        assert negatives.shape == (data.num_users, 99)
        assert (torch.diff(torch.sort(negatives, dim=1).values, dim=1) != 0).all()


@pytest.mark.parametrize("dataset", ["ml100k", "filmtrust"])
def test_fedca_protocol_ranks_val_and_test_against_the_same_negatives(fed_data, dataset):
    data = fed_data(dataset, "fedca")

    assert torch.equal(data.val_negatives, data.test_negatives)


@pytest.mark.parametrize("dataset", ["ml100k", "filmtrust"])
def test_strict_protocol_val_and_test_negatives_are_disjoint(fed_data, dataset):
    data = fed_data(dataset, "strict")

    shared = (data.val_negatives.unsqueeze(2) == data.test_negatives.unsqueeze(1)).any(dim=(1, 2))

    assert not shared.any()


def test_strict_protocol_never_draws_an_eval_candidate_as_training_negative(fed_data):
    data = fed_data("ml100k", "strict")

    assert training_negatives_that_are_eval_candidates(data) == 0


def test_fedca_protocol_draws_eval_candidates_as_training_negatives(fed_data):
    """The official protocol's known leak: training negatives may be the items the user is ranked against."""
    data = fed_data("ml100k", "fedca")

    assert training_negatives_that_are_eval_candidates(data) > 0


def test_second_load_is_served_from_the_cache(real_data_env, fedca_cache):
    cfg = config("filmtrust", "fedca")
    first = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)
    [cache_file] = (fedca_cache / "processed").glob("*.pt")
    before = cache_file.stat()

    second = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)

    after = cache_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_same_tensors(first, second)


def test_corrupted_cache_file_is_rebuilt_with_identical_tensors(real_data_env, fedca_cache):
    cfg = config("filmtrust", "fedca")
    first = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)
    [cache_file] = (fedca_cache / "processed").glob("*.pt")
    garbage = b"not a torch file\x00\xff" * 64
    cache_file.write_bytes(garbage)

    rebuilt = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed)

    assert_same_tensors(first, rebuilt)
    assert cache_file.read_bytes() != garbage


def test_different_seed_draws_different_eval_negatives(real_data_env, fedca_cache):
    seed0, seed1 = config("filmtrust", "fedca", "seed=0"), config("filmtrust", "fedca", "seed=1")

    first = load_fed_data(seed0.dataset, seed0.protocol, seed0.seed)
    second = load_fed_data(seed1.dataset, seed1.protocol, seed1.seed)

    assert torch.equal(first.test_items, second.test_items)
    assert not torch.equal(first.val_negatives, second.val_negatives)
