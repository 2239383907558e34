"""`keyatten-lite serve` (keyatten_lite/serve): micro-batching, limits, errors, metrics, shutdown.

Every HTTP test starts a real uvicorn server on 127.0.0.1 (port 0) in a thread, with a fake
extractor that records its batch sizes and can be held at a gate; the clients are plain
http.client connections in threads. One test (marked slow) checks the real default English bundle.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from keyatten_lite.errors import BundleError, InvalidArgumentError  # noqa: E402
from keyatten_lite.serve import ServeConfig, detect_language  # noqa: E402
from keyatten_lite.serve.app import create_app  # noqa: E402
from keyatten_lite.serve.batcher import MAX_CALL_CELLS, GroupKey, MicroBatcher, estimate_tokens, plan_groups  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- fakes and helpers
class FakeModel:
    """Keywords = [(first word, len(text))]; records (language, profile, method, top_k, n_texts).

    ``gate``: when set up, every call waits for it (up to 10 s). ``delay``: seconds per call.
    Texts "invalid-arg", "bundle-error", "boom" raise InvalidArgumentError, BundleError, RuntimeError.
    """

    def __init__(self, delay: float = 0.0, gated: bool = False) -> None:
        self.delay = delay
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.calls: list[tuple] = []
        self.lock = threading.Lock()
        self.entered = threading.Semaphore(0)

    def factory(self, language: str, profile: str):
        model = self

        class _Extractor:
            def extract_keywords_batch(self, texts, method="received_attn", top_k=10, with_scores=False):
                with model.lock:
                    model.calls.append((language, profile, method, top_k, len(texts)))
                model.entered.release()
                assert model.gate.wait(10), "test gate never opened"
                if model.delay:
                    time.sleep(model.delay)
                for t in texts:
                    if t == "invalid-arg":
                        raise InvalidArgumentError("this text is refused")
                    if t == "bundle-error":
                        raise BundleError("bundle damaged")
                    if t == "boom":
                        raise RuntimeError("unexpected failure")
                return [[((t.split() or ["-"])[0], float(len(t)))][:top_k] for t in texts]

        return _Extractor()

    @property
    def sizes(self) -> list[int]:
        with self.lock:
            return [c[-1] for c in self.calls]


class Server:
    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.app = app

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True  # what uvicorn's SIGTERM/SIGINT handler does
        self.thread.join(15)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.stop()

    def request(self, method: str, path: str, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            data = resp.read()
            ctype = resp.getheader("Content-Type", "")
            parsed = json.loads(data) if ctype.startswith("application/json") else data.decode()
            return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def post(self, body, headers=None):
        return self.request("POST", "/extract", body, headers)

    def health(self) -> dict:
        return self.request("GET", "/health")[1]

    def wait_queue(self, depth: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.health()["queue_depth"] < depth:
            assert time.monotonic() < deadline, f"queue never reached {depth}"
            time.sleep(0.01)


def serve(model: FakeModel, **config) -> Server:
    return Server(create_app(ServeConfig(**config), extractor_factory=model.factory))


def concurrently(fn, args: list) -> list:
    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(fn, args))


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text format -> {(name, sorted labels): value}; asserts every line is well formed."""
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
    out: dict[tuple[str, tuple], float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = sample.match(line)
        assert m, f"bad metrics line: {line!r}"
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in types or base in types, f"sample without # TYPE: {line!r}"
    return out


# ---------------------------------------------------------------------- batching
def test_concurrent_requests_share_one_batch():
    model = FakeModel()
    with serve(model, max_batch=8, max_wait_ms=3000) as srv:
        texts = [f"doc{i} body text" for i in range(8)]
        answers = concurrently(lambda t: srv.post({"text": t, "language": "en"}), texts)
    assert [a[0] for a in answers] == [200] * 8
    # each request gets its own document's keywords back
    assert [a[1]["keywords"] for a in answers] == [[[t.split()[0], float(len(t))]] for t in texts]
    assert model.sizes == [8]  # full at 8: no waiting for max_wait_ms


def test_batch_groups_by_language_profile_method_top_k():
    model = FakeModel()
    with serve(model, max_batch=6, max_wait_ms=3000) as srv:
        bodies = [
            {"texts": ["alpha one", "自然语言处理是人工智能的方向"]},  # language detected per text
            {"text": "beta two", "top_k": 3},
            {"text": "gamma three", "profile": "compat"},
            {"text": "delta four", "top_k": 3},
            {"text": "epsilon five", "language": "en"},
        ]
        answers = concurrently(srv.post, bodies)
    assert all(a[0] == 200 for a in answers), answers
    assert answers[0][1]["results"][0]["keywords"] == [["alpha", 9.0]]
    assert len(answers[0][1]["results"]) == 2
    groups = sorted(model.calls)
    assert groups == sorted([
        ("en", "default", "received_attn", 10, 2),  # alpha + epsilon
        ("zh", "default", "received_attn", 10, 1),
        ("en", "default", "received_attn", 3, 2),  # beta + delta
        ("en", "compat", "received_attn", 10, 1),
    ])


def test_max_batch_1_turns_batching_off():
    model = FakeModel()
    with serve(model, max_batch=1, max_wait_ms=3000) as srv:
        answers = concurrently(lambda i: srv.post({"text": f"doc{i}"}), list(range(6)))
        multi = srv.post({"texts": ["a", "b", "c"]})
    assert [a[0] for a in answers] == [200] * 6 and multi[0] == 200
    assert model.sizes == [1] * 9


# ---------------------------------------------------------------------- length buckets, natural batching
def test_estimate_tokens_per_language_and_windows():
    # letter runs, digit runs, punctuation and ideographs, weighted per language, + 2 specials
    assert estimate_tokens("Graph neural networks learn.", "en") == (round(4 * 1.08 + 1.11) + 2, 1)
    assert estimate_tokens("Version 2 of 2024, (draft)", "en") == (round(3 * 1.08 + 2 * 1.28 + 3 * 1.11) + 2, 1)
    assert estimate_tokens("自然语言处理", "zh") == (round(6 * 0.675) + 2, 1)
    assert estimate_tokens("", "en") == (3, 1)
    short, long_ = estimate_tokens("word " * 100, "en"), estimate_tokens("word " * 400, "en")
    assert short[0] < long_[0] <= 512
    # beyond one window: windows of 512 tokens, a step of 382
    tokens, windows = estimate_tokens("word " * 4000, "en")  # ~4322 tokens (counted on a prefix)
    assert tokens == 512 and windows == 1 + math.ceil((round(4000 * 1.08) + 2 - 512) / 382)


def test_plan_groups_puts_similar_lengths_together():
    sizes = [(20, 1), (150, 1), (22, 1), (160, 1), (21, 1), (90, 1)]
    groups = plan_groups(sizes, max_batch=16)
    assert sorted(map(sorted, groups)) == [[0, 2, 4], [1, 3], [5]]
    assert sorted(i for g in groups for i in g) == list(range(6))  # a partition
    # equal lengths fill the calls up to max_batch, the first call the fullest
    assert plan_groups([(30, 1)] * 8, max_batch=3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    # short documents share a call despite some padding: a call costs more than a few pad tokens
    assert plan_groups([(10, 1), (14, 1), (18, 1)], max_batch=8) == [[0, 1, 2]]
    assert plan_groups([], max_batch=4) == [] and plan_groups([(5, 1)], max_batch=1) == [[0]]


def test_plan_groups_caps_the_cells_of_a_call():
    # 2 x 200^2 = 80000 cells > MAX_CALL_CELLS: long documents go alone, as does a windowed one
    assert MAX_CALL_CELLS == 65536
    assert plan_groups([(200, 1), (200, 1)], max_batch=8) == [[0], [1]]
    assert plan_groups([(512, 4), (512, 1), (60, 1), (60, 1)], max_batch=8) == [[2, 3], [0], [1]]
    assert plan_groups([(128, 1)] * 6, max_batch=8) == [[0, 1, 2, 3], [4, 5]]  # 4 x 128^2 = 65536


class _Recording:
    """An extractor that records each call's texts; the first call waits at ``gate``."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def factory(self, language, profile):
        return self

    def extract_keywords_batch(self, texts, method="received_attn", top_k=10, with_scores=False):
        self.calls.append(list(texts))
        self.entered.set()
        assert self.gate.wait(10), "test gate never opened"
        return [[(t.split()[0], float(len(t)))] for t in texts]


async def _behind_a_busy_worker(ex: _Recording, texts: list[str], **batcher) -> list:
    """Hold the worker in a call, queue ``texts`` (one request each), release; -> their answers."""
    b = MicroBatcher(ex.factory, **batcher)
    await b.start()
    key = GroupKey("en", "default", "received_attn", 10)
    first = asyncio.ensure_future(b.submit([(key, "blocker text")] * b.max_batch))  # full: no wait
    while not ex.entered.is_set():
        await asyncio.sleep(0.005)
    tasks = [asyncio.ensure_future(b.submit([(key, t)])) for t in texts]
    while b.queue_depth < len(texts):
        await asyncio.sleep(0.005)
    ex.gate.set()
    answers = await asyncio.gather(*tasks)
    await first
    assert await b.stop(timeout=10) == 0
    return [a[0] for a in answers]


SHORT = [f"short{i} abc" for i in range(3)]  # ~4 tokens
LONG = [f"long{i} " + "word " * 100 for i in range(3)]  # ~110 tokens


def test_queued_documents_of_similar_length_share_a_call():
    ex = _Recording()
    texts = [LONG[0], SHORT[0], LONG[1], SHORT[1], SHORT[2], LONG[2]]  # arrival order
    answers = asyncio.run(_behind_a_busy_worker(ex, texts, max_batch=8, max_queue=64))
    # every request gets its own document's answer
    assert answers == [[[t.split()[0], float(len(t))]] for t in texts]
    # the oldest document's bucket goes first (no starvation), then the other bucket
    assert ex.calls[1:] == [LONG, SHORT]


def test_a_new_document_joins_the_next_call_of_its_length():
    """No micro-batch barrier: a document that arrives while the oldest one's call runs shares the
    next call with the queued documents of its length, instead of waiting behind a whole micro-batch."""

    class Stepper:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []
            self.steps = threading.Semaphore(0)
            self.started = threading.Semaphore(0)

        def factory(self, language, profile):
            return self

        def extract_keywords_batch(self, texts, method="received_attn", top_k=10, with_scores=False):
            self.calls.append(list(texts))
            self.started.release()
            assert self.steps.acquire(timeout=10), "test never released the call"
            return [[(t.split()[0], float(len(t)))] for t in texts]

    async def scenario() -> list:
        ex = Stepper()
        # the overtaking window (test below) is measured from call times, which are test timing here
        b = MicroBatcher(ex.factory, max_batch=8, max_queue=64, overtake_docs=1e6)
        await b.start()
        key = GroupKey("en", "default", "received_attn", 10)
        loop = asyncio.get_running_loop()

        async def started() -> None:
            assert await loop.run_in_executor(None, ex.started.acquire, True, 10)

        blocker = asyncio.ensure_future(b.submit([(key, "blocker text")]))
        await started()
        first = [asyncio.ensure_future(b.submit([(key, t)])) for t in (LONG[0], SHORT[0])]
        while b.queue_depth < 2:
            await asyncio.sleep(0.005)
        ex.steps.release()  # the blocker ends; LONG[0] (the oldest) goes alone
        await started()
        late = asyncio.ensure_future(b.submit([(key, SHORT[1])]))
        while b.queue_depth < 2:
            await asyncio.sleep(0.005)
        for _ in range(3):
            ex.steps.release()
        answers = await asyncio.gather(blocker, *first, late)
        assert await b.stop(timeout=10) == 0
        return ex.calls, answers

    calls, answers = asyncio.run(scenario())
    assert calls == [["blocker text"], [LONG[0]], [SHORT[0], SHORT[1]]]
    assert [a[0][0][0] for a in answers] == ["blocker", "long0", "short0", "short1"]


def test_later_documents_beyond_the_overtaking_window_wait_for_their_own_call():
    # overtake_docs=0: only documents queued with the oldest (the same request) may join its call;
    # separate requests of the same length, queued one after another, go one by one.
    ex = _Recording()
    asyncio.run(_behind_a_busy_worker(ex, SHORT, max_batch=8, max_queue=64, overtake_docs=0))
    assert ex.calls[1:] == [[SHORT[0]], [SHORT[1]], [SHORT[2]]]

    async def one_request_of_two() -> None:
        b = MicroBatcher(ex2.factory, max_batch=8, max_queue=64, overtake_docs=0)
        await b.start()
        key = GroupKey("en", "default", "received_attn", 10)
        ex2.gate.set()
        await b.submit([(key, "warm up")])  # measures the model time: the window is 0 s from now on
        await b.submit([(key, SHORT[0]), (key, SHORT[1])])
        assert await b.stop(timeout=10) == 0

    ex2 = _Recording()
    asyncio.run(one_request_of_two())
    assert ex2.calls == [["warm up"], SHORT[:2]]


def test_overtaking_window_follows_the_measured_model_time():
    b = MicroBatcher(_Recording().factory, overtake_docs=3)
    assert b.overtake_window() == float("inf")  # nothing measured: the whole queue
    with pytest.raises(ValueError):
        MicroBatcher(_Recording().factory, overtake_docs=-1)
    with pytest.raises(InvalidArgumentError, match="overtake_docs"):
        ServeConfig(overtake_docs=-0.5).validated()
    assert ServeConfig().overtake_docs == 3.0


def test_without_length_buckets_calls_take_arrival_order():
    ex = _Recording()
    texts = [LONG[0], SHORT[0], LONG[1], SHORT[1], SHORT[2], LONG[2]]
    asyncio.run(_behind_a_busy_worker(ex, texts, max_batch=4, max_queue=64, length_buckets=False))
    assert ex.calls[1:] == [texts[:4], texts[4:]]


def test_a_backlog_goes_at_once_even_with_max_wait():
    # max_wait_ms only delays the first document after an idle spell; documents that queued behind
    # a running call are taken as soon as it ends, however few they are.
    ex = _Recording()
    started = time.perf_counter()
    asyncio.run(_behind_a_busy_worker(ex, SHORT[:2], max_batch=8, max_queue=64, max_wait_ms=5000))
    assert time.perf_counter() - started < 4.0
    assert ex.calls[1:] == [SHORT[:2]]


def test_idle_server_answers_a_lone_request_without_waiting():
    assert ServeConfig().max_wait_ms == 0 and ServeConfig().length_buckets is True

    async def lone(**batcher) -> float:
        ex = _Recording()
        ex.gate.set()
        b = MicroBatcher(ex.factory, max_batch=16, **batcher)
        await b.start()
        t = time.perf_counter()
        await b.submit([(GroupKey("en", "default", "received_attn", 10), "alone here")])
        elapsed = time.perf_counter() - t
        await b.stop()
        assert ex.calls == [["alone here"]]
        return elapsed

    assert asyncio.run(lone()) < 0.5  # the default: no waiting for company
    assert asyncio.run(lone(max_wait_ms=800)) >= 0.75  # opt-in: the first document waits
    model = FakeModel()
    with serve(model) as srv:  # the server's defaults
        status, body, _ = srv.post({"text": "alone"})
        assert status == 200 and body["keywords"] == [["alone", 5.0]]
        assert srv.health()["config"]["max_wait_ms"] == 0
    assert model.sizes == [1]


def test_natural_batching_under_load():
    # No max_wait: requests that arrive while the model is busy share the next call.
    model = FakeModel(gated=True)
    with serve(model, max_batch=8) as srv:
        with ThreadPoolExecutor(6) as pool:
            first = pool.submit(srv.post, {"text": "first one"})
            assert model.entered.acquire(timeout=10)
            rest = [pool.submit(srv.post, {"text": f"next{i} doc"}) for i in range(5)]
            srv.wait_queue(5)
            model.gate.set()
            answers = [first.result()] + [f.result() for f in rest]
    assert [a[0] for a in answers] == [200] * 6
    assert [a[1]["keywords"][0][0] for a in answers] == ["first"] + [f"next{i}" for i in range(5)]
    assert model.sizes == [1, 5]


def test_cli_length_bucket_flag():
    import argparse

    from keyatten_lite.serve import cli

    parser = argparse.ArgumentParser(prog="keyatten-lite")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(["serve"])
    assert args.length_buckets is True and args.max_wait_ms == 0
    assert parser.parse_args(["serve", "--no-length-buckets"]).length_buckets is False
    with pytest.raises(InvalidArgumentError, match="length_buckets"):
        ServeConfig(length_buckets=1).validated()


# ---------------------------------------------------------------------- limits
def test_queue_full_is_503_with_retry_after():
    model = FakeModel(gated=True)
    with serve(model, max_batch=1, max_queue=4, max_texts=4, max_wait_ms=0) as srv:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(srv.post, {"text": "in flight"})
            assert model.entered.acquire(timeout=10)  # the first document is in the model call
            queued = pool.submit(srv.post, {"texts": ["q1", "q2", "q3", "q4"]})
            srv.wait_queue(4)
            status, body, headers = srv.post({"text": "one too many"})
            assert status == 503
            assert body["limit"] == "max_queue" and body["max_queue"] == 4 and body["queued"] == 4
            assert int(headers["retry-after"]) >= 1
            metrics = parse_metrics(srv.request("GET", "/metrics")[1])
            assert metrics[("keyatten_queue_depth", ())] == 4
            model.gate.set()
            assert first.result()[0] == 200
            assert queued.result()[0] == 200 and len(queued.result()[1]["results"]) == 4
        assert srv.post({"text": "room again"})[0] == 200
        metrics = parse_metrics(srv.request("GET", "/metrics")[1])
        assert metrics[("keyatten_rejections_total", (("limit", "max_queue"),))] == 1
        assert metrics[("keyatten_http_requests_total", (("code", "503"), ("path", "/extract")))] == 1


@pytest.mark.parametrize(
    "body, status, limit, value",
    [
        ({"text": "x" * 300}, 413, "max_body_bytes", 200),
        ({"texts": ["a", "b", "c", "d"]}, 422, "max_texts", 3),
        ({"text": "x" * 11}, 422, "max_chars", 10),
        ({"texts": ["ok", "y" * 11]}, 422, "max_chars", 10),
    ],
)
def test_limits_answer_their_status_and_name_the_limit(body, status, limit, value):
    model = FakeModel()
    with serve(model, max_body_bytes=200, max_texts=3, max_chars=10, max_queue=8) as srv:
        got_status, got, _ = srv.post(body)
        assert got_status == status, got
        assert got["limit"] == limit and got[limit] == value and isinstance(got["error"], str)
        assert srv.post({"text": "fine"})[0] == 200  # the server is unharmed
    assert model.sizes == [1]


def test_body_limit_without_content_length():
    model = FakeModel()
    with serve(model, max_body_bytes=100) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.putrequest("POST", "/extract")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()
        payload = json.dumps({"text": "z" * 500}).encode()
        for i in range(0, len(payload), 64):
            chunk = payload[i : i + 64]
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["limit"] == "max_body_bytes"
        conn.close()


@pytest.mark.parametrize("body", [b"{bad", b"", b"   ", b"\xff\xfe", b'{"text": "a",}', b"[1,", b'{"text": "unterminated'])
def test_malformed_json_is_400(body):
    with serve(FakeModel()) as srv:
        status, got, _ = srv.post(body)
    assert status == 400 and got["error"].startswith("malformed JSON")


@pytest.mark.parametrize(
    "body, field",
    [
        ([1, 2], None),
        ("just a string", None),
        (None, None),
        ({}, "text"),
        ({"text": "a", "texts": ["b"]}, "text"),
        ({"text": 5}, "text"),
        ({"text": None}, "text"),
        ({"texts": "not a list"}, "texts"),
        ({"texts": ["ok", 3]}, "texts"),
        ({"text": "a", "top_k": "3"}, "top_k"),
        ({"text": "a", "top_k": True}, "top_k"),
        ({"text": "a", "top_k": 0}, "top_k"),
        ({"text": "a", "top_k": 2.5}, "top_k"),
        ({"text": "a", "top_k": 10**6}, "top_k"),
        ({"text": "a", "method": 7}, "method"),
        ({"text": "a", "method": "no_such_method"}, "method"),
        ({"text": "a", "profile": "fast"}, "profile"),
        ({"text": "a", "profile": ["default"]}, "profile"),
        ({"text": "a", "language": "fr"}, "language"),
        ({"text": "a", "language": 1}, "language"),
        ({"text": "a", "top-k": 3}, "top-k"),
    ],
)
def test_wrong_types_and_values_are_422(body, field):
    model = FakeModel()
    with serve(model) as srv:
        status, got, _ = srv.post(json.dumps(body))
    assert status == 422, got
    assert isinstance(got["error"], str) and got.get("field") == field
    assert model.calls == []  # refused before reaching the queue


def test_extractor_errors_are_json_and_isolated():
    model = FakeModel()
    with serve(model, max_batch=4, max_wait_ms=3000) as srv:
        answers = concurrently(srv.post, [{"text": t} for t in ("good one", "invalid-arg", "boom", "bundle-error")])
        by_text = dict(zip(("good one", "invalid-arg", "boom", "bundle-error"), answers))
        assert by_text["good one"][0] == 200 and by_text["good one"][1]["keywords"] == [["good", 8.0]]
        assert by_text["invalid-arg"][0] == 422 and by_text["invalid-arg"][1]["type"] == "InvalidArgumentError"
        assert by_text["bundle-error"][0] == 500 and by_text["bundle-error"][1]["type"] == "BundleError"
        assert by_text["boom"][0] == 500 and by_text["boom"][1] == {"error": "internal server error", "type": "RuntimeError"}
        # one batched call failed, then each document was retried on its own
        assert model.sizes == [4, 1, 1, 1, 1]
        assert srv.post({"texts": ["still", "serving", "after", "errors"]})[0] == 200  # a full batch: no wait
        assert srv.health()["status"] == "ok"


def test_unknown_path_and_method_are_json():
    with serve(FakeModel()) as srv:
        status, body, _ = srv.request("GET", "/nope")
        assert status == 404 and "error" in body
        status, body, headers = srv.request("GET", "/extract")
        assert status == 405 and "error" in body and "POST" in headers.get("allow", "")


# ---------------------------------------------------------------------- health, metrics, OpenAPI
def test_health_metrics_and_openapi():
    model = FakeModel()
    with serve(model, max_batch=4, max_wait_ms=3000) as srv:
        status, health, _ = srv.request("GET", "/health")
        assert status == 200 and health["status"] == "ok" and health["extractors"] == []
        answers = concurrently(lambda i: srv.post({"text": f"metric doc {i}"}), list(range(4)))
        assert [a[0] for a in answers] == [200] * 4
        assert srv.post(b"{bad")[0] == 400
        assert srv.post({"texts": ["one", "two", "three", "four"]})[0] == 200  # full batch: no wait
        health = srv.health()
        assert health["extractors"] == ["en/default"] and health["documents"] == 8 and health["model_calls"] == 2

        status, text, headers = srv.request("GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        m = parse_metrics(text)
        assert m[("keyatten_http_requests_total", (("code", "200"), ("path", "/extract")))] == 5
        assert m[("keyatten_http_requests_total", (("code", "400"), ("path", "/extract")))] == 1
        assert m[("keyatten_http_requests_total", (("code", "200"), ("path", "/health")))] == 2
        assert m[("keyatten_http_request_duration_seconds_count", (("path", "/extract"),))] == 6
        assert m[("keyatten_http_request_duration_seconds_bucket", (("le", "+Inf"), ("path", "/extract")))] == 6
        # two model calls of 4 documents
        assert m[("keyatten_batch_documents_count", ())] == 2
        assert m[("keyatten_batch_documents_sum", ())] == 8
        assert m[("keyatten_batch_documents_bucket", (("le", "2.0"),))] == 0
        assert m[("keyatten_batch_documents_bucket", (("le", "4.0"),))] == 2
        assert m[("keyatten_batch_documents_bucket", (("le", "+Inf"),))] == 2
        assert m[("keyatten_documents_total", ())] == 8
        assert m[("keyatten_queue_depth", ())] == 0
        # buckets are cumulative
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in m.items()
            if name == "keyatten_http_request_duration_seconds_bucket" and dict(labels)["path"] == "/extract"
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)

        status, schema, _ = srv.request("GET", "/openapi.json")
        assert status == 200 and schema["openapi"].startswith("3.")
        assert "post" in schema["paths"]["/extract"] and {"/health", "/metrics", "/openapi.json"} <= set(schema["paths"])
        props = schema["components"]["schemas"]["ExtractRequest"]["properties"]
        assert props["texts"]["maxItems"] == 64 and "received_attn" in props["method"]["enum"]
        assert set(schema["paths"]["/extract"]["post"]["responses"]) >= {"200", "400", "413", "422", "500", "503"}


# ---------------------------------------------------------------------- shutdown
def test_graceful_stop_answers_everything_queued():
    model = FakeModel(gated=True)
    srv = serve(model, max_batch=2, max_wait_ms=0, max_queue=16, max_texts=16)
    with srv:
        with ThreadPoolExecutor(7) as pool:
            futures = [pool.submit(srv.post, {"text": f"drain {i}"}) for i in range(7)]
            assert model.entered.acquire(timeout=10)
            srv.wait_queue(5)  # 1 or 2 in the running call, the rest queued
            stopper = threading.Thread(target=srv.stop)
            stopper.start()  # uvicorn stops accepting; open requests and the queue are finished
            time.sleep(0.3)
            model.gate.set()
            stopper.join(15)
            answers = [f.result() for f in futures]
    assert [a[0] for a in answers] == [200] * 7
    assert [a[1]["keywords"][0][0] for a in answers] == ["drain"] * 7
    assert sum(model.sizes) == 7


def test_batcher_stop_drains_the_queue():
    model = FakeModel(delay=0.02)

    async def scenario():
        b = MicroBatcher(model.factory, max_batch=3, max_wait_ms=1000, max_queue=20)
        await b.start()
        key = GroupKey("en", "default", "received_attn", 10)
        tasks = [asyncio.ensure_future(b.submit([(key, f"t{i} x")])) for i in range(8)]
        await asyncio.sleep(0)  # all queued
        failed = await b.stop(timeout=10)
        return failed, await asyncio.gather(*tasks)

    failed, results = asyncio.run(scenario())
    assert failed == 0
    assert [r[0][0][0] for r in results] == [f"t{i}" for i in range(8)]
    assert model.sizes == [3, 3, 2]  # stopping skips max_wait: the drain goes at once


_SIGTERM_SERVER = textwrap.dedent(
    """
    import logging, sys, time, uvicorn
    logging.basicConfig(level=logging.INFO)
    from keyatten_lite.serve import ServeConfig
    from keyatten_lite.serve.app import create_app

    class Slow:
        def extract_keywords_batch(self, texts, method, top_k, with_scores):
            time.sleep(0.15)
            return [[(t, 1.0)] for t in texts]

    app = create_app(ServeConfig(max_batch=1, max_wait_ms=0), extractor_factory=lambda lang, profile: Slow())
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", lifespan="on", timeout_graceful_shutdown=20)
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_sigterm_drains_queued_requests(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGTERM_SERVER, str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        fake = Server.__new__(Server)
        fake.port = port
        deadline = time.monotonic() + 20
        while True:
            try:
                if fake.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(fake.post, {"text": f"sig{i}"}) for i in range(6)]
            fake.wait_queue(3)
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=20) for f in futures]
        assert [a[0] for a in answers] == [200] * 6
        assert sorted(a[1]["keywords"][0][0] for a in answers) == [f"sig{i}" for i in range(6)]
        out, _ = proc.communicate(timeout=20)
        # uvicorn re-raises the signal once it has shut down cleanly
        assert proc.returncode in (0, -signal.SIGTERM), out
        assert "keyatten-lite serve stopped (6 documents processed, 0 failed at shutdown)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---------------------------------------------------------------------- packaging
