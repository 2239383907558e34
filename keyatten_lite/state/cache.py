"""Two-layer disk cache for keyword extraction (layout and rules: docs/cache.md).

* document layer: what a document costs to prepare and run through the model (words, tags,
  candidates, token counts, and the word scores of all six base methods), before any IDF;
* keyword layer: the final ranked ``(phrase, score)`` list of one call configuration.

Entries are plain JSON (word scores as base64 of little-endian float32, exact and compact), written
atomically (a unique temp file in the target directory, fsync, ``os.replace``), so any number of
threads and processes may write the same key at once. Every entry carries a schema version and a
sha256 checksum of its payload; a file that is missing, truncated, damaged or of another schema is a
miss (never an exception) and is rewritten by the next computation. The total size is bounded: the
oldest entries (by mtime, refreshed on every hit) are pruned when ``max_bytes`` is exceeded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keyatten_lite.text.candidates import Candidate
from keyatten_lite.state.atomic import atomic_write_bytes
from keyatten_lite.errors import InvalidArgumentError

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_MAX_BYTES",
    "DiskCache",
    "DocumentEntry",
    "LAYERS",
    "SCHEMA_VERSION",
    "cache_key",
]

CACHE_FORMAT = "keyatten-lite-cache"
SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Everything lives under this sub-folder of cache_dir, so `clear` never touches other files there
# (0.3.1's cache_dir default "./cache" is a name many projects already use).
ROOT_NAME = f"keyatten-lite-v{SCHEMA_VERSION}"
LAYERS = ("documents", "keywords")
_SUFFIX = ".json"
_TEMP_SUFFIX = ".tmp"
# Temp files older than this are leftovers of killed writers, removed by prune.
_STALE_TEMP_SECONDS = 3600
# Pruning deletes down to this fraction of max_bytes, so it does not run again on the next write.
_LOW_WATER = 0.9
# A process re-scans the folder after this many of its own writes, to see other processes' entries.
_RESCAN_EVERY_WRITES = 256
_SCORE_ENCODING = "float32-le-base64"


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON with non-ASCII kept: the one serialisation keys and checksums use."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def cache_key(payload: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``payload`` (lone surrogates hashed as-is)."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8", "surrogatepass")).hexdigest()


def _checksum(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass
class DocumentEntry:
    """The document layer: a segmented document and the word scores of every base method."""

    words: list[str]
    tags: list[str]
    candidates: list[Candidate]
    keys: list[str]  # normalised key of each candidate
    token_counts: dict[str, float]
    scores: dict[str, np.ndarray]  # base method -> float32 [len(words)]

    def to_payload(self) -> dict:
        return {
            "words": list(self.words),
            "tags": list(self.tags),
            "candidates": [[c.text, int(c.word_start), int(c.word_end)] for c in self.candidates],
            "keys": list(self.keys),
            "token_counts": {str(k): float(v) for k, v in self.token_counts.items()},
            "score_encoding": _SCORE_ENCODING,
            "scores": {
                name: base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")
                for name, values in sorted(self.scores.items())
            },
        }

    @classmethod
    def from_payload(cls, payload: Any) -> "DocumentEntry | None":
        """The entry, or None when ``payload`` does not have the exact expected shape."""
        try:
            words, tags = payload["words"], payload["tags"]
            if not (_str_list(words) and _str_list(tags) and len(words) == len(tags)):
                return None
            n = len(words)
            candidates = []
            for item in payload["candidates"]:
                text, start, end = item
                if not (isinstance(text, str) and _int(start) and _int(end) and 0 <= start < end <= n):
                    return None
                candidates.append(Candidate(text, start, end))
            keys = payload["keys"]
            if not (_str_list(keys) and len(keys) == len(candidates)):
                return None
            counts = payload["token_counts"]
            if not isinstance(counts, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in counts.values()
            ):
                return None
            if payload["score_encoding"] != _SCORE_ENCODING or not isinstance(payload["scores"], dict):
                return None
            scores = {}
            for name, blob in payload["scores"].items():
                raw = base64.b64decode(blob.encode("ascii"), validate=True)
                if len(raw) != 4 * n:
                    return None
                scores[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            return cls(list(words), list(tags), candidates, list(keys), dict(counts), scores)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _keywords_from_payload(payload: Any) -> list[tuple[str, float]] | None:
    try:
        items = payload["keywords"]
        if not isinstance(items, list):
            return None
        out = []
        for phrase, score in items:
            if not isinstance(phrase, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
                return None
            out.append((phrase, float(score)))
        return out
    except (KeyError, TypeError, ValueError):
        return None


class DiskCache:
    """The cache folder ``<cache_dir>/keyatten-lite-v1/{documents,keywords}/<2 hex>/<sha256>.json``.

    Thread- and process-safe. Reads never raise: any problem is a miss. Writes that fail (disk full,
    read-only folder) warn once and are skipped, so extraction goes on without the cache.
    """

    def __init__(self, cache_dir: str | os.PathLike = "cache", max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(cache_dir, (str, os.PathLike)) or not str(cache_dir):
            raise InvalidArgumentError(f"cache_dir must be a folder path, got {cache_dir!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
            raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
        self.cache_dir = Path(os.fspath(cache_dir)).expanduser()
        self.root = self.cache_dir / ROOT_NAME
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._estimated_bytes: int | None = None  # None until the first scan
        self._writes_since_scan = 0
        self._warned = False
        # Counters of this object (not of the folder): "<layer>_hits", "<layer>_misses" (including
        # invalid entries), "<layer>_invalid", "<layer>_writes", and "pruned".
        self.stats = {f"{layer}_{what}": 0 for layer in LAYERS for what in ("hits", "misses", "invalid", "writes")}
        self.stats["pruned"] = 0

    # ------------------------------------------------------------------ paths
    def path_for(self, layer: str, key: str) -> Path:
        if layer not in LAYERS:
            raise InvalidArgumentError(f"cache layer must be one of {LAYERS}, got {layer!r}")
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise InvalidArgumentError(f"cache keys are sha256 hex digests, got {key!r}")
        return self.root / layer / key[:2] / f"{key}{_SUFFIX}"

    # ------------------------------------------------------------------ raw entries
    def _read_payload(self, layer: str, key: str) -> Any | None:
        """The payload of a valid entry, or None (missing, unreadable, damaged, other schema)."""
        path = self.path_for(layer, key)
        try:
            data = path.read_bytes()
        except OSError:
            self._count(f"{layer}_misses")
            return None
        try:
            entry = json.loads(data.decode("utf-8"))
            valid = (
                isinstance(entry, dict)
                and entry.get("format") == CACHE_FORMAT
                and entry.get("schema_version") == SCHEMA_VERSION
                and entry.get("layer") == layer
                and entry.get("key") == key
                and "payload" in entry
                and entry.get("checksum") == _checksum(entry["payload"])
            )
        except (UnicodeDecodeError, ValueError, TypeError, RecursionError):
            valid = False
        if not valid:
            self._count(f"{layer}_invalid")
            self._count(f"{layer}_misses")
            return None
        try:  # refresh mtime: pruning removes the least recently used entries first
            os.utime(path)
        except OSError:
            pass
        return entry["payload"]

    def _write_payload(self, layer: str, key: str, payload: Any) -> bool:
        path = self.path_for(layer, key)
        entry = {
            "format": CACHE_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "layer": layer,
            "key": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "checksum": _checksum(payload),
            "payload": payload,
        }
        try:
            data = canonical_json(entry).encode("utf-8")
        except (ValueError, TypeError, UnicodeEncodeError):
            return False  # not representable (e.g. NaN scores): leave it uncached
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A unique temp name per writer (0.3.1 shared "<digest>.tmp" between writers), in the same
            # folder so os.replace is an atomic rename; readers see the old file or the new one.
            atomic_write_bytes(path, data, prefix=f".{key[:16]}.", suffix=_TEMP_SUFFIX)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                warnings.warn(f"keyatten-lite cache: cannot write to {self.root} ({exc}); continuing without it")
            return False
        self._count(f"{layer}_writes")
        self._after_write(len(data))
        return True

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    # ------------------------------------------------------------------ typed layers
    def get_document(self, key: str) -> DocumentEntry | None:
        payload = self._read_payload("documents", key)
        entry = None if payload is None else DocumentEntry.from_payload(payload)
        if payload is not None and entry is None:
            self._count("documents_invalid")
            self._count("documents_misses")
        elif entry is not None:
            self._count("documents_hits")
        return entry

    def put_document(self, key: str, entry: DocumentEntry) -> bool:
        return self._write_payload("documents", key, entry.to_payload())

    def get_keywords(self, key: str) -> list[tuple[str, float]] | None:
        payload = self._read_payload("keywords", key)
        keywords = None if payload is None else _keywords_from_payload(payload)
        if payload is not None and keywords is None:
            self._count("keywords_invalid")
            self._count("keywords_misses")
        elif keywords is not None:
            self._count("keywords_hits")
        return keywords

    def put_keywords(self, key: str, keywords: Sequence[tuple[str, float]]) -> bool:
        items = [[str(p), float(s)] for p, s in keywords]
        if not all(math.isfinite(s) for _, s in items):
            return False
        return self._write_payload("keywords", key, {"keywords": items})

    # ------------------------------------------------------------------ size bound
    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every entry file; vanished files are skipped."""
        found = []
        for layer in LAYERS:
            base = self.root / layer
            if not base.is_dir():
                continue
            for sub in base.iterdir():
                if not sub.is_dir():
                    continue
                for path in sub.iterdir():
                    if path.suffix != _SUFFIX or path.name.startswith("."):
                        continue
                    try:
                        st = path.stat()
                    except OSError:
                        continue
                    found.append((st.st_mtime, st.st_size, path))
        return found

    def _after_write(self, size: int) -> None:
        with self._lock:
            self._writes_since_scan += 1
            if self._estimated_bytes is not None:
                self._estimated_bytes += size
            needs_scan = (
                self._estimated_bytes is None
                or self._estimated_bytes > self.max_bytes
                or self._writes_since_scan >= _RESCAN_EVERY_WRITES
            )
        if needs_scan:
            self.prune()

    def prune(self, max_bytes: int | None = None) -> dict:
        """Delete the least recently used entries until the total is at most ``max_bytes``
        (default: this cache's bound; pruning goes down to 90% of it). Also removes stale temp files."""
        limit = self.max_bytes if max_bytes is None else int(max_bytes)
        if limit < 0:
            raise InvalidArgumentError(f"max_bytes must be >= 0, got {max_bytes!r}")
        self._remove_stale_temp_files()
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        removed = removed_bytes = 0
        if total > limit:
            target = int(limit * _LOW_WATER) if max_bytes is None else limit
            for _, size, path in sorted(entries, key=lambda e: (e[0], str(e[2]))):
                if total <= target:
                    break
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass  # another process pruned it first
                except OSError:
                    continue
                total -= size
                removed += 1
                removed_bytes += size
        with self._lock:
            self._estimated_bytes = total
            self._writes_since_scan = 0
            self.stats["pruned"] += removed
        return {"removed": removed, "removed_bytes": removed_bytes, "bytes": total, "entries": len(entries) - removed}

    def _remove_stale_temp_files(self) -> None:
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for layer in LAYERS:
            base = self.root / layer
            if not base.is_dir():
                continue
            for path in base.glob(f"*/.*{_TEMP_SUFFIX}"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                except OSError:
                    pass

    # ------------------------------------------------------------------ maintenance
    def info(self) -> dict:
        """Entry counts and bytes per layer, the bound, and the oldest/newest entry times."""
        per_layer = {layer: {"entries": 0, "bytes": 0} for layer in LAYERS}
        times = []
        for mtime, size, path in self._entries():
            layer = path.parent.parent.name
            per_layer[layer]["entries"] += 1
            per_layer[layer]["bytes"] += size
            times.append(mtime)
        fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        return {
            "root": str(self.root),
            "schema_version": SCHEMA_VERSION,
            "max_bytes": self.max_bytes,
            "entries": sum(v["entries"] for v in per_layer.values()),
            "bytes": sum(v["bytes"] for v in per_layer.values()),
            "layers": per_layer,
            "oldest": fmt(min(times)) if times else None,
            "newest": fmt(max(times)) if times else None,
        }

    def clear(self) -> int:
        """Delete every entry and temp file of this cache (other files in cache_dir are left alone)."""
        removed = 0
        for layer in LAYERS:
            base = self.root / layer
            if not base.is_dir():
                continue
            for sub in list(base.iterdir()):
                if not sub.is_dir():
                    continue
                for path in list(sub.iterdir()):
                    if path.suffix in (_SUFFIX, _TEMP_SUFFIX):
                        try:
                            path.unlink()
                            removed += path.suffix == _SUFFIX
                        except OSError:
                            pass
                try:
                    sub.rmdir()
                except OSError:
                    pass  # not empty: a concurrent writer, or foreign files
        with self._lock:
            self._estimated_bytes = None
        return removed
