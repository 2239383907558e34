"""Document frequencies, IDF lookups and TF-IDF word values (spec §5).

``IdfState`` keeps the counts (not only the lookup), so corpora can be updated and merged later and
saved as a small UTF-8 text file (format: docs/idf-format.md). No pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from keyatten_lite.text.candidates import token_counts, valid_word_mask
from keyatten_lite.state.atomic import atomic_write_bytes
from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.normalize import normalize_phrase

__all__ = ["FILE_HEADER", "IdfState", "document_keys", "idf_value", "tfidf_word_values"]

FILE_HEADER = "# keyatten-lite idf v1"
_DOCUMENTS_PREFIX = "#documents\t"
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_NEEDS_ESCAPE = re.compile("[\\\\\t\n\r\ud800-\udfff]")
_ESCAPE_SEQUENCE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_DIGITS = re.compile("[0-9]+")


def document_keys(words: Sequence[str], tags: Sequence[str], language: str) -> set[str]:
    """§5.1: the set of normalised keys of a document's valid words."""
    mask = valid_word_mask(words, tags, language)
    return {normalize_phrase(words[i]) for i in np.flatnonzero(mask).tolist()}


def idf_value(document_count: int, document_frequency: int) -> float:
    """§5.2: ``ln((N + 1) / (df + 1)) + 1`` with ``N = max(document_count, 1)`` (sklearn's smooth IDF)."""
    n = max(document_count, 1)
    return math.log((n + 1) / (document_frequency + 1)) + 1.0


