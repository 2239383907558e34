"""The micro-batcher: concurrent requests' documents share ``extract_keywords_batch`` calls.

Documents wait in one bounded queue (``max_queue`` documents). A collector task on the event loop
feeds a single worker thread, one ``extractor.extract_keywords_batch(texts, method=..., top_k=...,
with_scores=True)`` call at a time, so the event loop never blocks on the model (onnxruntime
parallelises each call with its own intra-op threads).

Natural batching: when the worker is free it plans the next model call over everything queued. A
lone request on an idle server is run without waiting (``max_wait_ms`` > 0 lets the first document
after an idle spell wait for company, the behaviour before). While a call runs new documents queue
up, so under load the calls grow by themselves.

Length buckets: the extractor pads every forward pass to its longest window, so one call of
mixed-length documents pays for padding (docs/serve.md, scripts/serve_batch_profile.py: 16
mixed abstracts in one call cost 1.1-1.6x as much per document as 16 single calls, while batches
of one length cost 0.5-0.85x). A micro-batch is therefore split by key (language, profile, method, top_k) and then,
sorted by a token estimate from cheap counts of words, digits, punctuation and ideographs
(:func:`estimate_tokens`), into the runs that minimise a measured cost model (:func:`plan_groups`:
a fixed cost per call plus padded tokens, with a quadratic attention term). Similar lengths share
a call; a long document next to short ones goes alone. The next call is always the one that holds
the oldest queued document (:meth:`MicroBatcher._next_call`), planned afresh after every call, so no
document waits behind a whole micro-batch taken before it arrived: it waits for at most one call per
document queued ahead of it, and joins the first call whose documents are of its length
(docs/results/serve.md measured the micro-batch barrier this replaces: at 8 clients it cost p95).

Bounded overtaking: only documents that arrived within ``overtake_docs`` documents' model time (the
running mean of seconds per document) after the oldest may join its call. Every document that joins
a call ahead of an older one lengthens that one's wait, so with the whole queue to choose from the
documents that go alone (the longest) waited for every later arrival of a common length, and the
p95 stayed at the unbatched one while docs/s rose (docs/serve.md). With the window each document is
overtaken only by those that came at most ~``overtake_docs`` documents' time after it (or
``max_wait_ms``, if that is longer).
``length_buckets=False`` keeps the micro-batch of up to ``max_batch`` documents in arrival order.

A request's documents are queued all together or not at all: when they do not fit,
:class:`QueueFullError` is raised at once (the HTTP layer answers 503 with ``Retry-After``); nothing
is dropped silently and nothing waits unboundedly. :meth:`MicroBatcher.stop` lets the collector
finish every queued document before the worker thread is shut down.

This module needs only the standard library (and keyatten_lite.errors).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple, Sequence

log = logging.getLogger("keyatten_lite.serve")


class GroupKey(NamedTuple):
    """Documents with equal keys can share one ``extract_keywords_batch`` call."""

    language: str
    profile: str
    method: str
    top_k: int


class QueueFullError(Exception):
    """The queue cannot take the request's documents now; retry after ``retry_after`` seconds."""

    def __init__(self, queued: int, requested: int, max_queue: int, retry_after: int) -> None:
        super().__init__(f"queue full: {queued} of {max_queue} documents queued, {requested} more requested")
        self.queued = queued
        self.requested = requested
        self.max_queue = max_queue
        self.retry_after = retry_after


class ShuttingDownError(Exception):
    """The batcher is stopping (or stopped) and takes no new documents."""


