"""Atomic file writes: write a temp file in the same folder, fsync, then rename over the target."""

import json
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Replace ``path`` with what ``write(file)`` writes, so that readers see the old or the new
    file, never a part; the old file stays valid until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, 0o644)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    write_atomically(path, lambda out: out.write(text.encode("utf-8")))


def write_text_if_changed(path: Path, text: str) -> bool:
    """``write_text`` unless ``path`` already holds ``text`` (its bytes and mtime then stay as they
    are); whether it wrote."""
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def write_json(path: Path, payload: dict) -> None:
    """Atomically write ``payload`` as indented JSON."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