class IdfState:
    """Document count and per-key document frequencies, with the IDF lookup derived from them.

    A state made with ``from_lookup`` holds only a user-supplied lookup: it can be used for
    extraction and fingerprinted, but not updated, merged or saved.
    """

    __slots__ = ("doc_count", "document_frequency", "_lookup", "_fingerprint", "_fixed_lookup")

    def __init__(self, doc_count: int = 0, document_frequency: Mapping[str, int] | None = None) -> None:
        self.doc_count: int = int(doc_count)
        self.document_frequency: dict[str, int] = dict(document_frequency or {})
        self._lookup: dict[str, float] | None = None
        self._fingerprint: str | None = None
        self._fixed_lookup = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lookup(cls, mapping: Mapping[str, float]) -> "IdfState":
        """Wrap a ready-made ``{key: idf}`` mapping (no counts)."""
        if not isinstance(mapping, Mapping):
            raise InvalidArgumentError(f"an IDF lookup must be a mapping of keys to numbers, got {type(mapping).__name__}")
        lookup: dict[str, float] = {}
        for key, value in mapping.items():
            try:
                lookup[str(key)] = float(value)
            except (TypeError, ValueError):
                raise InvalidArgumentError(f"IDF value for {key!r} is not a number: {value!r}") from None
        state = cls()
        state._lookup = lookup
        state._fixed_lookup = True
        return state

    @property
    def has_counts(self) -> bool:
        """False for a state made with ``from_lookup``."""
        return not self._fixed_lookup

    def _require_counts(self, action: str) -> None:
        if self._fixed_lookup:
            raise InvalidArgumentError(
                f"cannot {action} an IDF state built from a lookup mapping: it has no document counts "
                "(fit it on documents instead)"
            )

    def _changed(self) -> None:
        self._lookup = None
        self._fingerprint = None

    # ------------------------------------------------------------------ counting
    def add_document_keys(self, keys: Iterable[str]) -> None:
        """Count one document, given the set of its keys."""
        self._require_counts("update")
        frequency = self.document_frequency
        for key in set(keys):
            if not isinstance(key, str):
                raise InvalidArgumentError(f"IDF keys must be str, got {type(key).__name__}: {key!r}")
            frequency[key] = frequency.get(key, 0) + 1
        self.doc_count += 1
        self._changed()

    def update_keys(self, key_sets: Iterable[Iterable[str]]) -> None:
        """Count more documents on top of the current state."""
        self._require_counts("update")
        for keys in key_sets:
            self.add_document_keys(keys)

    def fit_keys(self, key_sets: Iterable[Iterable[str]]) -> None:
        """Reset, then count ``key_sets`` (one set per document)."""
        self.doc_count = 0
        self.document_frequency = {}
        self._fixed_lookup = False
        self._changed()
        self.update_keys(key_sets)

    def merge(self, other: "IdfState") -> "IdfState":
        """A new state with the documents of both (counts add)."""
        if not isinstance(other, IdfState):
            raise InvalidArgumentError(f"can only merge with another IdfState, got {type(other).__name__}")
        self._require_counts("merge")
        other._require_counts("merge")
        frequency = Counter(self.document_frequency)
        frequency.update(other.document_frequency)
        return IdfState(self.doc_count + other.doc_count, dict(frequency))

    # ------------------------------------------------------------------ lookup
    def lookup(self) -> dict[str, float]:
        """``{key: idf}`` for every key seen (§5.2). Cached: treat it as read-only, copy to modify."""
        if self._lookup is None:
            n = max(self.doc_count, 1)
            self._lookup = {
                key: math.log((n + 1) / (df + 1)) + 1.0 for key, df in self.document_frequency.items()
            }
        return self._lookup

    def fingerprint(self) -> str:
        """§5.5 sha256 of the lookup (values rounded to 12 places, sorted compact JSON), cached."""
        if self._fingerprint is None:
            self._fingerprint = lookup_fingerprint(self.lookup())
        return self._fingerprint

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdfState):
            return NotImplemented
        if self._fixed_lookup or other._fixed_lookup:
            return self._fixed_lookup == other._fixed_lookup and self.lookup() == other.lookup()
        return self.doc_count == other.doc_count and self.document_frequency == other.document_frequency

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        if self._fixed_lookup:
            return f"IdfState.from_lookup(<{len(self.lookup())} keys>)"
        return f"IdfState(doc_count={self.doc_count}, keys={len(self.document_frequency)})"

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the counts as UTF-8 TSV (docs/idf-format.md), atomically (temp file + os.replace)."""
        self._require_counts("save")
        target = Path(path)
        lines = [FILE_HEADER, f"{_DOCUMENTS_PREFIX}{self.doc_count}"]
        lines.extend(f"{_escape_key(key)}\t{df}" for key, df in sorted(self.document_frequency.items()))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        atomic_write_bytes(target, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IdfState":
        """Read a file written by ``save``; any malformed line raises ``InvalidArgumentError``."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            raise InvalidArgumentError(f"IDF file not found: {str(source)!r}") from None
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read IDF file {str(source)!r}: {exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise InvalidArgumentError(f"{source}:{line}: IDF file is not valid UTF-8") from None
        return cls._parse(text, str(source))

    @classmethod
    def _parse(cls, text: str, name: str) -> "IdfState":
        def fail(lineno: int, message: str) -> InvalidArgumentError:
            return InvalidArgumentError(f"{name}:{lineno}: {message} (expected the format of docs/idf-format.md)")

        if not text.endswith("\n"):
            raise fail(text.count("\n") + 1, "file is truncated (no final newline)")
        lines = text[:-1].split("\n")
        if lines[0] != FILE_HEADER:
            raise fail(1, f"first line must be {FILE_HEADER!r}, got {lines[0][:60]!r}")
        if len(lines) < 2 or not lines[1].startswith(_DOCUMENTS_PREFIX):
            raise fail(2, "second line must be '#documents<TAB><count>'")
        count_text = lines[1][len(_DOCUMENTS_PREFIX):]
        if not _DIGITS.fullmatch(count_text):
            raise fail(2, f"document count must be a non-negative integer, got {count_text!r}")
        doc_count = int(count_text)
        frequency: dict[str, int] = {}
        for lineno, line in enumerate(lines[2:], start=3):
            fields = line.split("\t")
            if len(fields) != 2:
                raise fail(lineno, f"expected '<key><TAB><document frequency>', got {len(fields)} field(s)")
            raw_key, df_text = fields
            if not _DIGITS.fullmatch(df_text):
                raise fail(lineno, f"document frequency must be a positive integer, got {df_text!r}")
            df = int(df_text)
            if not 1 <= df <= doc_count:
                raise fail(lineno, f"document frequency {df} is outside 1..{doc_count} (the document count)")
            try:
                key = _unescape_key(raw_key)
            except ValueError as exc:
                raise fail(lineno, str(exc)) from None
            if key in frequency:
                raise fail(lineno, f"duplicate key {key!r}")
            frequency[key] = df
        return cls(doc_count, frequency)


def _escape_key(key: str) -> str:
    def replace(match: re.Match[str]) -> str:
        char = match.group()
        return _ESCAPES.get(char) or f"\\u{ord(char):04x}"  # lone surrogates cannot be UTF-8

    return _NEEDS_ESCAPE.sub(replace, key)


def _unescape_key(raw: str) -> str:
    if "\\" not in raw:
        return raw

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _UNESCAPES:
            return _UNESCAPES[code]
        if len(code) == 5:
            return chr(int(code[1:], 16))
        raise ValueError(f"unknown escape sequence \\{code!r} in key")

    if raw.endswith("\\") and (len(raw) - len(raw.rstrip("\\"))) % 2 == 1:
        raise ValueError("key ends with an unfinished escape '\\'")
    return _ESCAPE_SEQUENCE.sub(replace, raw)


def lookup_fingerprint(lookup: Mapping[str, float] | None) -> str | None:
    """§5.5: sha256 of ``{str(key): round(float(value), 12)}`` as sorted compact JSON (None for None)."""
    if lookup is None:
        return None
    payload = {str(key): round(float(value), 12) for key, value in lookup.items()}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tfidf_word_values(
    words: Sequence[str],
    tags: Sequence[str],
    language: str,
    lookup: Mapping[str, float],
    *,
    counts: Mapping[str, float] | None = None,
    default_idf: float | None = None,
) -> np.ndarray:
    """§5.3: ``tf(key) * idf(key)`` for valid words, 0 for the others (float32).

    ``tf`` is the raw count of the key among the document's valid words (``counts`` if given). A key
    missing from ``lookup`` gets idf 0 (0.3.1) or ``default_idf`` when one is given.
    """
    mask = valid_word_mask(words, tags, language)
    if counts is None:
        counts = token_counts(words, tags, language)
    missing = 0.0 if default_idf is None else float(default_idf)
    values = np.zeros(len(words), dtype=np.float32)
    for i in np.flatnonzero(mask).tolist():
        key = normalize_phrase(words[i])
        values[i] = float(counts.get(key, 0.0)) * float(lookup.get(key, missing))
    return values
