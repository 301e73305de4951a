"""Round-granular checkpoints, written so that a kill at any moment leaves a loadable one.

``checkpoint.pt`` is replaced atomically (temp file, fsync, rename), so the previous
checkpoint stays valid until the new one is complete.
"""

from pathlib import Path
from typing import Optional

import torch

from fedca.results.atomic import write_atomically

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: Path, state: dict) -> Path:
    """Atomically write ``state`` (tensors, dicts, numbers) to ``folder/checkpoint.pt``."""
    return write_atomically(Path(folder) / CHECKPOINT, lambda out: torch.save(state, out))


def load_checkpoint(folder: Path) -> Optional[dict]:
    """The state saved in ``folder``, or None when there is none."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, weights_only=False, map_location="cpu")
