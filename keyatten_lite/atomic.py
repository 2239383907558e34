"""Atomic file replacement, shared by every writer in the runtime (IDF files, cache entries, CLI output)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(target: str | os.PathLike, data: bytes, *, prefix: str | None = None, suffix: str = ".tmp") -> None:
    """Write ``data`` to ``target`` so readers see the old file or the new one, never a part.

    A uniquely named temporary file in the same folder (so concurrent writers never share it) is
    flushed, fsynced and renamed into place; it is removed if anything fails.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    fd, temp_name = tempfile.mkstemp(prefix=prefix or f".{target.name}.", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except OSError:
            pass
        raise
