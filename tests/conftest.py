"""Shared fixtures: real data through FEDCA_DATA_DIR, a private cache per test session, and the
``slow`` marker given to every test that needs the real data (and to every ``heavy`` one).

The quick tier, ``pytest -m "not slow"``, needs no data folder: a test that asks for ``data_dir``
or ``real_data_env`` (directly or through another fixture) is marked ``slow`` here, at collection.
Tests that only need some data use ``tiny_dataset``: a small generated ratings file and the
``dataset=csv`` overrides that read it.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("FEDCA_DATA_DIR"):
    os.environ["FEDCA_DATA_DIR"] = str(Path(os.environ["FEDCA_DATA_DIR"]).resolve())


REAL_DATA_FIXTURES = ("data_dir", "real_data_env")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that reads the real data (its fixture closure, ``fixturenames``,
    holds one of REAL_DATA_FIXTURES) and every ``heavy`` one, so that ``-m "not slow"``, which
    replaces the default ``-m "not heavy"``, still leaves the heavy tier out."""
    for item in items:
        if (any(name in getattr(item, "fixturenames", ()) for name in REAL_DATA_FIXTURES)
                or item.get_closest_marker("heavy")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the real dataset files (CI sets FEDCA_DATA_DIR)."""
    value = os.environ.get("FEDCA_DATA_DIR")
    if not value or not Path(value, "ml-100k", "u.data").is_file():
        pytest.fail("FEDCA_DATA_DIR must point at the shared data folder (ml-100k/u.data, filmtrust/ratings.txt)")
    return Path(value)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fedca-cache")


@pytest.fixture(scope="module")
def real_data_env(data_dir, session_cache):
    """Real data with the processed-data cache in a temp folder, for module-scoped fixtures."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FEDCA_CACHE_DIR", str(session_cache))
    yield data_dir
    patch.undo()


@pytest.fixture
def fedca_cache(tmp_path, monkeypatch) -> Path:
    """A private FEDCA_CACHE_DIR for one test, so the user's cache is never touched."""
    path = tmp_path / "cache"
    monkeypatch.setenv("FEDCA_CACHE_DIR", str(path))
    return path


# The generated dataset of ``tiny_dataset``: users × items, each user with MIN..MAX interactions.
# 300 items leave every user at least 260 unseen ones, so both protocols apply unchanged:
# protocol=strict draws 99 val and 99 other test negatives and training negatives from the rest.
TINY_USERS, TINY_ITEMS, TINY_MIN, TINY_MAX, TINY_GROUPS = 60, 300, 20, 40, 4


def write_tiny_ratings(path: Path, seed: int = 0) -> Path:
    """A deterministic ``user,item,rating,timestamp`` file (no header, 1-based ids, rows shuffled
    so that file order is not time order). Users fall into TINY_GROUPS taste groups; three of
    four interactions of a user are items of its group's block, so a model can learn something
    in a few rounds. Each user's timestamps are distinct and increasing from its own start. A
    provenance note beside the file marks it generated."""
    rng = np.random.default_rng(seed)
    block = TINY_ITEMS // TINY_GROUPS
    rows = []
    for user in range(TINY_USERS):
        group = user % TINY_GROUPS
        count = int(rng.integers(TINY_MIN, TINY_MAX + 1))
        liked = np.arange(group * block, (group + 1) * block)
        others = np.setdiff1d(np.arange(TINY_ITEMS), liked)
        own = min(block, (3 * count) // 4)
        items = np.concatenate([rng.choice(liked, own, replace=False), rng.choice(others, count - own, replace=False)])
        rng.shuffle(items)
        start = 1_500_000_000 + int(rng.integers(0, 10_000_000))
        times = start + np.cumsum(rng.integers(60, 86_400, count))
        ratings = rng.integers(1, 6, count)
        rows.extend(zip([user + 1] * count, (items + 1).tolist(), ratings.tolist(), times.tolist()))
    order = rng.permutation(len(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("%d,%d,%d,%d\n" % rows[i] for i in order))
    # the note fedca.data.synth writes beside its stand-ins: runs on this file record synthetic=true
    note = {"synthetic": True, "seed": seed, "note": "tests/conftest.py write_tiny_ratings"}
    Path(f"{path}.provenance.json").write_text(json.dumps(note))
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> list:
    """Hydra overrides that point a run at a generated 60 users × 300 items ratings file (about
    1,800 interactions with timestamps): no real data needed. Pair it with ``fedca_cache`` (or
    ``tiny_data_env`` for module-scoped fixtures) so the processed-data cache stays private."""
    folder = tmp_path_factory.mktemp("tiny-data")
    write_tiny_ratings(folder / "ratings.csv")
    return ["dataset=csv", f"dataset.root={folder}", "dataset.file=ratings.csv", "dataset.rating_col=2",
            "dataset.timestamp_col=3", "dataset.time_rule=column"]


@pytest.fixture(scope="module")
def tiny_data_env(tiny_dataset, session_cache):
    """``tiny_dataset``'s overrides with the processed-data cache in a temp folder, for
    module-scoped fixtures (the counterpart of ``real_data_env``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FEDCA_CACHE_DIR", str(session_cache))
    yield tiny_dataset
    patch.undo()
