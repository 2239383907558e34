"""A plain-text cache of jieba's parsed default dictionary, so a process need not re-parse dict.txt.

jieba builds its prefix dictionary (``FREQ``: every word of dict.txt with its frequency, and every
prefix of a word with 0 unless it is a word itself; ``total``: the sum of the frequencies) and the
POS tagger builds ``word_tag_tab`` by parsing the 5 MB dict.txt line by line in Python, a second or
so per process. jieba's own cache is marshal in the temp folder, which the runtime does not load; this
module keeps the same state in a documented text format instead:

* :func:`load_default_dictionary` -> ``(FREQ, total)``, what ``Tokenizer.initialize`` would set;
* :func:`load_pos_table` -> ``word_tag_tab``, what ``posseg.POSTokenizer`` would read (only when asked).

Both read ``<cache_dir>/jieba-<kind>-<jieba version>-<first 16 hex of sha256(dict.txt)>.txt`` and fall
back to parsing dict.txt with jieba's own parsers (so a rebuilt value is jieba's by construction) when
the file is missing, damaged or stale, then rewrite it atomically (temp file + ``os.replace``; writers
racing each other each replace it with a complete file). A cache that cannot be written (read-only
home, full disk) only costs the parse. A damaged file never crashes and is never used: it must carry
the right format, layout, jieba version and dict.txt digest, its trailing sha256 must match, and its
group counts and number of entries must agree.

File layout (UTF-8, lines end with ``\\n``; layout 1)::

    {"format": "keyatten-lite jieba-freq", "layout": 1, "jieba": "0.42.1",
     "dict_sha256": "<64 hex>", "entries": N, "groups": G, "total": T}      <- one line of JSON
    <value> <count>        <- G groups: a frequency (decimal) or a POS tag, then how many words have it
    <word>                 <- ... followed by that many lines, one word each
    ...
    sha256 <64 hex>        <- digest of every byte before this line

The POS file is the same with ``"format": "keyatten-lite jieba-pos"`` and no ``"total"``. Grouping by
value means each distinct frequency or tag is parsed once and each group is one ``dict.fromkeys``,
which is what makes loading quicker than parsing dict.txt. It does not keep jieba's insertion order,
which jieba never relies on (it only looks words up); the dicts compare equal.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
from pathlib import Path

from keyatten_lite.state.atomic import atomic_write_bytes

__all__ = ["load_default_dictionary", "load_pos_table"]

_LAYOUT = 1
_FREQ_FORMAT = "keyatten-lite jieba-freq"
_POS_FORMAT = "keyatten-lite jieba-pos"
_SAFE_VERSION = re.compile(r"[^A-Za-z0-9._+-]")

# (dict.txt name, size, mtime_ns) -> sha256 hex, so the freq and POS loads of one process hash once.
_digest_memo: dict[tuple, str] = {}
_digest_lock = threading.Lock()


def _jieba():
    try:
        import jieba
    except ImportError as exc:
        raise ImportError("Chinese segmentation needs jieba: pip install 'jieba>=0.42.1'") from exc
    return jieba


def _read_default_dict(jieba) -> bytes:
    """The bytes of jieba's default dict.txt, opened the way jieba opens it."""
    with jieba.Tokenizer().get_dict_file() as handle:
        return handle.read()


def _dict_digest(jieba) -> tuple[str, bytes | None]:
    """sha256 of dict.txt, and its bytes when they had to be read (None when the digest was memoised)."""
    with jieba.Tokenizer().get_dict_file() as handle:
        try:
            st = os.fstat(handle.fileno())
            signature = (getattr(handle, "name", None), st.st_size, st.st_mtime_ns)
        except (AttributeError, OSError, io.UnsupportedOperation):
            signature = None
        with _digest_lock:
            digest = _digest_memo.get(signature) if signature is not None else None
        if digest is not None:
            return digest, None
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    if signature is not None:
        with _digest_lock:
            _digest_memo[signature] = digest
    return digest, data


def _cache_file(cache_dir: str | os.PathLike, kind: str, jieba_version: str, digest: str) -> Path:
    return Path(cache_dir) / f"jieba-{kind}-{_SAFE_VERSION.sub('_', jieba_version)}-{digest[:16]}.txt"


# ------------------------------------------------------------------------------------ encoding
def _encode(header: dict, mapping: dict) -> bytes | None:
    """The cache file for ``mapping`` (word -> value), or None if it cannot be represented."""
    groups: dict[object, list[str]] = {}
    for word, value in mapping.items():
        groups.setdefault(value, []).append(word)
    lines = []
    for value, words in groups.items():
        value_text = str(value)
        if not value_text or " " in value_text or "\n" in value_text:
            return None
        lines.append(f"{value_text} {len(words)}")
        lines.extend(words)
    if any("\n" in word for word in mapping):  # a word must fit on one line
        return None
    header = dict(header, layout=_LAYOUT, entries=len(mapping), groups=len(groups))
    body = (json.dumps(header, ensure_ascii=False, sort_keys=True) + "\n" + "\n".join(lines) + "\n").encode(
        "utf-8", "surrogatepass"
    )
    return body + b"sha256 " + hashlib.sha256(body).hexdigest().encode("ascii") + b"\n"