# ---------------------------------------------------------------------- the length-bucket cost model
# Model tokens of a document, estimated from cheap counts: runs of letters (not CJK), runs of
# digits, punctuation marks and CJK ideographs, weighted per language by least squares on the
# first 300 documents of each corpus; `scripts/serve_batch_profile.py --proxy` checks them against
# the tokenizers. English on minilm-l6-en (inspec, www, semeval2017, kpcrowd-dev; 1020 texts):
# within 3.4% for half of the documents, 11% for 95% (characters / 5: 8.5% and 24%, max 51%);
# Chinese on e5-small-multi (csl, 600 texts): 7.1% and 18% (characters / 1.4: 7.4% and 22.5%).
# Close enough to sort and bucket documents; the extractor still pads exactly.
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_LETTERS = re.compile(f"[^\\W\\d_{_CJK_CLASS}]+")
_DIGITS = re.compile(r"\d+")
_PUNCT = re.compile(r"[^\w\s]")
_CJK_CHAR = re.compile(f"[{_CJK_CLASS}]")
# tokens per (letter run, digit run, punctuation mark, CJK ideograph)
TOKEN_WEIGHTS = {"en": (1.08, 1.28, 1.11, 1.0), "zh": (1.79, 1.56, 0.90, 0.675)}
DEFAULT_TOKEN_WEIGHTS = (1.3, 1.3, 1.0, 0.8)
ESTIMATE_CHARS = 4000  # counted on this prefix at most and scaled up (longer texts are windowed anyway)
WINDOW_TOKENS = 512  # the default bundles' max_length: longer documents are read in windows
WINDOW_STRIDE = 382  # the default profile's step between windows (0.75 of 510 content tokens)
# The cost of one call in padded tokens, fitted on minilm-l6-en with 2 threads (scripts/
# serve_batch_profile.py --fit, load average 2.4): seconds ~ a + b*B*S + c*B*S^2 (B documents
# padded to S tokens), a = 5.0 ms, b = 0.093 ms, c = 1.3e-4 ms wall (4.4 ms, 0.15 ms, 3.8e-4 ms
# CPU). In units of b: a call costs ~30-55 padded tokens, and attention adds S/700 (CPU: S/400).
CALL_COST_TOKENS = 40.0
QUADRATIC_TOKENS = 512.0
# At most this many attention cells (windows x S^2) per call, unless one document needs more. Past
# it a shared pass stops paying: per document, 8-16 windows of ~150 tokens (180k-360k cells) took
# 1.2x the CPU of single calls at load average 10, 2-4 windows (45k-90k cells) 0.93-1.03x
# (serve_batch_profile.py); the runtime's own cap (align.MAX_BATCH_CELLS) is 512^2 = 262144.
MAX_CALL_CELLS = 65536


def estimate_tokens(text: str, language: str) -> tuple[int, int]:
    """(tokens of the longest window, number of windows) of one document, without the tokenizer."""
    sample = text[:ESTIMATE_CHARS]
    w_letters, w_digits, w_punct, w_cjk = TOKEN_WEIGHTS.get(language, DEFAULT_TOKEN_WEIGHTS)
    estimate = (
        w_letters * len(_LETTERS.findall(sample))
        + w_digits * len(_DIGITS.findall(sample))
        + w_punct * len(_PUNCT.findall(sample))
        + w_cjk * len(_CJK_CHAR.findall(sample))
    )
    if len(text) > len(sample):
        estimate *= len(text) / len(sample)
    tokens = int(round(estimate)) + 2  # + [CLS] and [SEP]
    if tokens <= WINDOW_TOKENS:
        return max(tokens, 3), 1
    return WINDOW_TOKENS, 1 + math.ceil((tokens - WINDOW_TOKENS) / WINDOW_STRIDE)


def call_cost(longest: int, rows: int) -> float:
    """Estimated cost, in padded tokens, of one call of ``rows`` windows padded to ``longest``."""
    return CALL_COST_TOKENS + longest * (1.0 + longest / QUADRATIC_TOKENS) * rows


def plan_groups(sizes: Sequence[tuple[int, int]], max_batch: int) -> list[list[int]]:
    """Split documents into calls of at most ``max_batch`` documents at the least estimated cost.

    ``sizes`` are (tokens, windows) per document (:func:`estimate_tokens`). The documents are sorted
    by length (stable) and cut into contiguous runs by dynamic programming over :func:`call_cost`,
    each run within ``MAX_CALL_CELLS`` (a lone document may exceed it); on a tie the longer run
    wins. Returns lists of indices into ``sizes``, shortest documents first.
    """
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0])
    n = len(order)
    best = [0.0] * (n + 1)
    cut = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        rows = 0
        best[i] = math.inf
        for k in range(1, min(max_batch, n - i) + 1):
            j = i + k - 1
            rows += sizes[order[j]][1]
            longest = sizes[order[j]][0]
            if k > 1 and rows * longest * longest > MAX_CALL_CELLS:
                break  # longer runs only get longer and wider
            cost = call_cost(longest, rows) + best[j + 1]
            if cost <= best[i] + 1e-9:  # ties (within rounding): the longer run
                best[i], cut[i] = cost, j + 1
    groups = []
    i = 0
    while i < n:
        groups.append(order[i : cut[i]])
        i = cut[i]
    return groups


