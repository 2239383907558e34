"""Inputs of the Ray engine: files, folders and globs of JSONL or Parquet expanded into shards (a
byte range of a JSONL file cut at line ends, or a Parquet row group), and the records of a shard read
exactly as the one-process command line reads them (``cli/records.py``)."""

from __future__ import annotations

import glob as _glob
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError
from keyatten_lite.text.language import detect_language

LANGUAGES = ("en", "zh")
# One letter a record in the plan (the driver cuts the CLI's blocks from the sequence).
LANG_LETTER = {"zh": "z", "en": "e"}
LETTER_LANG = {v: k for k, v in LANG_LETTER.items()}
SHARD_BYTES = 4 * 1024 * 1024

def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Files named by ``inputs``, in order: a file as given (``.parquet`` is Parquet, anything else
    JSONL), a folder as its ``*.jsonl``/``*.parquet`` files (recursively, sorted, hidden and ``_``
    names skipped), a glob as its sorted matches."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = folder_files(item)
            if not found:
                raise InvalidArgumentError(f"no .jsonl or .parquet files in folder {item!r}")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        elif _glob.has_magic(item):
            matches = sorted(_glob.glob(item, recursive=True))
            found = []
            for match in matches:
                if os.path.isdir(match):
                    found.extend(folder_files(match))
                elif kind(match, strict=True):
                    found.append(match)
            if not found:
                raise InvalidArgumentError(f"no .jsonl or .parquet files match {item!r}")
            files.extend(found)
        else:
            raise InvalidArgumentError(f"input not found: {item!r}")
    return files


def folder_files(folder: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in names:
            if not name.startswith((".", "_")) and kind(name, strict=True):
                found.append(os.path.join(root, name))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def kind(path: str, strict: bool = False) -> str | None:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".jsonl") or not strict:
        return "jsonl"
    return None


