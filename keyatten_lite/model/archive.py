"""The pack format shared by ``models pack`` and ``models install`` (format below); its errors and the
byte-level helpers both sides use.

Deploy bundles without torch: pack a built bundle into one tar file, install it elsewhere.

    keyatten-lite models pack minilm-l6-en -o minilm-l6-en.tar.gz      # on the machine that built it
    keyatten-lite models install minilm-l6-en.tar.gz                   # on a machine without torch

An archive (plain tar or gzip tar) holds one folder per bundle, ``<name>/``, with ``bundle.json``,
``tokenizer.json``, the graph files of the packed variants, every other file the manifest lists, and
``<name>/PACK.json``: the sha256 and size of every packed file, the variants and the names of all
bundles in the archive. Packing is deterministic (sorted members, mtime 0, uid/gid 0, no user names,
fixed modes, gzip header without time or file name): the same bundle gives the same bytes.

Installing never trusts the archive: only plain files directly inside ``<name>/`` (a simple name)
are accepted, nothing else (links, devices, absolute or ``..`` paths, duplicates, unlisted files);
the decompressed size is capped; every file is checked against PACK.json and the manifest; the
bundle is built in a dot-directory inside ``<home>/bundles`` and renamed into place in one step.

A pack without some variant (e.g. fp32 only) carries a rewritten bundle.json whose ``files`` table
lists only the packed files (plus ``packed_without``: the names left out), because ``open_bundle``
verifies every listed file and refuses a bundle with a listed file missing. Its ``content_hash``
therefore differs from the full bundle's (caches keyed on it miss; they never serve wrong results).
Only ONNX, JSON and plain text are read or written; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from keyatten_lite.state.atomic import default_file_mode
from keyatten_lite.errors import (
    BundleError,
    ChecksumError,
)

PACK_FORMAT = "keyatten-lite-pack"
PACK_FORMAT_VERSION = 1
PACK_NAME = "PACK.json"
VARIANTS = ("fp32", "int8")
# Zip-bomb guard: most bytes an archive may decompress to (tar headers included). The default
# bundles are 0.1 to 0.6 GB; a decoder bundle with external data can be a few GB.
DEFAULT_MAX_BYTES = 8 << 30
MAX_MEMBERS = 1000
MAX_JSON_BYTES = 16 << 20  # bundle.json and PACK.json are read into memory
CHUNK = 1 << 20

# Bundle folder names: what open_bundle(name) resolves, never hidden (dot-directories are half-built).
NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?\Z")
FILE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}\Z")
HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class PackError(BundleError):
    """A bundle cannot be packed, or an archive is unsafe, damaged or does not match its PACK.json."""


class PackChecksumError(PackError, ChecksumError):
    """A packed file's sha256 or size differs from PACK.json or from the bundle's manifest."""


# ---------------------------------------------------------------------------------------------
# helpers


def is_name(name: Any) -> bool:
    return isinstance(name, str) and bool(NAME_RE.match(name)) and ".." not in name


def is_file_name(name: Any) -> bool:
    return isinstance(name, str) and bool(FILE_RE.match(name)) and ".." not in name


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def file_mode() -> int:
    """What ``open(path, "w")`` would give a new file (0o666 less the umask)."""
    return default_file_mode()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class HashingWriter:
    """File-like sink that hashes and counts what passes through (the archive's sha256)."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data) -> int:
        self.handle.write(data)
        self.digest.update(data)
        self.count += len(data)
        return len(data)

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self.handle.flush()


class HashingReader:
    """Reads a source file for tarfile.addfile and hashes what it read (catches files that change)."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data


class LimitedReader:
    """Counts decompressed bytes and refuses past ``limit`` (zip-bomb guard)."""

    def __init__(self, handle, limit: int, where: str):
        self.handle = handle
        self.limit = limit
        self.where = where
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit - self.count + 1
        data = self.handle.read(min(size, self.limit - self.count + 1))
        self.count += len(data)
        if self.count > self.limit:
            raise PackError(
                f"{self.where}: the archive decompresses to more than {self.limit} bytes (the limit); "
                "refusing it (pass a larger max_bytes if the bundle really is that big)"
            )
        return data


# ---------------------------------------------------------------------------------------------
# packing
