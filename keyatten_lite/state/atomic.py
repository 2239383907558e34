"""Atomic file replacement, shared by every writer in the runtime (IDF files, cache entries, CLI output)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_file_mode() -> int:
    """The permissions ``open(path, "w")`` would give a new file: 0o666 less the process umask.

    Linux reports the umask in /proc. Elsewhere it can only be read by setting and restoring it, which
    is not thread-safe, so that is done once and remembered.
    """
    global _FALLBACK_UMASK
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    if _FALLBACK_UMASK is None:
        _FALLBACK_UMASK = os.umask(0o022)
        os.umask(_FALLBACK_UMASK)
    return 0o666 & ~_FALLBACK_UMASK


_FALLBACK_UMASK: int | None = None


def atomic_write_bytes(target: str | os.PathLike, data: bytes, *, prefix: str | None = None, suffix: str = ".tmp") -> None:
    """Write ``data`` to ``target`` so readers see the old file or the new one, never a part.

    A uniquely named temporary file in the same folder (so concurrent writers never share it) is
    flushed, fsynced and renamed into place; it is removed if anything fails. The file gets the
    permissions a plain ``open(..., "w")`` would give it (mkstemp's 0600 would hide IDF files and
    results from other users), or keeps those of the file it replaces.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    fd, temp_name = tempfile.mkstemp(prefix=prefix or f".{target.name}.", suffix=suffix, dir=directory)
    try:
        try:
            mode = target.stat().st_mode & 0o777
        except OSError:
            mode = default_file_mode()
        os.fchmod(fd, mode)
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
