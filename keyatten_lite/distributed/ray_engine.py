"""``extract`` and ``idf fit`` over a corpus on Ray Data (``--engine ray``).

    from keyatten_lite.distributed.ray_engine import ray_extract, ray_idf_fit
    ray_extract(["corpus/"], "keywords/")            # local Ray on this machine
    ray_extract("s3-mounted/*.parquet", "out/", address="auto")   # an existing cluster
    ray_idf_fit(["corpus.jsonl"], "idf.tsv")

Inputs are JSONL or Parquet files, folders (searched recursively for ``*.jsonl`` and ``*.parquet``,
in sorted path order) or globs; one record per JSONL line or Parquet row, with a string ``text`` and
optional ``id`` and ``lang``. The records of all inputs, in order, are one corpus: a record without
an ``id`` gets its index in that corpus, as the one-process CLI gives it its index in its one file.

How a run gives exactly the one-process CLI's output
----------------------------------------------------
The CLI groups the records by language (``--lang``, else the record's ``lang``, else
``detect_language``) and runs each language's records, in corpus order, through the model in chunks
of ``4 * batch_size`` documents. The windows of a chunk are padded into shared batches, so a
document's scores depend (in the last float bits, enough to change a 6-decimal rounding) on which
documents share its chunk. This engine therefore runs the very same chunks:

1. plan: one Ray Data task per shard (a byte range of a JSONL file cut at line ends, or a Parquet
   row group) validates its records and counts them per language;
2. the driver turns the counts into the CLI's chunks (language L, ranks ``[c*step, (c+1)*step)``),
   each named ``L-c`` and described by the shard ranges that hold its records;
3. read tasks (``map_batches``) load one chunk per row; an actor pool (``map_batches`` with a callable
   class, ``concurrency=actors``, ``num_cpus=threads``, one extractor per language per actor, its
   onnxruntime ``intra_op_threads`` equal to its CPUs) extracts it;
4. the driver writes each chunk's lines, exactly the CLI's lines, to ``part-L-c.jsonl``
   atomically (temporary file + ``os.replace``). A chunk that arrives twice (a task retried after its
   actor died, which Ray Data does by itself: its actors restart, their tasks are retried) is written
   once; a final pass re-reads every part and checks that each record of the corpus is there exactly
   once, then writes ``_SUCCESS``.

IDF: each shard's document frequencies are counted by a task (``fit_idf`` of a fresh extractor) and
the states are merged with ``IdfState.merge``; the saved file is byte-identical to ``keyatten-lite
idf fit`` on the concatenated corpus (counts add, keys are sorted on save).

On a cluster, every node needs keyatten-lite, its bundles (``KEYATTEN_LITE_HOME``) and the input
paths; the output folder only needs to be writable by the driver.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError
from keyatten_lite.pipeline.inputs import CHUNK_BATCHES, file_run_chunks

_LANG_LETTER = {"zh": "z", "en": "e"}
_LETTER_LANG = {v: k for k, v in _LANG_LETTER.items()}

__all__ = ["RayNotInstalledError", "detect_language", "expand_inputs", "ray_extract", "ray_idf_fit"]

INSTALL_HINT = "pip install 'keyatten-lite[ray]'"
LANGUAGES = ("en", "zh")
SHARD_BYTES = 4 * 1024 * 1024
LOCAL_OBJECT_STORE = 256 * 1024 * 1024
PART_PATTERN = re.compile(r"^part-[a-z]+-\d{6,}\.jsonl$")
SUCCESS = "_SUCCESS"

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


class RayNotInstalledError(KeyAttenLiteError, ImportError):
    """``--engine ray`` without Ray Data installed."""


def detect_language(text: str) -> str:
    """The CLI's rule (keyatten_lite.cli.detect_language): 'zh' when CJK ideographs are not swamped
    by Latin words, else 'en'."""
    cjk = len(_CJK.findall(text))
    latin_words = len(_LATIN_WORD.findall(text))
    return "zh" if cjk > 0 and cjk >= latin_words else "en"


def _import_ray():
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError:
        raise RayNotInstalledError(f"the ray engine needs Ray Data and pyarrow: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------- inputs
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
            found = _folder_files(item)
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
                    found.extend(_folder_files(match))
                elif _kind(match, strict=True):
                    found.append(match)
            if not found:
                raise InvalidArgumentError(f"no .jsonl or .parquet files match {item!r}")
            files.extend(found)
        else:
            raise InvalidArgumentError(f"input not found: {item!r}")
    return files


def _folder_files(folder: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in names:
            if not name.startswith((".", "_")) and _kind(name, strict=True):
                found.append(os.path.join(root, name))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def _kind(path: str, strict: bool = False) -> str | None:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".jsonl") or not strict:
        return "jsonl"
    return None


def _make_shards(files: Sequence[str], shard_bytes: int) -> list[dict]:
    """Byte ranges of JSONL files cut after a line end, and Parquet row groups, in corpus order."""
    shards: list[dict] = []
    for index, path in enumerate(files):
        stat = os.stat(path)
        base = {"file": index, "path": os.path.abspath(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}
        if _kind(path) == "parquet":
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


class _RecordError(Exception):
    def __init__(self, where: int, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


_MARKER = "keyatten-lite-error "


class _WorkerError(Exception):
    """A KeyAttenLiteError raised in a Ray worker, carried to the driver in its message (Ray Data
    hands the driver only the text of a worker's exception)."""


def _for_driver(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyAttenLiteError as exc:
            payload = json.dumps({"type": type(exc).__name__, "message": str(exc)}, ensure_ascii=True)
            raise _WorkerError(_MARKER + payload) from None

    return wrapper


_SHARD_CACHE: OrderedDict[tuple, tuple[list[dict], list[str], int]] = OrderedDict()
_SHARD_CACHE_SIZE = 4


def _shard_records(shard: dict, forced_lang: str | None, *, cache: bool = True) -> tuple[list[dict], list[str], int]:
    """(records, language of each, number of lines) of a shard; raises _RecordError(where, message),
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
        records, wheres, n_lines = _parquet_records(shard)
    else:
        records, wheres, n_lines = _jsonl_records(shard)
    langs = []
    for rec, where in zip(records, wheres):
        lang = forced_lang or rec.get("lang") or detect_language(rec["text"])
        if lang not in LANGUAGES:
            raise _RecordError(where, f"language must be one of {LANGUAGES}, got {lang!r}")
        langs.append(lang)
    result = (records, langs, n_lines)
    if cache:
        _SHARD_CACHE[key] = result
        while len(_SHARD_CACHE) > _SHARD_CACHE_SIZE:
            _SHARD_CACHE.popitem(last=False)
    return result


def _jsonl_records(shard: dict) -> tuple[list[dict], list[int], int]:
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
                raise _RecordError(lineno, f"not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise _RecordError(lineno, "expected an object with a string 'text' field")
            kept = {"text": rec["text"]}
            if "id" in rec:
                kept["id"] = rec["id"]
            if rec.get("lang"):
                kept["lang"] = rec["lang"]
            records.append(kept)
            wheres.append(lineno)
    except UnicodeDecodeError:
        raise _RecordError(lineno + 1, "not valid UTF-8") from None
    return records, wheres, lineno


def _parquet_records(shard: dict) -> tuple[list[dict], list[int], int]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(shard["path"])
    names = set(pf.schema_arrow.names)
    if "text" not in names:
        raise _RecordError(shard["row0"] + 1, "expected a string 'text' column")
    columns = [c for c in ("text", "id", "lang") if c in names]
    table = pf.read_row_groups(list(range(shard["start"], shard["stop"])), columns=columns)
    data = {c: table.column(c).to_pylist() for c in columns}
    records, wheres = [], []
    for i, text in enumerate(data["text"]):
        row = shard["row0"] + i + 1
        if not isinstance(text, str):
            raise _RecordError(row, "expected a string 'text' field")
        rec: dict[str, Any] = {"text": text}
        if data.get("id") is not None and data["id"][i] is not None:  # a null id counts as missing
            rec["id"] = data["id"][i]
        if data.get("lang") is not None and data["lang"][i]:
            rec["lang"] = data["lang"][i]
        records.append(rec)
        wheres.append(row)
    return records, wheres, 0


def _error_text(shard: dict, where: int, message: str, lines_before: int) -> str:
    if shard["kind"] == "parquet":
        return f"{shard['path']}: row {where}: {message}"
    return f"{shard['path']}: line {lines_before + where}: {message}"


def _raise_first_error(shards: Sequence[dict], infos: Sequence[dict]) -> None:
    lines_before: dict[int, int] = {}
    for shard, info in zip(shards, infos):
        before = lines_before.get(shard["file"], 0)
        if info.get("error"):
            where, message = info["error"]
            raise InvalidArgumentError(_error_text(shard, where, message, before))
        lines_before[shard["file"]] = before + info.get("lines", 0)


# ---------------------------------------------------------------------- Ray Data stages (run in workers)
@_for_driver
def _plan_batch(batch, lang: str | None):
    """Ray Data task: validate each shard and count its records per language."""
    import pyarrow as pa

    infos = []
    for spec in batch.column("spec").to_pylist():
        shard = json.loads(spec)
        info: dict[str, Any] = {"shard": shard["id"], "records": 0, "lines": 0, "langs": {}, "error": None}
        try:
            records, langs, n_lines = _shard_records(shard, lang)
            # The language sequence (one letter a record): the driver needs it to cut the CLI's blocks.
            info.update(records=len(records), lines=n_lines, langs=dict(Counter(langs)),
                        seq="".join(_LANG_LETTER[x] for x in langs))
        except _RecordError as exc:
            info["error"] = [exc.where, exc.message]
        infos.append(json.dumps(info))
    return pa.table({"info": pa.array(infos, pa.string())})


def _payload(rec: dict, gidx: int) -> str:
    # [text, id]: the id as the CLI would write it (rec.get("id", i)). JSON keeps its type through
    # Arrow; lone surrogates (which UTF-8 cannot hold) fall back to ASCII escapes.
    value = [rec["text"], rec.get("id", gidx)]
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True)
    return text


@_for_driver
def _read_chunks(batch, lang: str | None):
    """Ray Data task: the records of each chunk, in corpus order, as one row per chunk."""
    import pyarrow as pa

    keys, langs, ns, gidx_lists, rec_lists = [], [], [], [], []
    for spec in batch.column("spec").to_pylist():
        chunk = json.loads(spec)
        want = chunk["lang"]
        gidxs: list[int] = []
        recs: list[str] = []
        for part in chunk["parts"]:
            try:
                records, rec_langs, _ = _shard_records(part["shard"], lang)
            except _RecordError as exc:
                raise InvalidArgumentError(f"{part['shard']['path']} changed while it was being read ({exc.message})") from None
            rank = 0
            for j, (rec, rec_lang) in enumerate(zip(records, rec_langs)):
                if rec_lang != want:
                    continue
                if rank >= part["lo"]:
                    g = part["gstart"] + j
                    gidxs.append(g)
                    recs.append(_payload(rec, g))
                rank += 1
                if rank >= part["hi"]:
                    break
        if len(recs) != chunk["n"]:
            raise InvalidArgumentError(f"chunk {chunk['key']}: expected {chunk['n']} records, read {len(recs)} (inputs changed?)")
        keys.append(chunk["key"])
        langs.append(want)
        ns.append(chunk["n"])
        gidx_lists.append(gidxs)
        rec_lists.append(recs)
    return pa.table({
        "key": pa.array(keys, pa.string()),
        "lang": pa.array(langs, pa.string()),
        "n": pa.array(ns, pa.int64()),
        "gidx": pa.array(gidx_lists, pa.list_(pa.int64())),
        "recs": pa.array(rec_lists, pa.list_(pa.string())),
    })


class _ExtractActor:
    """Ray Data actor: one KeyAttenExtractor per language, built as the CLI builds it."""

    def __init__(self, options: dict, pid_dir: str | None = None) -> None:
        self.options = options
        self.extractors: dict[str, Any] = {}
        if pid_dir:
            # For tests and the scale script: who the actors are (a restarted actor writes anew).
            Path(pid_dir).mkdir(parents=True, exist_ok=True)
            (Path(pid_dir) / f"actor-{os.getpid()}.pid").write_text(f"{os.getpid()}\n")

    def _extractor(self, lang: str):
        if lang not in self.extractors:
            from keyatten_lite import KeyAttenExtractor

            o = self.options
            ex = KeyAttenExtractor(
                model=o["model"],
                language=lang,
                variant="int8" if o["int8"] else "fp32",
                intra_op_threads=o["threads"],
            )
            if o["idf_path"]:
                ex.load_idf(o["idf_path"])
            self.extractors[lang] = ex
        return self.extractors[lang]

    @_for_driver
    def __call__(self, batch):
        import pyarrow as pa

        o = self.options
        keys, ns, gidx_out, texts_out = [], [], [], []
        columns = batch.to_pydict()
        for key, lang, n, gidxs, recs in zip(columns["key"], columns["lang"], columns["n"], columns["gidx"], columns["recs"]):
            decoded = [json.loads(r) for r in recs]
            keywords = self._extractor(lang).extract_keywords_batch(
                [d[0] for d in decoded],
                method=o["method"],
                top_k=o["top_k"],
                batch_size=o["batch_size"],
                with_scores=True,
            )
            lines = [
                json.dumps({"id": d[1], "keywords": [[p, round(s, 6)] for p, s in kws]}, ensure_ascii=False)
                for d, kws in zip(decoded, keywords)
            ]
            keys.append(key)
            ns.append(n)
            gidx_out.append(gidxs)
            texts_out.append("".join(line + "\n" for line in lines))
        return pa.table({
            "key": pa.array(keys, pa.string()),
            "n": pa.array(ns, pa.int64()),
            "gidx": pa.array(gidx_out, pa.list_(pa.int64())),
            "text": pa.array(texts_out, pa.string()),
        })


_IDF_EXTRACTORS: dict[str, Any] = {}


@_for_driver
def _count_idf(batch, lang: str):
    """Ray Data task: document frequencies of each shard (fit_idf of the CLI's extractor)."""
    import pyarrow as pa

    from keyatten_lite import KeyAttenExtractor

    out = []
    for spec in batch.column("spec").to_pylist():
        shard = json.loads(spec)
        info: dict[str, Any] = {"shard": shard["id"], "docs": 0, "lines": 0, "df": {}, "error": None}
        try:
            records, _, n_lines = _shard_records(shard, lang, cache=False)
        except _RecordError as exc:
            info["error"] = [exc.where, exc.message]
            out.append(json.dumps(info))
            continue
        info["lines"] = n_lines
        if records:
            ex = _IDF_EXTRACTORS.get(lang)
            if ex is None:
                ex = _IDF_EXTRACTORS[lang] = KeyAttenExtractor(language=lang)
            ex.fit_idf([r["text"] for r in records])
            info["docs"] = ex.idf.doc_count
            info["df"] = ex.idf.document_frequency
        out.append(json.dumps(info, ensure_ascii=True))  # ASCII: keys may hold lone surrogates
    return pa.table({"info": pa.array(out, pa.string())})


# ---------------------------------------------------------------------- driver helpers
class _Session:
    """Connects to Ray (or starts a local one) and shuts it down only if it started it."""

    def __init__(self, address: str | None, num_cpus: int | None, object_store_memory: int | None, progress: bool):
        self.ray = _import_ray()
        self.started = False
        self.address = address
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.progress = progress

    def __enter__(self):
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                self._connect()
            else:
                ray.init(
                    address="local",  # a new local instance, never a cluster found on this machine
                    num_cpus=self.num_cpus or os.cpu_count() or 1,
                    object_store_memory=self.object_store_memory or LOCAL_OBJECT_STORE,
                    include_dashboard=False,
                    log_to_driver=False,
                )
            self.started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.progress
        for name, value in (("print_on_execution_start", self.progress), ("enable_operator_progress_bars", self.progress)):
            if hasattr(ctx, name):
                setattr(ctx, name, value)
        return self

    def _connect(self) -> None:
        try:
            self.ray.init(address=self.address, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
            text = _chain_text(exc)
            hint = ""
            if "InvalidAuthToken" in text or "AuthenticationError" in text:
                # `ray start` (Ray >= 2.5x) turns on token authentication; a driver needs the token
                # and the mode (docs/scale.md).
                hint = (
                    "; the cluster uses token authentication: export RAY_AUTH_MODE=token and copy the head's "
                    "~/.ray/auth_token to this machine (or set RAY_AUTH_TOKEN)"
                )
            raise KeyAttenLiteError(f"cannot connect to the Ray cluster at {self.address!r}: {_first_line(exc)}{hint}") from None

    def __exit__(self, *exc) -> None:
        if self.started:
            self.ray.shutdown()

    def cpus(self) -> tuple[int, int]:
        """(CPUs of the cluster, CPUs of its largest node)."""
        total = int(self.ray.cluster_resources().get("CPU", 0))
        per_node = [int(n.get("Resources", {}).get("CPU", 0)) for n in self.ray.nodes() if n.get("Alive")]
        return total, max(per_node or [total])


def _chain_text(exc: BaseException) -> str:
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _unwrap(exc: BaseException) -> KeyAttenLiteError | None:
    """The KeyAttenLiteError a worker raised (see _WorkerError), to print one line as the CLI does."""
    from keyatten_lite import errors

    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        for line in str(e).splitlines():
            at = line.find(_MARKER)
            if at < 0:
                continue
            try:
                info = json.loads(line[at + len(_MARKER):].strip())
            except ValueError:
                continue
            cls = getattr(errors, str(info.get("type")), None)
            if not (isinstance(cls, type) and issubclass(cls, KeyAttenLiteError)):
                cls = KeyAttenLiteError
            return cls(info.get("message", ""))
        cause = getattr(e, "cause", None)
        stack.extend([cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__])
    return None


def _run(fn):
    try:
        return fn()
    except KeyAttenLiteError:
        raise
    except Exception as exc:
        found = _unwrap(exc)
        if found is not None:
            raise found from None
        raise


def _from_specs(ray, specs: Sequence[dict]):
    import pyarrow as pa

    # One block per spec (up to 20,000 blocks), so that every shard or chunk is its own task.
    blocks = max(1, min(len(specs), 20000))
    per_block = math.ceil(len(specs) / blocks)
    tables = [
        pa.table({"spec": pa.array([json.dumps(s) for s in specs[i : i + per_block]], pa.string())})
        for i in range(0, len(specs), per_block)
    ]
    return ray.data.from_arrow(tables)


def _pool(ray, kind: str, size: int) -> dict:
    """``compute=`` for a pool of ``size`` tasks or actors (``concurrency=`` before Ray 2.51)."""
    strategy = getattr(ray.data, "ActorPoolStrategy" if kind == "actors" else "TaskPoolStrategy", None)
    if strategy is None:
        return {"concurrency": size}
    return {"compute": strategy(size=size)}


def _plan_chunks(shards: Sequence[dict], infos: Sequence[dict], step: int) -> tuple[int, list[dict]]:
    """The CLI's chunks (``keyatten_lite.pipeline.inputs.file_run_chunks``): blocks of BLOCK_RECORDS
    records in corpus order, and within a block each language's records ``step`` at a time."""
    gstart = 0
    per_lang: dict[str, list[tuple[dict, int, int, int]]] = {}  # lang -> [(shard, gstart, lang offset, count)]
    totals: dict[str, int] = {}
    sequence = []
    for shard, info in zip(shards, infos):
        for lang, count in info["langs"].items():
            per_lang.setdefault(lang, []).append((shard, gstart, totals.get(lang, 0), count))
            totals[lang] = totals.get(lang, 0) + count
        gstart += info["records"]
        sequence.append(info.get("seq", ""))
    languages = [_LETTER_LANG[c] for c in "".join(sequence)]
    chunks = []
    counters: dict[str, int] = {}
    for lang, start, end in file_run_chunks(languages, step):
        entries = per_lang[lang]
        p = 0
        while entries[p][2] + entries[p][3] <= start:
            p += 1
        parts = []
        q = p
        while q < len(entries) and entries[q][2] < end:
            shard, g, off, count = entries[q]
            parts.append({"shard": shard, "gstart": g, "lo": max(start - off, 0), "hi": min(end - off, count)})
            q += 1
        c = counters.get(lang, 0)
        counters[lang] = c + 1
        chunks.append({"key": f"{lang}-{c:06d}", "lang": lang, "n": end - start, "parts": parts})
    chunks.sort(key=lambda ch: (ch["parts"][0]["shard"]["id"], ch["key"]))
    return gstart, chunks


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _plan(session: _Session, files: Sequence[str], lang: str | None, shard_bytes: int):
    shards = _make_shards(files, shard_bytes)
    if not shards:
        return shards, []
    ds = _from_specs(session.ray, shards).map_batches(
        _plan_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"lang": lang}, num_cpus=1
    )
    rows = _run(ds.take_all)
    infos = sorted((json.loads(r["info"]) for r in rows), key=lambda i: i["shard"])
    if [i["shard"] for i in infos] != [s["id"] for s in shards]:
        raise KeyAttenLiteError("the plan pass lost shards (Ray Data returned an incomplete result)")
    _raise_first_error(shards, infos)
    return shards, infos


# ---------------------------------------------------------------------- extract
def ray_extract(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    address: str | None = None,
    method: str = "received_attn",
    top_k: int = 10,
    model: str | None = None,
    lang: str | None = None,
    idf_path: str | None = None,
    int8: bool = False,
    threads: int | None = None,
    batch_size: int = 16,
    actors: int | None = None,
    shard_bytes: int = SHARD_BYTES,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    progress: bool = False,
    _actor_pid_dir: str | None = None,
) -> dict:
    """Extract keywords from every record of ``inputs`` into ``output_dir/part-*.jsonl``.

    The lines are exactly those of ``keyatten-lite extract -i <inputs concatenated> -o out.jsonl``
    with the same options (grouped in part files by language and chunk instead of in input order).
    ``threads`` is each actor's CPUs and onnxruntime intra-op threads (default 1); ``actors`` defaults
    to the cluster's CPUs, less one left for the read tasks, over ``threads``. Without ``address`` a
    local Ray is started (``num_cpus``, ``object_store_memory``) and stopped at the end; an already
    initialised Ray is used as it is. Returns a summary (records, parts, actors, threads, seconds).
    """
    t0 = time.perf_counter()
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError("--top-k must be >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError("--batch-size must be >= 1")
    if lang is not None and lang not in LANGUAGES:
        raise InvalidArgumentError(f"--lang must be one of {LANGUAGES}, got {lang!r}")
    for name, value in (("--threads", threads), ("--actors", actors)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    files = expand_inputs(inputs)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"output must be a folder: {str(out)!r} is a file")
    options = {"method": method, "top_k": top_k, "model": model, "idf_path": None, "int8": bool(int8),
               "threads": None, "batch_size": batch_size}
    if idf_path:
        from keyatten_lite import IdfState

        IdfState.load(idf_path)  # fail here, with the CLI's message, not in every actor
        options["idf_path"] = os.path.abspath(idf_path)

    with _Session(address, num_cpus, object_store_memory, progress) as session:
        total_cpus, node_cpus = session.cpus()
        threads = threads or 1
        if threads > node_cpus:
            raise InvalidArgumentError(f"--threads {threads} is more than the {node_cpus} CPUs of the largest Ray node")
        if actors is None:
            actors = max(1, (total_cpus - 1) // threads)
        if actors * threads > total_cpus:
            raise InvalidArgumentError(
                f"{actors} actors x {threads} CPUs need {actors * threads} CPUs; the Ray cluster has {total_cpus}"
            )
        options["threads"] = threads
        free = total_cpus - actors * threads
        # Read tasks get a CPU of their own when one is left, else none (they are light), so that
        # actors holding every CPU can never starve them.
        read_args = {"num_cpus": 1 if free >= 1 else 0, **_pool(session.ray, "tasks", max(1, min(free, 2)))}

        shards, infos = _plan(session, files, lang, shard_bytes)
        n_records, chunks = _plan_chunks(shards, infos, max(batch_size * CHUNK_BATCHES, 1))
        _check_options(options, sorted({c["lang"] for c in chunks}))

        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            if PART_PATTERN.match(old.name) or old.name == SUCCESS or old.name.startswith(".tmp-"):
                old.unlink()
        expected = {c["key"]: c["n"] for c in chunks}
        written: dict[str, tuple[int, str]] = {}
        seen = bytearray(n_records)
        duplicates = 0
        if chunks:
            ds = (
                _from_specs(session.ray, chunks)
                .map_batches(_read_chunks, batch_size=1, batch_format="pyarrow", fn_kwargs={"lang": lang}, **read_args)
                .map_batches(
                    _ExtractActor,
                    fn_constructor_kwargs={"options": options, "pid_dir": _actor_pid_dir},
                    batch_size=1,
                    batch_format="pyarrow",
                    num_cpus=threads,
                    **_pool(session.ray, "actors", actors),
                )
            )

            def consume() -> None:
                nonlocal duplicates
                for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    cols = batch.to_pydict()
                    for key, n, gidxs, text in zip(cols["key"], cols["n"], cols["gidx"], cols["text"]):
                        data = text.encode("utf-8")
                        digest = hashlib.sha256(data).hexdigest()
                        if key in written:  # a retried chunk: already written, must be the same
                            duplicates += 1
                            if written[key][1] != digest:
                                raise KeyAttenLiteError(f"chunk {key} came back twice with different results")
                            continue
                        if key not in expected or n != expected[key] or len(gidxs) != n or text.count("\n") != n:
                            raise KeyAttenLiteError(f"chunk {key}: malformed result ({len(gidxs)} records)")
                        for g in gidxs:
                            if seen[g]:
                                raise KeyAttenLiteError(f"record {g} is in two chunks")
                            seen[g] = 1
                        _atomic_write(out / f"part-{key}.jsonl", data)
                        written[key] = (n, digest)

            _run(consume)
        _verify(out, expected, written, seen, n_records)
        summary = {
            "records": n_records,
            "parts": len(written),
            "files": len(files),
            "shards": len(shards),
            "actors": actors,
            "threads": threads,
            "cluster_cpus": total_cpus,
            "retried_chunks": duplicates,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        _atomic_write(out / SUCCESS, (json.dumps(summary, indent=1) + "\n").encode())
        return summary


def _check_options(options: dict, langs: Sequence[str]) -> None:
    """Build each needed extractor once on the driver (no bundle is opened) so that a bad method or a
    missing IDF fails with the CLI's message before any actor starts."""
    from keyatten_lite import KeyAttenExtractor

    for lang in langs:
        ex = KeyAttenExtractor(
            model=options["model"], language=lang, variant="int8" if options["int8"] else "fp32",
            intra_op_threads=options["threads"],
        )
        if options["idf_path"]:
            ex.load_idf(options["idf_path"])
        ex.extract_keywords_batch([], method=options["method"], top_k=options["top_k"],
                                  batch_size=options["batch_size"], with_scores=True)


def _verify(out: Path, expected: dict, written: dict, seen: bytearray, n_records: int) -> None:
    """Final pass: every chunk written once, every record of the corpus in exactly one line."""
    missing = sorted(set(expected) - set(written))
    if missing:
        raise KeyAttenLiteError(f"{len(missing)} chunks never came back (first: {missing[0]})")
    if seen.count(1) != n_records:
        raise KeyAttenLiteError(f"{n_records - seen.count(1)} records missing from the output")
    on_disk = {p.name for p in out.iterdir() if PART_PATTERN.match(p.name)}
    if on_disk != {f"part-{k}.jsonl" for k in written}:
        raise KeyAttenLiteError(f"unexpected part files in {out}")
    total = 0
    for key, (n, digest) in written.items():
        data = (out / f"part-{key}.jsonl").read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise KeyAttenLiteError(f"part-{key}.jsonl does not hold what was written")
        lines = data.decode("utf-8").splitlines()
        if len(lines) != n or not all("id" in json.loads(line) for line in lines):
            raise KeyAttenLiteError(f"part-{key}.jsonl: expected {n} records with an id")
        total += n
    if total != n_records:
        raise KeyAttenLiteError(f"the parts hold {total} records, the corpus {n_records}")


# ---------------------------------------------------------------------- idf fit
def ray_idf_fit(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output: str | os.PathLike | None,
    *,
    address: str | None = None,
    lang: str | None = None,
    merge: Sequence[str | os.PathLike] = (),
    shard_bytes: int = SHARD_BYTES,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    progress: bool = False,
):
    """Document frequencies of ``inputs`` counted per shard on Ray and merged with ``IdfState.merge``;
    saved to ``output`` (unless None) byte-identical to ``keyatten-lite idf fit``. Language: ``lang``,
    else detected from the corpus's first text (as the CLI). Returns the ``IdfState``."""
    from keyatten_lite import IdfState

    if lang is not None and lang not in LANGUAGES:
        raise InvalidArgumentError(f"--lang must be one of {LANGUAGES}, got {lang!r}")
    files = expand_inputs(inputs)
    others = [IdfState.load(path) for path in merge]  # fail before any work
    with _Session(address, num_cpus, object_store_memory, progress) as session:
        shards = _make_shards(files, shard_bytes)
        if lang is None:
            lang = "en"
            lines_before: dict[int, int] = {}
            for shard in shards:  # the first text of the corpus, read here
                try:
                    records, _, n_lines = _shard_records(shard, "en", cache=False)
                except _RecordError as exc:
                    before = lines_before.get(shard["file"], 0)
                    raise InvalidArgumentError(_error_text(shard, exc.where, exc.message, before)) from None
                if records:
                    lang = detect_language(records[0]["text"])
                    break
                lines_before[shard["file"]] = lines_before.get(shard["file"], 0) + n_lines
        states = []
        if shards:
            ds = _from_specs(session.ray, shards).map_batches(
                _count_idf, batch_size=1, batch_format="pyarrow", fn_kwargs={"lang": lang}, num_cpus=1
            )
            infos = sorted((json.loads(r["info"]) for r in _run(ds.take_all)), key=lambda i: i["shard"])
            if [i["shard"] for i in infos] != [s["id"] for s in shards]:
                raise KeyAttenLiteError("the IDF pass lost shards (Ray Data returned an incomplete result)")
            _raise_first_error(shards, infos)
            states = [IdfState(i["docs"], i["df"]) for i in infos]
    state = _tree_merge(states) if states else IdfState()
    for other in others:
        state = state.merge(other)
    if output is not None:
        state.save(output)
    return state


def _tree_merge(states: list):
    while len(states) > 1:
        states = [states[i].merge(states[i + 1]) if i + 1 < len(states) else states[i] for i in range(0, len(states), 2)]
    return states[0]


if __name__ == "__main__":  # pragma: no cover - a quick manual entry point
    print(json.dumps(ray_extract(sys.argv[1:-1], sys.argv[-1]), indent=1))
