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
The CLI cuts a file into blocks of 1,024 records and runs, within a block, each language's records
(``--lang``, else the record's ``lang``, else ``detect_language``) through the model in chunks of
``4 * batch_size`` documents (``keyatten_lite.pipeline.inputs.file_run_chunks``). The windows of a
chunk are padded into shared batches, so a document's scores depend (in the last float bits, enough to
change a 6-decimal rounding) on which documents share its chunk. This engine therefore runs the very
same chunks:

1. plan: one Ray Data task per shard (a byte range of a JSONL file cut at line ends, or a Parquet
   row group) validates its records and counts them per language;
2. the driver turns the counts into the CLI's chunks (``file_run_chunks``: language L, ranks ``[a, b)``),
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

import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from keyatten_lite.distributed.shards import (
    LETTER_LANG,
    MARKER,
    RecordError,
    error_text,
    expand_inputs,
    make_shards,
    raise_first_error,
    shard_records,
    LANGUAGES,
    SHARD_BYTES,
)
from keyatten_lite.distributed.stages import ExtractActor, count_idf, plan_batch, read_chunks
from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError
from keyatten_lite.state.atomic import atomic_write_bytes
from keyatten_lite.pipeline.inputs import CHUNK_BATCHES, file_run_chunks
from keyatten_lite.text.language import detect_language


__all__ = ["RayNotInstalledError", "detect_language", "expand_inputs", "ray_extract", "ray_idf_fit"]

INSTALL_HINT = "pip install 'keyatten-lite[ray]'"
LOCAL_OBJECT_STORE = 256 * 1024 * 1024
PART_PATTERN = re.compile(r"^part-[a-z]+-\d{6,}\.jsonl$")
SUCCESS = "_SUCCESS"



class RayNotInstalledError(KeyAttenLiteError, ImportError):
    """``--engine ray`` without Ray Data installed."""




def _import_ray():
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError:
        raise RayNotInstalledError(f"the ray engine needs Ray Data and pyarrow: {INSTALL_HINT}") from None
    return ray


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
    """The KeyAttenLiteError a worker raised (see WorkerError), to print one line as the CLI does."""
    from keyatten_lite import errors

    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        for line in str(e).splitlines():
            at = line.find(MARKER)
            if at < 0:
                continue
            try:
                info = json.loads(line[at + len(MARKER):].strip())
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
    languages = [LETTER_LANG[c] for c in "".join(sequence)]
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


def _plan(session: _Session, files: Sequence[str], lang: str | None, shard_bytes: int):
    shards = make_shards(files, shard_bytes)
    if not shards:
        return shards, []
    ds = _from_specs(session.ray, shards).map_batches(
        plan_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"lang": lang}, num_cpus=1
    )
    rows = _run(ds.take_all)
    infos = sorted((json.loads(r["info"]) for r in rows), key=lambda i: i["shard"])
    if [i["shard"] for i in infos] != [s["id"] for s in shards]:
        raise KeyAttenLiteError("the plan pass lost shards (Ray Data returned an incomplete result)")
    raise_first_error(shards, infos)
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
    variant: str | None = None,
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
    options = {"method": method, "top_k": top_k, "model": model, "idf_path": None,
               "variant": "int8" if int8 else variant,
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
                .map_batches(read_chunks, batch_size=1, batch_format="pyarrow", fn_kwargs={"lang": lang}, **read_args)
                .map_batches(
                    ExtractActor,
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
                        atomic_write_bytes(out / f"part-{key}.jsonl", data, prefix=".tmp-", suffix=".part")
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
        atomic_write_bytes(out / SUCCESS, (json.dumps(summary, indent=1) + "\n").encode(), prefix=".tmp-", suffix=".part")
        return summary


def _check_options(options: dict, langs: Sequence[str]) -> None:
    """Build each needed extractor once on the driver (no bundle is opened) so that a bad method or a
    missing IDF fails with the CLI's message before any actor starts."""
    from keyatten_lite import KeyAttenExtractor

    for lang in langs:
        ex = KeyAttenExtractor(
            model=options["model"], language=lang, variant=options["variant"],
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
        shards = make_shards(files, shard_bytes)
        if lang is None:
            lang = "en"
            lines_before: dict[int, int] = {}
            for shard in shards:  # the first text of the corpus, read here
                try:
                    records, _, n_lines = shard_records(shard, "en", cache=False)
                except RecordError as exc:
                    before = lines_before.get(shard["file"], 0)
                    raise InvalidArgumentError(error_text(shard, exc.where, exc.message, before)) from None
                if records:
                    lang = detect_language(records[0]["text"])
                    break
                lines_before[shard["file"]] = lines_before.get(shard["file"], 0) + n_lines
        states = []
        if shards:
            ds = _from_specs(session.ray, shards).map_batches(
                count_idf, batch_size=1, batch_format="pyarrow", fn_kwargs={"lang": lang}, num_cpus=1
            )
            infos = sorted((json.loads(r["info"]) for r in _run(ds.take_all)), key=lambda i: i["shard"])
            if [i["shard"] for i in infos] != [s["id"] for s in shards]:
                raise KeyAttenLiteError("the IDF pass lost shards (Ray Data returned an incomplete result)")
            raise_first_error(shards, infos)
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