def _decode(data: bytes, fmt: str, jieba_version: str, digest: str, int_values: bool):
    """(mapping, header) from a cache file, or None for anything that is not a valid, current file."""
    try:
        if not data.endswith(b"\n"):
            return None
        trailer_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        trailer = data[trailer_start:-1]
        if trailer != b"sha256 " + hashlib.sha256(data[:trailer_start]).hexdigest().encode("ascii"):
            return None
        header_end = data.index(b"\n")
        header = json.loads(data[:header_end].decode("utf-8"))
        if not (
            isinstance(header, dict)
            and header.get("format") == fmt
            and header.get("layout") == _LAYOUT
            and header.get("jieba") == jieba_version
            and header.get("dict_sha256") == digest
        ):
            return None
        entries, n_groups = header["entries"], header["groups"]
        lines = data[header_end + 1 : trailer_start].decode("utf-8").split("\n")
        end = len(lines) - 1  # the body ends with "\n", so the last item is ""
        if lines[end] != "":
            return None
        mapping: dict = {}
        i = 0
        for _ in range(n_groups):
            value_text, count_text = lines[i].split(" ")
            count = int(count_text)
            if count <= 0 or i + 1 + count > end:
                return None
            value = int(value_text) if int_values else value_text
            mapping.update(dict.fromkeys(lines[i + 1 : i + 1 + count], value))
            i += 1 + count
        if i != end or len(mapping) != entries:  # leftover lines, or a word listed twice
            return None
        # No "total == sum of FREQ" test: dict.txt lists a word twice, and jieba adds both to total.
        if int_values and type(header["total"]) is not int:
            return None
        return mapping, header
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, AttributeError):
        return None


def _read_cache(path: Path, fmt: str, jieba_version: str, digest: str, int_values: bool):
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _decode(data, fmt, jieba_version, digest, int_values)


def _write_cache(path: Path, content: bytes | None) -> None:
    """Best effort: a cache that cannot be written only means the next process parses dict.txt too."""
    if content is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, content)
    except OSError:
        pass


# -------------------------------------------------------------------------------- builders
def _build_freq(jieba, data: bytes) -> tuple[dict[str, int], int]:
    """jieba's own prefix-dictionary parse of dict.txt (what Tokenizer.initialize does without a cache)."""
    return jieba.Tokenizer.gen_pfdict(io.BytesIO(data))


def _build_pos(data: bytes) -> dict[str, str]:
    """jieba's own POS-table parse of dict.txt (what posseg.POSTokenizer.__init__ does)."""
    import jieba.posseg

    reader = jieba.posseg.POSTokenizer.__new__(jieba.posseg.POSTokenizer)  # skip __init__: it re-reads dict.txt
    reader.load_word_tag(io.BytesIO(data))
    return reader.word_tag_tab


# ------------------------------------------------------------------------------------- API
def load_default_dictionary(cache_dir: str | os.PathLike) -> tuple[dict[str, int], int]:
    """jieba's default prefix dictionary ``(FREQ, total)``, from the cache in ``cache_dir`` when it is
    valid and current, else parsed from dict.txt and cached. Returns new objects on every call."""
    jieba = _jieba()
    version = str(jieba.__version__)
    digest, data = _dict_digest(jieba)
    path = _cache_file(cache_dir, "freq", version, digest)
    cached = _read_cache(path, _FREQ_FORMAT, version, digest, int_values=True)
    if cached is not None:
        freq, header = cached
        return freq, header["total"]
    if data is None:
        data = _read_default_dict(jieba)
        digest = hashlib.sha256(data).hexdigest()  # the bytes actually parsed name the file written
        path = _cache_file(cache_dir, "freq", version, digest)
    freq, total = _build_freq(jieba, data)
    header = {"format": _FREQ_FORMAT, "jieba": version, "dict_sha256": digest, "total": total}
    _write_cache(path, _encode(header, freq))
    return freq, total


def load_pos_table(cache_dir: str | os.PathLike) -> dict[str, str]:
    """jieba's default POS table ``word_tag_tab`` (word -> tag), cached like the prefix dictionary."""
    jieba = _jieba()
    version = str(jieba.__version__)
    digest, data = _dict_digest(jieba)
    path = _cache_file(cache_dir, "pos", version, digest)
    cached = _read_cache(path, _POS_FORMAT, version, digest, int_values=False)
    if cached is not None:
        return cached[0]
    if data is None:
        data = _read_default_dict(jieba)
        digest = hashlib.sha256(data).hexdigest()
        path = _cache_file(cache_dir, "pos", version, digest)
    table = _build_pos(data)
    _write_cache(path, _encode({"format": _POS_FORMAT, "jieba": version, "dict_sha256": digest}, table))
    return table
