"""Round-granular checkpoints, written so that a kill at any moment leaves a loadable one.

``checkpoint.pt`` is replaced atomically (temp file, fsync, rename), so the previous
checkpoint stays valid until the new one is complete.
"""

from pathlib import Path
from typing import Optional

import torch

from fedca.results.atomic import write_atomically

CHECKPOINT = "checkpoint.pt"
SELECTED = "selected.pt"


def save_checkpoint(folder: Path, state: dict, name: str = CHECKPOINT) -> Path:
    """Atomically write ``state`` (tensors, dicts, numbers) to ``folder/name``."""
    return write_atomically(Path(folder) / name, lambda out: torch.save(state, out))


def load_checkpoint(folder: Path, name: str = CHECKPOINT) -> Optional[dict]:
    """The state saved in ``folder/name``, or None when there is none."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    return torch.load(path, weights_only=False, map_location="cpu")