def make_shards(files: Sequence[str], shard_bytes: int) -> list[dict]:
    """Byte ranges of JSONL files cut after a line end, and Parquet row groups, in corpus order."""
    shards: list[dict] = []
    for index, path in enumerate(files):
        stat = os.stat(path)
        base = {"file": index, "path": os.path.abspath(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}
        if kind(path) == "parquet":
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(path).metadata
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
                raise InvalidArgumentError(f"{path}: not a readable Parquet file ({exc})") from None
            row0 = 0
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                if rows:
                    shards.append({**base, "kind": "parquet", "start": group, "stop": group + 1, "row0": row0})
                row0 += rows
            continue
        cuts = [0]
        with open(path, "rb") as handle:
            target = shard_bytes
            while target < stat.st_size:
                handle.seek(max(target, cuts[-1]) - 1)
                handle.readline()  # to just after the next b"\n" (or the end)
                cut = handle.tell()
                if cut >= stat.st_size:
                    break
                if cut > cuts[-1]:
                    cuts.append(cut)
                target = cut + shard_bytes
        cuts.append(stat.st_size)
        for start, stop in zip(cuts, cuts[1:]):
            if stop > start:
                shards.append({**base, "kind": "jsonl", "start": start, "stop": stop, "row0": 0})
    for i, shard in enumerate(shards):
        shard["id"] = i
    return shards


class RecordError(Exception):
    def __init__(self, where: int, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


MARKER = "keyatten-lite-error "


class WorkerError(Exception):
    """A KeyAttenLiteError raised in a Ray worker, carried to the driver in its message (Ray Data
    hands the driver only the text of a worker's exception)."""


def for_driver(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyAttenLiteError as exc:
            payload = json.dumps({"type": type(exc).__name__, "message": str(exc)}, ensure_ascii=True)
            raise WorkerError(MARKER + payload) from None

    return wrapper


_SHARD_CACHE: OrderedDict[tuple, tuple[list[dict], list[str], int]] = OrderedDict()
SHARD_CACHE_SIZE = 4


def shard_records(shard: dict, forced_lang: str | None, *, cache: bool = True) -> tuple[list[dict], list[str], int]:
    """(records, language of each, number of lines) of a shard; raises RecordError(where, message),
    ``where`` being the line within the shard (JSONL, 1-based) or the row within the file (Parquet)."""
    key = (shard["path"], shard["kind"], shard["start"], shard["stop"], shard["size"], shard["mtime"], forced_lang)
    hit = _SHARD_CACHE.get(key) if cache else None
    if hit is not None:
        _SHARD_CACHE.move_to_end(key)
        return hit
    stat = os.stat(shard["path"])
    if stat.st_size != shard["size"] or stat.st_mtime_ns != shard["mtime"]:
        raise InvalidArgumentError(f"{shard['path']} changed while it was being read")
    if shard["kind"] == "parquet":
        records, wheres, n_lines = parquet_records(shard)
    else:
        records, wheres, n_lines = jsonl_records(shard)
    langs = []
    for rec, where in zip(records, wheres):
        lang = forced_lang or rec.get("lang") or detect_language(rec["text"])
        if lang not in LANGUAGES:
            raise RecordError(where, f"language must be one of {LANGUAGES}, got {lang!r}")
        langs.append(lang)
    result = (records, langs, n_lines)
    if cache:
        _SHARD_CACHE[key] = result
        while len(_SHARD_CACHE) > SHARD_CACHE_SIZE:
            _SHARD_CACHE.popitem(last=False)
    return result


def jsonl_records(shard: dict) -> tuple[list[dict], list[int], int]:
    import io

    with open(shard["path"], "rb") as handle:
        handle.seek(shard["start"])
        data = handle.read(shard["stop"] - shard["start"])
    # As the CLI reads (cli/records.py): lines end at b"\n", each decoded as strict UTF-8.
    records, wheres = [], []
    lineno = 0
    try:
        for lineno, raw in enumerate(io.BytesIO(data), 1):
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(lineno, f"not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise RecordError(lineno, "expected an object with a string 'text' field")
            kept = {"text": rec["text"]}
            if "id" in rec:
                kept["id"] = rec["id"]
            if rec.get("lang"):
                kept["lang"] = rec["lang"]
            records.append(kept)
            wheres.append(lineno)
    except UnicodeDecodeError:
        raise RecordError(lineno + 1, "not valid UTF-8") from None
    return records, wheres, lineno


def parquet_records(shard: dict) -> tuple[list[dict], list[int], int]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(shard["path"])
    names = set(pf.schema_arrow.names)
    if "text" not in names:
        raise RecordError(shard["row0"] + 1, "expected a string 'text' column")
    columns = [c for c in ("text", "id", "lang") if c in names]
    table = pf.read_row_groups(list(range(shard["start"], shard["stop"])), columns=columns)
    data = {c: table.column(c).to_pylist() for c in columns}
    records, wheres = [], []
    for i, text in enumerate(data["text"]):
        row = shard["row0"] + i + 1
        if not isinstance(text, str):
            raise RecordError(row, "expected a string 'text' field")
        rec: dict[str, Any] = {"text": text}
        if data.get("id") is not None and data["id"][i] is not None:  # a null id counts as missing
            rec["id"] = data["id"][i]
        if data.get("lang") is not None and data["lang"][i]:
            rec["lang"] = data["lang"][i]
        records.append(rec)
        wheres.append(row)
    return records, wheres, 0


def error_text(shard: dict, where: int, message: str, lines_before: int) -> str:
    if shard["kind"] == "parquet":
        return f"{shard['path']}: row {where}: {message}"
    return f"{shard['path']}: line {lines_before + where}: {message}"


def raise_first_error(shards: Sequence[dict], infos: Sequence[dict]) -> None:
    lines_before: dict[int, int] = {}
    for shard, info in zip(shards, infos):
        before = lines_before.get(shard["file"], 0)
        if info.get("error"):
            where, message = info["error"]
            raise InvalidArgumentError(error_text(shard, where, message, before))
        lines_before[shard["file"]] = before + info.get("lines", 0)