class _Doc:
    __slots__ = ("key", "text", "future", "enqueued", "size")

    def __init__(self, key: GroupKey, text: str, future: asyncio.Future, enqueued: float) -> None:
        self.key = key
        self.text = text
        self.future = future
        self.enqueued = enqueued
        self.size = estimate_tokens(text, key.language)


ExtractorFactory = Callable[[str, str], Any]
BatchObserver = Callable[[int, float], None]


class MicroBatcher:
    """Gathers documents into micro-batches and runs them on one worker thread.

    ``extractor_factory(language, profile)`` returns an object with ``extract_keywords_batch``; it is
    called on the worker thread the first time a (language, profile) pair is needed, and its result
    is kept for the life of the batcher (a failed creation is retried by the next request).
    ``on_batch(n_documents, seconds)`` is called on the event loop after every model call.
    ``length_buckets=False`` makes one call per key of a micro-batch, in arrival order (the
    behaviour before length buckets, kept for comparison).
    """

    def __init__(
        self,
        extractor_factory: ExtractorFactory,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 0.0,
        max_queue: int = 256,
        on_batch: BatchObserver | None = None,
        length_buckets: bool = True,
        overtake_docs: float = 3.0,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or not overtake_docs >= 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_ms and overtake_docs >= 0")
        self._factory = extractor_factory
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._on_batch = on_batch
        self.length_buckets = bool(length_buckets)
        self.overtake_docs = float(overtake_docs)
        self._queue: collections.deque[_Doc] = collections.deque()
        self._extractors: dict[tuple[str, str], Any] = {}
        self._extractors_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._in_flight = 0
        self._current: list[_Doc] = []  # the micro-batch being processed
        self._call_seconds_ema: float | None = None  # seconds per document, for Retry-After
        self.documents_done = 0
        self.model_calls = 0

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def queue_depth(self) -> int:
        """Documents waiting for a model call (not counting those in the current call)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Documents in the model call that is running now."""
        return self._in_flight

    def loaded_extractors(self) -> list[str]:
        with self._extractors_lock:
            return sorted(f"{lang}/{profile}" for lang, profile in self._extractors)

    def retry_after(self) -> int:
        """Seconds after which the queue has probably room again (1 to 60)."""
        per_doc = self._call_seconds_ema if self._call_seconds_ema is not None else 0.05
        backlog = len(self._queue) + sum(not d.future.done() for d in self._current)
        return int(min(60, max(1, math.ceil(backlog * per_doc))))

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the batcher is already started")
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyatten-serve-model")
        self._task = asyncio.create_task(self._collect(), name="keyatten-serve-batcher")

    async def preload(self, keys: Sequence[tuple[str, str]], warmup_text: str | None = None) -> None:
        """Create the extractors for ``keys`` ((language, profile) pairs) now, on the worker thread;
        with ``warmup_text``, also run one document through each (opens the bundle, loads the graph)."""
        assert self._executor is not None and self._loop is not None, "start() first"
        for language, profile in keys:
            extractor = await self._loop.run_in_executor(self._executor, self._extractor, language, profile)
            if warmup_text is not None:
                await self._loop.run_in_executor(
                    self._executor,
                    lambda ex=extractor: ex.extract_keywords_batch([warmup_text], with_scores=True),
                )

    async def stop(self, timeout: float | None = 30.0) -> int:
        """Stop taking documents, finish every queued one (up to ``timeout`` seconds), then shut the
        worker thread down. Returns how many queued documents had to be failed at the timeout."""
        self._stopping = True
        failed = 0
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                log.error("drain timeout: %d queued document(s) not processed", len(self._queue))
                self._task.cancel()
                try:
                    await self._task
                except (asyncio.CancelledError, Exception):
                    pass
            leftovers = list(self._current) + list(self._queue)
            self._queue.clear()
            for doc in leftovers:
                if not doc.future.done():
                    doc.future.set_exception(ShuttingDownError("the server is shutting down"))
                    failed += 1
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        return failed

    # ------------------------------------------------------------------ submit
    async def submit(self, items: Sequence[tuple[GroupKey, str]]) -> list[list[list]]:
        """Queue the documents of one request; returns their keywords, in order, as [[phrase, score]].

        Raises :class:`QueueFullError` when they do not all fit, :class:`ShuttingDownError` when the
        batcher is stopping, or the first exception raised by the model for one of them.
        """
        if self._stopping or self._task is None or self._task.done():
            raise ShuttingDownError("the server is shutting down" if self._stopping else "the batcher is not running")
        if not items:
            return []
        n = len(items)
        if len(self._queue) + n > self.max_queue:
            raise QueueFullError(len(self._queue), n, self.max_queue, self.retry_after())
        assert self._loop is not None and self._wakeup is not None
        now = self._loop.time()
        docs = [_Doc(key, text, self._loop.create_future(), now) for key, text in items]
        self._queue.extend(docs)
        self._wakeup.set()
        results = await asyncio.gather(*(d.future for d in docs), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return list(results)

    # ------------------------------------------------------------------ collector
    async def _collect(self) -> None:
        assert self._wakeup is not None and self._loop is not None
        loop = self._loop
        idle = True  # the worker found the queue empty: only then may a document wait for company
        while True:
            try:
                if not self._queue:
                    if self._stopping:
                        return
                    idle = True
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if idle and self.max_wait > 0:
                    await self._wait_for_company(loop)
                idle = False
                if self.length_buckets:
                    # One call at a time, always the one that holds the oldest document.
                    docs = self._next_call()
                    if not docs:
                        continue
                    self._current = docs
                    call = loop.run_in_executor(self._executor, self._timed_call, docs[0].key, [d.text for d in docs])
                    await self._finish_group(docs, call)
                    self._current = []
                    continue
                batch: list[_Doc] = []
                while self._queue and len(batch) < self.max_batch:
                    doc = self._queue.popleft()
                    if not doc.future.done():  # a cancelled request (client gone) costs nothing
                        batch.append(doc)
                self._current = batch  # left set if cancelled, so that stop() can fail these
                # All the micro-batch's calls go to the worker at once, so that it runs them back to
                # back; each call's documents are answered while the next call runs.
                submitted = [
                    (docs, loop.run_in_executor(self._executor, self._timed_call, docs[0].key, [d.text for d in docs]))
                    for docs in self.plan(batch)
                ]
                for docs, call in submitted:
                    await self._finish_group(docs, call)
                self._current = []
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the collector die: it is the only consumer
                log.exception("micro-batcher error (continuing)")
                for doc in self._current:
                    if not doc.future.done():
                        doc.future.set_exception(exc)
                self._current = []

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop) -> None:
        """After an idle spell: until ``max_batch`` documents are queued or the oldest has waited
        ``max_wait`` (from its arrival). Stopping skips the wait: drain as fast as possible."""
        assert self._wakeup is not None
        deadline = self._queue[0].enqueued + self.max_wait
        while self._queue and len(self._queue) < self.max_batch and not self._stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def overtake_window(self) -> float:
        """Seconds after the oldest document within which a document may join its call: at least
        ``max_wait`` (documents asked to wait that long for company may have it)."""
        if self._call_seconds_ema is None:  # nothing measured yet: the whole queue
            return math.inf
        return max(self.overtake_docs * self._call_seconds_ema, self.max_wait)

    def _next_call(self) -> list[_Doc]:
        """Take the documents of the next model call off the queue: the oldest queued document and
        the documents of its key that :func:`plan_groups` puts in its call (similar lengths, at most
        ``max_batch``), planned over the documents that arrived within :meth:`overtake_window` of
        it. The rest keep their places."""
        while self._queue and self._queue[0].future.done():  # cancelled requests cost nothing
            self._queue.popleft()
        if not self._queue:
            return []
        oldest = self._queue[0]
        latest = oldest.enqueued + self.overtake_window()
        same_key = [
            d for d in self._queue if d.key == oldest.key and not d.future.done() and d.enqueued <= latest
        ]
        taken: set[int] = set()
        for group in plan_groups([d.size for d in same_key], self.max_batch):
            if 0 in group:
                taken = {id(same_key[i]) for i in group}
                break
        docs = [d for d in self._queue if id(d) in taken]  # in arrival order
        self._queue = collections.deque(d for d in self._queue if id(d) not in taken and not d.future.done())
        return docs

    def plan(self, batch: Sequence[_Doc]) -> list[list[_Doc]]:
        """The model calls for a micro-batch: its documents grouped by key and, with length buckets,
        by similar estimated length (:func:`plan_groups`); each call's documents in arrival order,
        the calls in the order of their oldest document."""
        by_key: dict[GroupKey, list[int]] = {}
        for i, doc in enumerate(batch):
            by_key.setdefault(doc.key, []).append(i)
        calls: list[list[int]] = []
        for members in by_key.values():
            if not self.length_buckets or len(members) == 1:
                calls.append(members)
                continue
            for group in plan_groups([batch[i].size for i in members], self.max_batch):
                calls.append(sorted(members[g] for g in group))
        calls.sort(key=lambda c: c[0])
        return [[batch[i] for i in c] for c in calls]

    async def _finish_group(self, docs: list[_Doc], call: asyncio.Future) -> None:
        """Wait for one submitted call and answer its documents (one by one again if it failed)."""
        assert self._loop is not None
        results, error, seconds = await call
        if error is None:
            outcomes: list[Any] = list(results)
        elif len(docs) == 1:
            outcomes = [error]
        else:
            # One bad document must not fail its neighbours: retry them one by one.
            log.warning("batch of %d failed (%s: %s); retrying one by one", len(docs), type(error).__name__, error)
            outcomes = []
            for doc in docs:
                one, one_error, one_seconds = await self._loop.run_in_executor(
                    self._executor, self._timed_call, doc.key, [doc.text]
                )
                seconds += one_seconds
                outcomes.append(one_error if one_error is not None else one[0])
        per_doc = seconds / max(len(docs), 1)
        self._call_seconds_ema = per_doc if self._call_seconds_ema is None else 0.8 * self._call_seconds_ema + 0.2 * per_doc
        self.model_calls += 1
        self.documents_done += len(docs)
        if self._on_batch is not None:
            try:
                self._on_batch(len(docs), seconds)
            except Exception:
                log.exception("on_batch observer failed")
        for doc, outcome in zip(docs, outcomes):
            if doc.future.done():
                continue
            if isinstance(outcome, BaseException):
                doc.future.set_exception(outcome)
            else:
                doc.future.set_result(outcome)

    # ------------------------------------------------------------------ worker thread
    def _extractor(self, language: str, profile: str):
        with self._extractors_lock:
            extractor = self._extractors.get((language, profile))
        if extractor is None:
            extractor = self._factory(language, profile)  # outside the lock: may take seconds
            with self._extractors_lock:
                self._extractors[(language, profile)] = extractor
        return extractor

    def _timed_call(self, key: GroupKey, texts: list[str]) -> tuple[list | None, Exception | None, float]:
        """(results, None, seconds) or (None, exception, seconds); never raises."""
        self._in_flight = len(texts)
        started = time.perf_counter()
        try:
            return self._call(key, texts), None, time.perf_counter() - started
        except Exception as exc:
            return None, exc, time.perf_counter() - started
        finally:
            self._in_flight = 0

    def _call(self, key: GroupKey, texts: list[str]) -> list[list[list]]:
        extractor = self._extractor(key.language, key.profile)
        ranked = extractor.extract_keywords_batch(texts, method=key.method, top_k=key.top_k, with_scores=True)
        ranked = list(ranked)
        if len(ranked) != len(texts):
            raise RuntimeError(f"extract_keywords_batch returned {len(ranked)} results for {len(texts)} texts")
        return [[[str(p), _score(s)] for p, s in kws] for kws in ranked]


def _score(value: Any) -> float | None:
    score = float(value)
    return score if math.isfinite(score) else None  # JSON has no NaN/inf
