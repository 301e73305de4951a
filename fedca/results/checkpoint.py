"""Round-granular checkpoints, written so that a kill at any moment leaves a loadable one.

``checkpoint.pt`` is replaced atomically (temp file, fsync, rename), so the previous
checkpoint stays valid until the new one is complete.

A checkpoint holds only tensors, numbers, strings, booleans, None, lists, tuples and dicts,
and is read with ``torch.load(weights_only=True)``: a file that asks the unpickler to call
anything (a crafted pickle whose ``__reduce__`` runs ``os.system``, say) is refused with one
line before any of it runs. ``init.from_run`` reads other people's runs, so this matters.
Checkpoints of older fedca versions stored the cold-start block as a ``Downloads`` object;
``fedca upgrade-checkpoint PATH`` rewrites one as plain fields, reading it with that single
class allowed and nothing else.
"""

import pickle
import re
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Optional

import torch

from fedca.errors import FedcaError
from fedca.results.atomic import write_atomically

CHECKPOINT = "checkpoint.pt"
SELECTED = "selected.pt"
PLAIN_TYPES = (torch.Tensor, str, int, float, bool, type(None))


def _check_plain(value, where: str = "state") -> None:
    """TypeError naming the first value of ``value`` that weights-only loading would refuse."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] is a {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN_TYPES):
        raise TypeError(f"checkpoint value {where} is a {type(value).__module__}.{type(value).__name__}; "
                        f"store plain fields")


def save_checkpoint(folder: Path, state: dict, name: str = CHECKPOINT) -> Path:
    """Atomically write ``state`` (tensors, dicts, lists, numbers, strings) to ``folder/name``;
    TypeError for anything else, so no checkpoint is written that weights-only loading refuses."""
    _check_plain(state)
    return write_atomically(Path(folder) / name, lambda out: torch.save(state, out))


def _refusal(path: Path, exc: Exception) -> str:
    """The one line that says why ``path`` was not loaded and what to do."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    name = found.group(1) if found else None
    if name and name.startswith("fedca."):
        return (f"{path} was written by an older fedca that stored the Python class {name} in checkpoints; "
                f"rewrite it as plain fields with `fedca upgrade-checkpoint {path}` or rerun that run")
    what = f"to call {name}" if name else "for objects other than tensors, numbers, strings, lists and dicts"
    return (f"refused to load {path}: the file asks {what} while it is read, which could run code; "
            f"a fedca checkpoint holds only tensors, numbers, strings, lists and dicts")


def read_checkpoint(path: Path) -> dict:
    """The state in the checkpoint file ``path``, read without running any code from it;
    FedcaError (one line) for a file that holds anything but plain data."""
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol before refusing it
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise FedcaError(_refusal(Path(path), exc)) from None
    if not isinstance(state, dict):
        raise FedcaError(f"{path} is not a fedca checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def load_checkpoint(folder: Path, name: str = CHECKPOINT) -> Optional[dict]:
    """The state saved in ``folder/name``, or None when there is none (see ``read_checkpoint``)."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    return read_checkpoint(path)


def upgrade_checkpoint(path: Path) -> bool:
    """Rewrite an older fedca checkpoint as plain fields in place; False when it already is one.

    The file is read weights-only with exactly one class allowed, fedca's ``Downloads`` (the
    cold-start block older versions pickled as an object), so upgrading runs no code either."""
    from fedca.aggregators.base import Downloads

    path = Path(path)
    if not path.is_file():
        raise FedcaError(f"{path}: no such checkpoint file")
    try:
        read_checkpoint(path)
        return False
    except FedcaError as exc:
        if "older fedca" not in str(exc):
            raise
    try:
        with torch.serialization.safe_globals([Downloads]):
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise FedcaError(f"cannot upgrade {path}: besides fedca's Downloads it holds other classes "
                         f"({_refusal(path, exc)}); rerun that run instead") from None
    simulation = state.get("simulation") if isinstance(state, dict) else None
    if isinstance(simulation, dict) and isinstance(simulation.get("cold_start"), Downloads):
        cold_start = simulation["cold_start"]
        simulation["cold_start"] = {field.name: getattr(cold_start, field.name) for field in fields(cold_start)}
    save_checkpoint(path.parent, state, path.name)
    return True
