"""Shared fixtures: real data through FEDCA_DATA_DIR and a private cache per test session."""

import os
from pathlib import Path

import pytest

if os.environ.get("FEDCA_DATA_DIR"):
    os.environ["FEDCA_DATA_DIR"] = str(Path(os.environ["FEDCA_DATA_DIR"]).resolve())


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