def test_import_and_register_need_no_starlette():
    code = textwrap.dedent(
        """
        import argparse, sys
        sys.modules["starlette"] = None   # make `import starlette` fail
        sys.modules["uvicorn"] = None
        import keyatten_lite, keyatten_lite.serve
        from keyatten_lite.serve import cli
        parser = argparse.ArgumentParser(prog="keyatten-lite")
        cli.register(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["serve", "--port", "0", "--max-batch", "1"])
        assert args.max_batch == 1 and args.host == "127.0.0.1"
        sys.exit(args.func(args))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'keyatten-lite[serve]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_config_is_validated():
    with pytest.raises(InvalidArgumentError, match="max_texts"):
        ServeConfig(max_texts=10, max_queue=5).validated()
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        ServeConfig(max_batch=0).validated()
    with pytest.raises(InvalidArgumentError, match="max_wait_ms"):
        ServeConfig(max_wait_ms=-1).validated()


def test_detect_language_matches_the_cli_rule():
    assert detect_language("自然语言处理是人工智能的重要方向") == "zh"
    assert detect_language("Graph neural networks") == "en"
    assert detect_language("使用 BERT 模型 and GPU training now") == "en"  # 4 ideographs < 5 Latin words
    assert detect_language("") == "en"


# ---------------------------------------------------------------------- the real English bundle
def _home() -> Path:
    home = os.environ.get("KEYATTEN_LITE_HOME")
    return Path(home) if home else Path.home() / ".cache" / "keyatten-lite"


@pytest.mark.slow
def test_real_english_bundle_matches_the_library():
    bundle = _home() / "bundles" / "minilm-l6-en" / "bundle.json"
    if not bundle.exists():
        pytest.skip(f"default English bundle not built at {bundle.parent} (run `keyatten-lite models build`)")
    from keyatten_lite import KeyAttenExtractor

    texts = [
        "Graph neural networks learn representations from graph-structured data.",
        "Dynamic resource provisioning keeps the response time of web applications within the SLA.",
        "A fast algorithm for sparse matrix multiplication on parallel computers.",
    ]
    reference = KeyAttenExtractor(language="en", intra_op_threads=1)
    expected = [[[p, float(s)] for p, s in reference.extract_keywords(t, with_scores=True)] for t in texts]
    expected_k5 = [[p, float(s)] for p, s in reference.extract_keywords(texts[0], top_k=5, with_scores=True)]
    assert all(expected)

    from keyatten_lite.serve.app import default_extractor_factory

    app = create_app(ServeConfig(max_batch=8, threads=1), extractor_factory=default_extractor_factory(1))
    with Server(app) as srv:
        singles = [srv.post({"text": t}) for t in texts]
        batch = srv.post({"texts": texts, "language": "en"})
        k5 = srv.post({"text": texts[0], "top_k": 5})
    assert [s[0] for s in singles] == [200] * 3 and batch[0] == 200 and k5[0] == 200
    assert [s[1]["keywords"] for s in singles] == expected
    assert k5[1]["keywords"] == expected_k5
    for got, want in zip(batch[1]["results"], expected):  # one shared forward pass
        assert [p for p, _ in got["keywords"]] == [p for p, _ in want]
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for (_, a), (_, b) in zip(got["keywords"], want))
