"""FedData: everything a run needs from a dataset, as tensors, cached per (file, protocol, seed).

The cache is keyed by the raw file's sha256, the seed and every DatasetConfig and
ProtocolConfig field declared to shape the data (``fedca.config.fields.data_values``); a stale
or unreadable cache file is rebuilt, never trusted.

Raw ids (the mapping from dense index back to the file): an int64 tensor when the file's ids
are integers, else the list of the file's string tokens (``raw_user_ids[u]`` is user u's id).
Both are saved in the cache and in run checkpoints, and warm start matches items by them.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import List, Union

import numpy as np
import torch

from fedca.config.schema import DatasetConfig, ProtocolConfig
from fedca.config.fields import data_values
from fedca.config.protocol import protocol_in_force
from fedca.data.download import sha256_of
from fedca.data.negatives import pair_keys, sample_eval_negatives
from fedca.data.readers import read_ratings
from fedca.data.sources import cache_dir, ensure_file
from fedca.data.split import clean, leave_one_out
from fedca.data.synth import read_provenance
from fedca.errors import FedcaError
from fedca.seeding import generator

CACHE_FORMAT = 2
TENSOR_FIELDS = ("train_items", "train_offsets", "val_items", "test_items", "val_negatives", "test_negatives",
                 "interacted_keys", "train_excluded_keys", "raw_user_ids", "raw_item_ids")
RawIds = Union[torch.Tensor, List[str]]


def raw_ids(values: np.ndarray) -> RawIds:
    """[K] raw ids as FedData holds them: int64 tensor for integer ids, list of str for string ids."""
    if values.dtype.kind in "iu":
        return torch.tensor(values, dtype=torch.int64)
    return [str(value) for value in values]


def _copy_ids(ids: RawIds, count=None) -> RawIds:
    """The first ``count`` raw ids (all when None), copied."""
    head = ids[:count] if count is not None else ids
    return head.clone() if isinstance(ids, torch.Tensor) else list(head)


@dataclass
class FedData:
    """A dataset ready for federated simulation (N users = clients, I items, C eval negatives).

    train_items [T] int64, train_offsets [N + 1]: user u's training positives are
    ``train_items[train_offsets[u]:train_offsets[u + 1]]`` in time order.
    val_items, test_items [N]; val_negatives, test_negatives [N, C] (the same values under a
    shared-negatives protocol). interacted_keys: sorted ``u * I + j`` of every interaction;
    train_excluded_keys: sorted keys a training negative may not take (interactions, plus the
    eval candidates when the protocol excludes them). raw_user_ids [N], raw_item_ids [I]: the
    file's ids (int64 tensor, or list of str for string ids).
    """

    train_items: torch.Tensor
    train_offsets: torch.Tensor
    val_items: torch.Tensor
    test_items: torch.Tensor
    val_negatives: torch.Tensor
    test_negatives: torch.Tensor
    interacted_keys: torch.Tensor
    train_excluded_keys: torch.Tensor
    raw_user_ids: RawIds
    raw_item_ids: RawIds
    meta: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return self.val_items.numel()

    @property
    def num_items(self) -> int:
        return len(self.raw_item_ids)

    @property
    def num_interactions(self) -> int:
        return self.train_items.numel() + 2 * self.num_users

    @property
    def train_users(self) -> torch.Tensor:
        """[T] the user of each training positive."""
        counts = self.train_offsets[1:] - self.train_offsets[:-1]
        return torch.repeat_interleave(torch.arange(self.num_users), counts)

    def subset_users(self, count: int) -> "FedData":
        """The first ``count`` users with all their data (items keep their numbering)."""
        end = int(self.train_offsets[count])
        limit = count * self.num_items
        return FedData(
            train_items=self.train_items[:end].clone(), train_offsets=self.train_offsets[: count + 1].clone(),
            val_items=self.val_items[:count].clone(), test_items=self.test_items[:count].clone(),
            val_negatives=self.val_negatives[:count].clone(), test_negatives=self.test_negatives[:count].clone(),
            interacted_keys=self.interacted_keys[self.interacted_keys < limit].clone(),
            train_excluded_keys=self.train_excluded_keys[self.train_excluded_keys < limit].clone(),
            raw_user_ids=_copy_ids(self.raw_user_ids, count), raw_item_ids=_copy_ids(self.raw_item_ids),
            meta=dict(self.meta, users_subset=count))


def _build(path: Path, spec: DatasetConfig, protocol: ProtocolConfig, seed: int, meta: dict) -> FedData:
    frame = read_ratings(path, spec)
    kept = clean(frame, binarize_threshold=protocol.binarize_threshold, duplicates=protocol.duplicates,
                 min_interactions=protocol.min_interactions, source=str(path))
    split = leave_one_out(kept, str(path))
    num_users, num_items = split.num_users, split.num_items
    interacted = pair_keys(torch.tensor(kept["uid"].to_numpy()), torch.tensor(kept["iid"].to_numpy()),
                           num_items)
    shared = protocol.shared_val_test_negatives
    count = protocol.num_eval_negatives * (1 if shared else 2)
    negatives = sample_eval_negatives(interacted, num_users, num_items, count, generator(seed, "eval_negatives"),
                                      raw_user_ids=split.raw_user_ids, source=str(path))
    val_negatives = negatives[:, : protocol.num_eval_negatives]
    test_negatives = val_negatives if shared else negatives[:, protocol.num_eval_negatives:]
    excluded = interacted
    if protocol.train_negatives_exclude_eval:
        users = torch.arange(num_users).unsqueeze(1)
        eval_keys = torch.cat([(users * num_items + val_negatives).reshape(-1),
                               (users * num_items + test_negatives).reshape(-1)])
        excluded = torch.unique(torch.cat([interacted, eval_keys]))
    pool = num_items - torch.bincount(excluded // num_items, minlength=num_users)
    worst = int(torch.argmin(pool))
    if int(pool[worst]) < protocol.num_train_negatives:
        raise FedcaError(f"{path}: user {split.raw_user_ids[worst]} has only {int(pool[worst])} items left to draw "
                         f"training negatives from; lower protocol.num_train_negatives")
    return FedData(
        train_items=torch.tensor(split.train_items), train_offsets=torch.tensor(split.train_offsets),
        val_items=torch.tensor(split.val_items), test_items=torch.tensor(split.test_items),
        val_negatives=val_negatives.contiguous(), test_negatives=test_negatives.contiguous(),
        interacted_keys=interacted, train_excluded_keys=excluded,
        raw_user_ids=raw_ids(split.raw_user_ids), raw_item_ids=raw_ids(split.raw_item_ids),
        meta=meta)


def _cache_key(file_sha256: str, spec: DatasetConfig, protocol: ProtocolConfig, seed: int) -> str:
    record = {"format": CACHE_FORMAT, "file_sha256": file_sha256, "seed": seed,
              "parse": data_values(spec), "protocol": data_values(protocol)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _load_cached(path: Path, key: str):
    try:
        blob = torch.load(path, weights_only=True)
        if blob.get("key") != key:
            return None
        data = FedData(**{name: blob[name] for name in TENSOR_FIELDS}, meta=json.loads(blob["meta"]))
    except Exception:  # any unreadable or foreign cache file is rebuilt
        return None
    consistent = (data.train_offsets.numel() == data.num_users + 1
                  and int(data.train_offsets[-1]) == data.train_items.numel()
                  and data.val_negatives.shape == data.test_negatives.shape
                  and len(data.raw_user_ids) == data.num_users)
    return data if consistent else None


def _save_cached(path: Path, key: str, data: FedData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {name: getattr(data, name) for name in TENSOR_FIELDS}
    blob.update(key=key, meta=json.dumps(data.meta))
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def load_fed_data(spec: DatasetConfig, protocol: ProtocolConfig, seed: int, *, use_cache: bool = True,
                  progress: bool = False) -> FedData:
    """Locate (and if allowed download) the file, then build or load the cached FedData.

    A dataset's own ``min_interactions`` (when set) replaces ``protocol.min_interactions``."""
    protocol = protocol_in_force(spec, protocol)
    path = ensure_file(spec, progress=progress)
    file_sha256 = sha256_of(path)
    meta = {"dataset": spec.name, "file": path.name, "file_sha256": file_sha256,
            "official_checksum_match": None if not spec.sha256 else spec.sha256 == file_sha256,
            "protocol": asdict(protocol), "seed": seed,
            "synthetic": bool((read_provenance(path) or {}).get("synthetic", False))}
    key = _cache_key(file_sha256, spec, protocol, seed)
    cache_path = cache_dir() / "processed" / f"{spec.name}-{key[:20]}.pt"
    if use_cache and cache_path.is_file():
        cached = _load_cached(cache_path, key)
        if cached is not None:
            return cached
    data = _build(path, spec, protocol, seed, meta)
    if use_cache:
        _save_cached(cache_path, key, data)
    return data
