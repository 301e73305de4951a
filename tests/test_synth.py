"""Generated stand-ins: the published shape exactly, a power-law popularity, loadable by dataset=csv."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from fedca.data.synth import SHAPES, Shape, read_provenance, stand_in, write_stand_in

SMALL = Shape(users=2000, items=500, interactions=40_000, min_per_user=5)


@pytest.fixture(scope="module")
def small():
    return stand_in(SMALL, seed=0)


def test_a_stand_in_has_the_shape_it_was_asked_for(small):
    users, items = small["user"], small["item"]
    assert users.numel() == SMALL.interactions
    assert torch.unique(users * SMALL.items + items).numel() == SMALL.interactions  # distinct pairs
    per_user = torch.bincount(users, minlength=SMALL.users)
    assert int(per_user.min()) >= SMALL.min_per_user and int(per_user.max()) <= SMALL.items // 2
    assert torch.unique(users).numel() == SMALL.users and torch.unique(items).numel() == SMALL.items


def test_the_microlens_shape_is_the_published_one():
    shape = SHAPES["microlens100k"]
    assert (shape.users, shape.items, shape.interactions, shape.min_per_user) == (100_000, 19_738, 719_405, 5)


@pytest.mark.parametrize("exponent", [0.0, 0.8, 1.2])
def test_item_popularity_follows_the_power_law_it_was_given(exponent):
    # Slope of log frequency against log popularity rank over ranks 10-200. Redrawing repeats
    # caps the head items at one draw per user, which flattens the slope: measured -0.06, -0.72
    # and -1.04 for exponents 0, 0.8 and 1.2 at this size, hence the 0.2 bound.
    shape = Shape(users=2000, items=500, interactions=40_000, popularity_exponent=exponent)
    frequency = torch.sort(torch.bincount(stand_in(shape, 0)["item"], minlength=500), descending=True).values
    x, y = torch.arange(10, 201).double().log(), frequency[9:200].double().log()
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    assert slope == pytest.approx(-exponent, abs=0.2)


def test_each_users_timestamps_are_distinct_and_a_seed_gives_the_same_file(small):
    keys = small["user"] * 2 ** 40 + small["timestamp"]
    assert torch.unique(keys).numel() == keys.numel()
    again, other = stand_in(SMALL, seed=0), stand_in(SMALL, seed=1)
    assert all(torch.equal(small[name], again[name]) for name in small)
    assert not torch.equal(small["item"], other["item"])


@pytest.mark.parametrize("fields,message", [
    (dict(users=10, items=100, interactions=20), "cannot give each of 10 users 5"),
    (dict(users=10, items=10, interactions=60, min_per_user=1), "exceed half"),
    (dict(users=100, items=1000, interactions=600), "cannot cover 1000 items"),
])
def test_impossible_shapes_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Shape(**fields).check()


def test_the_file_loads_with_pandas_and_says_it_is_generated(tmp_path):
    path = write_stand_in(SMALL, 0, tmp_path, "custom")
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["user", "item", "timestamp"] and len(frame) == SMALL.interactions
    note = read_provenance(path)
    assert note["synthetic"] is True and note["users"] == SMALL.users and "no real user" in note["note"]


def _fedca(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fedca.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_fedca_data_synth_writes_a_file_that_fedca_stats_counts(tmp_path):
    done = _fedca("data", "synth", "--users", "300", "--items", "200", "--interactions", "6000",
                  "--seed", "2", "--out", str(tmp_path / "synth"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "synth" / "interactions.csv"
    stats = _fedca("data", "stats", "csv", f"dataset.file={path}", "dataset.header=true", "dataset.user_col=user",
                   "dataset.item_col=item", "dataset.timestamp_col=timestamp", "protocol.min_interactions=5",
                   cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    frame = pd.read_csv(path)
    assert f"users        {frame['user'].nunique()}" in stats.stdout
    assert f"interactions {len(frame)}" in stats.stdout
    assert json.loads((tmp_path / "synth" / "interactions.csv.provenance.json").read_text())["seed"] == 2
    run = _fedca("run", "dataset=csv", f"dataset.file={path}", "dataset.header=true", "dataset.user_col=user",
                 "dataset.item_col=item", "dataset.timestamp_col=timestamp", "protocol.min_interactions=5",
                 "rounds=1", "local_epochs=1", "progress=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["synthetic"] is True


def test_only_a_file_with_a_provenance_note_is_marked_synthetic(tmp_path, fedca_cache):
    from fedca.config.compose import compose_run_config
    from fedca.data.fed_data import load_fed_data

    path = write_stand_in(Shape(users=40, items=300, interactions=600), 0, tmp_path / "synth", "custom")
    plain = tmp_path / "plain" / "interactions.csv"
    plain.parent.mkdir()
    plain.write_bytes(path.read_bytes())
    for file, expected in ((path, True), (plain, False)):
        cfg = compose_run_config(["dataset=csv", f"dataset.file={file}", "dataset.header=true",
                                  "dataset.user_col=user", "dataset.item_col=item",
                                  "dataset.timestamp_col=timestamp", "protocol.min_interactions=5"])
        assert load_fed_data(cfg.dataset, cfg.protocol, seed=0, use_cache=False).meta["synthetic"] is expected


def test_fedca_data_synth_without_a_shape_or_counts_stops_with_one_line(tmp_path):
    done = _fedca("data", "synth", "--users", "10", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: fedca data synth needs --shape or --items, --interactions"]
    assert not any(tmp_path.iterdir())
