"""Find a dataset's file on disk (``dataset.root``), downloading it on first use.

A missing file with an official URL is downloaded (tqdm byte bar on a terminal, checksums
verified, see ``fedca.data.download``) unless ``dataset.download=false``; without network the
error names the URL and where to place the file by hand.

``dataset.root`` defaults to ``$FEDCA_DATA_DIR`` when set, else ``<cache>/data`` where the
cache is ``$FEDCA_CACHE_DIR`` or ``$XDG_CACHE_HOME/fedca`` or ``~/.cache/fedca``.
"""

import os
from pathlib import Path

from fedca.config.schema import DatasetConfig
from fedca.data.download import RemoteSource, fetch
from fedca.errors import FedcaError


def cache_dir() -> Path:
    """Per-user cache folder for downloads and processed tensors."""
    if os.environ.get("FEDCA_CACHE_DIR"):
        return Path(os.environ["FEDCA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedca"


def data_root(spec: DatasetConfig) -> Path:
    """The folder that holds the datasets' subfolders."""
    if spec.root:
        return Path(spec.root).expanduser()
    if os.environ.get("FEDCA_DATA_DIR"):
        return Path(os.environ["FEDCA_DATA_DIR"])
    return cache_dir() / "data"


def dataset_path(spec: DatasetConfig) -> Path:
    """Where the ratings file of ``spec`` is expected."""
    file = Path(spec.file).expanduser()
    if file.is_absolute():
        return file
    return data_root(spec) / spec.subdir / file


def remote_source(spec: DatasetConfig) -> RemoteSource:
    """The official download location of ``spec``."""
    if not spec.url:
        raise FedcaError(f"dataset {spec.name} has no download URL; place the file at {dataset_path(spec)}")
    return RemoteSource(url=spec.url, member=spec.archive_member, sha256=spec.sha256, archive_md5=spec.archive_md5)


def ensure_file(spec: DatasetConfig, progress: bool = False) -> Path:
    """Return the ratings file's path, fetching it when missing and ``dataset.download`` is true;
    ``progress`` shows a byte bar on a terminal."""
    path = dataset_path(spec)
    if path.is_file():
        return path
    if spec.download and spec.url:
        return fetch(remote_source(spec), path, progress=progress)
    if not spec.url:
        how = "place the file there"
    else:
        what = f"{spec.archive_member} from {spec.url}" if spec.archive_member else spec.url
        how = f"dataset.download=false, so run `fedca data fetch {spec.name}` or place {what} there"
    raise FedcaError(f"dataset {spec.name}: file {path} not found; {how}, or point dataset.root "
                     f"(or FEDCA_DATA_DIR) at the folder that holds {spec.subdir or '.'}/{Path(spec.file).name}")
