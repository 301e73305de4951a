"""Round-granular checkpoints, written so that a kill at any moment leaves a loadable one.

``checkpoint.pt`` is replaced atomically: the new state goes to a temp file in the same
folder, is fsynced, and only then renamed over the old checkpoint, which therefore stays
valid until the new one is complete.
"""

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: Path, state: dict) -> Path:
    """Atomically write ``state`` (tensors, dicts, numbers) to ``folder/checkpoint.pt``."""
    path = Path(folder) / CHECKPOINT
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    os.fchmod(handle, 0o644)
    try:
        with os.fdopen(handle, "wb") as out:
            torch.save(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(folder: Path) -> Optional[dict]:
    """The state saved in ``folder``, or None when there is none."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, weights_only=False, map_location="cpu")
