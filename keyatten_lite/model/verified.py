"""Verified-bundle records: hash a bundle's files once, then trust their size, mtime and inode.

``open_bundle`` used to hash every listed file in every new process (590 MB for the Chinese bundle,
about a second and a half). After a full verification it now writes a small record into
``<home>/verified/<bundle name>-<first 16 hex of sha256(bundle.json)>.json`` (atomically), and a
later open trusts the files when the record's manifest digest, bundle directory and every file's
``(bytes, mtime_ns, inode)`` match what ``os.stat`` says now. Anything else (no record, a damaged
or foreign one, any file replaced, resized or touched) means a full verification, which rewrites the
record. ``keyatten-lite models verify`` always hashes fully and refreshes it.

The trade-off (docs/bundle-format.md): a change that keeps a file's size and sets its mtime back
(``os.utime``) in place, on the same inode, is not noticed by ``open_bundle``; ``models verify`` finds
it. Record layout::

    {"format": "keyatten-lite verified", "layout": 1, "name": ..., "path": "<resolved bundle dir>",
     "manifest_sha256": "<64 hex>", "verified_at": <unix seconds>,
     "files": {"model.onnx": {"sha256": ..., "bytes": ..., "mtime_ns": ..., "inode": ...}, ...}}

Nothing here raises on a bad record or an unwritable home: a record that cannot be read is ignored,
one that cannot be written only costs the hashing next time.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from keyatten_lite.state.atomic import atomic_write_bytes

__all__ = [
    "RECORD_FORMAT",
    "verified_dir",
    "record_path",
    "file_signature",
    "load_record",
    "record_matches",
    "write_record",
    "remove_record",
]

RECORD_FORMAT = "keyatten-lite verified"
RECORD_LAYOUT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def verified_dir(home: str | os.PathLike | None = None) -> Path:
    """``<home>/verified`` (home: :func:`keyatten_lite.model.registry.home_dir` by default)."""
    from keyatten_lite.model.registry import home_dir

    base = Path(home).expanduser() if home is not None else home_dir()
    return base / "verified"


def record_path(name: str, manifest_sha256: str, home: str | os.PathLike | None = None) -> Path:
    safe = _UNSAFE.sub("_", str(name))[:80] or "bundle"
    return verified_dir(home) / f"{safe}-{manifest_sha256[:16]}.json"


def file_signature(path: str | os.PathLike) -> dict:
    """What a record keeps of a file's ``os.stat``: ``bytes``, ``mtime_ns``, ``inode``."""
    stat = os.stat(path)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def load_record(path: str | os.PathLike) -> dict | None:
    """The record at ``path``, or None when it is missing, unreadable or not a well-formed record."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
        record = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get("layout") != RECORD_LAYOUT:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not isinstance(record.get("manifest_sha256"), str):
        return None
    for entry in files.values():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool)
            for key in ("bytes", "mtime_ns", "inode")
        ):
            return None
    return record


def record_matches(record: dict | None, bundle_dir: Path, manifest: dict, manifest_sha256: str) -> bool:
    """True when ``record`` vouches for every file ``manifest`` lists, exactly as they are on disk now."""
    if record is None or record.get("manifest_sha256") != manifest_sha256:
        return False
    if record.get("path") != str(Path(bundle_dir).resolve()):
        return False
    files = record["files"]
    if set(files) != set(manifest["files"]):
        return False
    for rel_name, entry in manifest["files"].items():
        kept = files[rel_name]
        if kept.get("sha256") != entry["sha256"] or kept["bytes"] != entry["bytes"]:
            return False
        try:
            now = file_signature(Path(bundle_dir) / rel_name)
        except OSError:
            return False
        if (now["bytes"], now["mtime_ns"], now["inode"]) != (kept["bytes"], kept["mtime_ns"], kept["inode"]):
            return False
    return True


def write_record(
    name: str,
    bundle_dir: Path,
    manifest: dict,
    manifest_sha256: str,
    signatures: dict[str, dict],
    home: str | os.PathLike | None = None,
) -> Path | None:
    """Record that every file of ``manifest`` was hashed and matched, with the stat ``signatures``
    taken around the hashing. Returns the record's path, or None when it could not be written."""
    record = {
        "format": RECORD_FORMAT,
        "layout": RECORD_LAYOUT,
        "name": str(name),
        "path": str(Path(bundle_dir).resolve()),
        "manifest_sha256": manifest_sha256,
        "verified_at": round(time.time(), 3),
        "files": {
            rel_name: {"sha256": entry["sha256"], **signatures[rel_name]}
            for rel_name, entry in sorted(manifest["files"].items())
        },
    }
    target = record_path(name, manifest_sha256, home)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    except OSError:
        return None
    _prune(target, record["path"])
    return target


def _prune(keep: Path, bundle_path: str) -> None:
    """Drop older records of the same bundle name for this directory (rebuilt bundles) and records of
    directories that no longer exist, so the folder does not grow with every rebuild."""
    prefix = keep.name[: -len("0123456789abcdef.json")]  # "<name>-"
    try:
        others = [p for p in keep.parent.glob(prefix + "*.json") if p != keep and len(p.name) == len(keep.name)]
    except OSError:
        return
    for other in others:
        record = load_record(other)
        if record is None or record.get("path") == bundle_path or not os.path.isdir(str(record.get("path"))):
            try:
                other.unlink()
            except OSError:
                pass


def remove_record(name: str, manifest_sha256: str, home: str | os.PathLike | None = None) -> None:
    try:
        record_path(name, manifest_sha256, home).unlink()
    except OSError:
        pass
