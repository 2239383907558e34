"""The Starlette application: routes, request limits, JSON errors, metrics, lifespan (docs/serve.md).

    from keyatten_lite.serve.app import create_app
    app = create_app(ServeConfig(max_batch=16), extractor_factory=my_factory)   # any ASGI server

Every answer is JSON (except ``/metrics``). Errors are ``{"error": message, ...}``; a request refused
by a limit also carries ``"limit": <name>`` and the limit's value under that name. Status codes:
400 malformed JSON, 413 body too large, 422 a well-formed request that cannot be honoured (wrong
types, unknown method, profile or language, bad top_k, too many texts, a text too long, an argument
the extractor rejects), 503 + ``Retry-After`` queue full or shutting down, 500 anything else
(logged; the server keeps running).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError

from keyatten_lite.serve.config import (
    DEFAULT_METHOD,
    DEFAULT_TOP_K,
    LANGUAGES,
    MAX_TOP_K,
    PROFILES,
    ServeConfig,
    detect_language,
)
from keyatten_lite.serve.batcher import GroupKey, MicroBatcher, QueueFullError, ShuttingDownError
from keyatten_lite.serve.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("keyatten_lite.serve")

ROUTE_PATHS = ("/extract", "/health", "/metrics", "/openapi.json")
REQUEST_FIELDS = ("text", "texts", "method", "top_k", "profile", "language")


class ApiError(Exception):
    """An error answer: HTTP status, JSON body, optional headers."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def _limit_error(status: int, limit: str, value: int, error: str, **extra: Any) -> ApiError:
    return ApiError(status, error, limit=limit, **{limit: value}, **extra)


def default_extractor_factory(threads: int | None = None) -> Callable[[str, str], Any]:
    """(language, profile) -> ``KeyAttenExtractor`` on that language's default bundle."""

    def make(language: str, profile: str):
        from keyatten_lite import KeyAttenExtractor

        return KeyAttenExtractor(language=language, profile=profile, intra_op_threads=threads)

    return make


def method_names() -> tuple[str, ...]:
    """Methods of the attention series, with and without ``_idf`` (from the public catalog)."""
    try:
        from keyatten_lite import get_method_catalog

        series = get_method_catalog()["attention_series"]
        return tuple(series["methods"]) + tuple(series["idf_methods"])
    except Exception:  # the catalog moved or changed shape: let the extractor judge (422 on error)
        return ()


# ---------------------------------------------------------------------- request parsing
async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _limit_error(413, "max_body_bytes", limit, f"request body of {int(declared)} bytes is over the limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _limit_error(413, "max_body_bytes", limit, "request body is over the limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "malformed JSON: the request body is empty")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"malformed JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None


def _parse_request(payload: Any, config: ServeConfig, methods: tuple[str, ...]):
    """-> (single, texts, method, top_k, profile, language or None); raises ApiError(422)."""
    if not isinstance(payload, dict):
        raise ApiError(422, f"the body must be a JSON object, got {type(payload).__name__}")
    unknown = sorted(k for k in payload if k not in REQUEST_FIELDS)
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(map(str, unknown))}", field=unknown[0], allowed=list(REQUEST_FIELDS))
    if ("text" in payload) == ("texts" in payload):
        raise ApiError(422, "give exactly one of 'text' (a string) or 'texts' (a list of strings)", field="text")
    single = "text" in payload
    if single:
        if not isinstance(payload["text"], str):
            raise ApiError(422, f"'text' must be a string, got {_json_type(payload['text'])}", field="text")
        texts = [payload["text"]]
    else:
        texts = payload["texts"]
        if not isinstance(texts, list):
            raise ApiError(422, f"'texts' must be a list of strings, got {_json_type(texts)}", field="texts")
        if len(texts) > config.max_texts:
            raise _limit_error(422, "max_texts", config.max_texts, f"{len(texts)} texts in one request is over the limit", count=len(texts))
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ApiError(422, f"texts[{i}] must be a string, got {_json_type(t)}", field="texts", index=i)
    for i, t in enumerate(texts):
        if len(t) > config.max_chars:
            raise _limit_error(
                422, "max_chars", config.max_chars, f"text {'' if single else f'[{i}] '}has {len(t)} characters, over the limit",
                index=i, length=len(t),
            )

    method = payload.get("method", DEFAULT_METHOD)
    if not isinstance(method, str):
        raise ApiError(422, f"'method' must be a string, got {_json_type(method)}", field="method")
    if methods and method not in methods:
        raise ApiError(422, f"unknown method {method!r}", field="method", allowed=list(methods))
    top_k = payload.get("top_k", DEFAULT_TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise ApiError(422, f"'top_k' must be an integer, got {_json_type(top_k)}", field="top_k")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ApiError(422, f"'top_k' must be between 1 and {MAX_TOP_K}, got {top_k}", field="top_k")
    profile = payload.get("profile", "default")
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ApiError(422, f"unknown profile {profile!r}", field="profile", allowed=list(PROFILES))
    language = payload.get("language")
    if language is not None and (not isinstance(language, str) or language not in LANGUAGES):
        raise ApiError(422, f"unknown language {language!r}", field="language", allowed=list(LANGUAGES))
    return single, texts, method, top_k, profile, language


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------- metrics middleware
class _MetricsMiddleware:
    """Counts every HTTP answer by path (known routes, else "other") and status, and times it."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        label = path if path in ROUTE_PATHS else "other"
        status: list[int | None] = [None]
        started = time.perf_counter()

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if status[0] is None:
                status[0] = 500
            raise
        finally:
            # 499 (nginx's "client closed request"): cancelled before any answer was started.
            self.metrics.observe_request(label, status[0] if status[0] is not None else 499, time.perf_counter() - started)


# ---------------------------------------------------------------------- the app
def create_app(
    config: ServeConfig | None = None,
    *,
    extractor_factory: Callable[[str, str], Any] | None = None,
    preload: tuple[tuple[str, str], ...] = (),
    warmup_text: str | None = "Keyword extraction warm-up.",
) -> Starlette:
    """The ASGI app. ``extractor_factory(language, profile)`` returns an object with
    ``extract_keywords_batch(texts, method=, top_k=, with_scores=True)``; the default builds a
    ``KeyAttenExtractor`` on the language's default bundle. ``preload`` lists (language, profile)
    pairs created (and warmed up with ``warmup_text``) before the server accepts requests."""
    config = (config or ServeConfig()).validated()
    factory = extractor_factory or default_extractor_factory(config.threads)
    metrics = Metrics()
    methods = method_names()
    state: dict[str, Any] = {"batcher": None, "status": "starting"}
    openapi = openapi_schema(config, methods)

    def batcher() -> MicroBatcher | None:
        return state["batcher"]

    metrics.add_gauge("keyatten_queue_depth", "Documents waiting for a model call.", lambda: batcher().queue_depth if batcher() else 0)
    metrics.add_gauge("keyatten_in_flight_documents", "Documents in the model call running now.", lambda: batcher().in_flight if batcher() else 0)
    metrics.add_gauge("keyatten_max_queue", "Configured max_queue (documents).", lambda: config.max_queue)
    metrics.add_gauge("keyatten_max_batch", "Configured max_batch (documents).", lambda: config.max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        b = MicroBatcher(
            factory,
            max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            on_batch=metrics.observe_batch,
            length_buckets=config.length_buckets,
            overtake_docs=config.overtake_docs,
        )
        await b.start()
        state["batcher"] = b
        if preload:
            await b.preload(preload, warmup_text)
        state["status"] = "ok"
        log.info(
            "keyatten-lite serve ready (max_batch=%d, max_wait_ms=%g, length_buckets=%s, overtake_docs=%g, max_queue=%d)",
            config.max_batch, config.max_wait_ms, config.length_buckets, config.overtake_docs, config.max_queue,
        )
        try:
            yield
        finally:
            # uvicorn has stopped accepting connections and waited for open requests; whatever is
            # still queued is processed before the worker thread goes.
            state["status"] = "draining"
            failed = await b.stop(timeout=config.drain_timeout_s)
            state["status"] = "stopped"
            log.info("keyatten-lite serve stopped (%d documents processed, %d failed at shutdown)", b.documents_done, failed)

    async def extract(request: Request) -> Response:
        try:
            b = batcher()
            if b is None or state["status"] != "ok":
                raise ApiError(503, "the server is not ready", headers={"Retry-After": "1"}, state=state["status"])
            body = await _read_body(request, config.max_body_bytes)
            payload = _parse_json(body)
            single, texts, method, top_k, profile, language = _parse_request(payload, config, methods)
            items = [(GroupKey(language or detect_language(t), profile, method, top_k), t) for t in texts]
            try:
                results = await b.submit(items)
            except QueueFullError as exc:
                raise _limit_error(
                    503, "max_queue", exc.max_queue, "the queue is full, retry later",
                    headers={"Retry-After": str(exc.retry_after)}, queued=exc.queued, requested=exc.requested,
                ) from None
            except ShuttingDownError as exc:
                raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
            except InvalidArgumentError as exc:
                raise ApiError(422, str(exc), type=type(exc).__name__) from None
            except KeyAttenLiteError as exc:
                log.error("extractor error: %s: %s", type(exc).__name__, exc)
                raise ApiError(500, str(exc), type=type(exc).__name__) from None
            if single:
                return JSONResponse({"keywords": results[0]})
            return JSONResponse({"results": [{"keywords": r} for r in results]})
        except ApiError as exc:
            if "limit" in exc.body:
                metrics.reject(exc.body["limit"])
            return exc.response()
        except Exception as exc:
            log.exception("unexpected error in POST /extract")
            return JSONResponse({"error": "internal server error", "type": type(exc).__name__}, status_code=500)

    async def health(request: Request) -> Response:
        b = batcher()
        body = {
            "status": state["status"],
            "version": _version(),
            "extractors": b.loaded_extractors() if b else [],
            "queue_depth": b.queue_depth if b else 0,
            "in_flight": b.in_flight if b else 0,
            "documents": b.documents_done if b else 0,
            "model_calls": b.model_calls if b else 0,
            "config": config.as_dict(),
        }
        return JSONResponse(body, status_code=200 if state["status"] == "ok" else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def openapi_endpoint(request: Request) -> Response:
        return JSONResponse(openapi)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse({"error": "internal server error", "type": type(exc).__name__}, status_code=500)

    app = Starlette(
        routes=[
            Route("/extract", extract, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        ],
        middleware=[Middleware(_MetricsMiddleware, metrics=metrics)],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.keyatten_metrics = metrics
    app.state.keyatten_config = config
    app.state.keyatten_batcher = batcher  # a callable: the batcher exists only while serving
    return app


def _version() -> str:
    try:
        from keyatten_lite import __version__

        return __version__
    except Exception:
        return "unknown"


# ---------------------------------------------------------------------- OpenAPI
def openapi_schema(config: ServeConfig, methods: tuple[str, ...] = ()) -> dict:
    """A hand-written OpenAPI 3.1 description of the endpoints, with this server's limits."""
    keywords = {
        "type": "array",
        "description": "Top keywords, best first: [phrase, score] pairs.",
        "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": ["number", "null"]}], "minItems": 2, "maxItems": 2},
    }
    method_schema: dict = {"type": "string", "default": DEFAULT_METHOD}
    if methods:
        method_schema["enum"] = list(methods)
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "limit": {"type": "string", "enum": ["max_body_bytes", "max_texts", "max_chars", "max_queue"], "description": "The limit that refused the request; its value is under the same name."},
            "field": {"type": "string", "description": "The request field at fault."},
        },
    }

    def err(description: str) -> dict:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyatten-lite serve",
            "version": _version(),
            "description": "Attention-based keyword extraction over HTTP, with micro-batching (docs/serve.md).",
        },
        "paths": {
            "/extract": {
                "post": {
                    "summary": "Keywords of one text or of a list of texts",
                    "requestBody": {
                        "required": True,
                        "description": f"At most {config.max_body_bytes} bytes (max_body_bytes).",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExtractRequest"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Keywords ({'keywords'} for 'text', {'results'} for 'texts').",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"$ref": "#/components/schemas/ExtractResponse"},
                                {"$ref": "#/components/schemas/BatchResponse"},
                            ]}}},
                        },
                        "400": err("Malformed JSON."),
                        "413": err("Body over max_body_bytes."),
                        "422": err("Wrong types, unknown method/profile/language, bad top_k, over max_texts or max_chars, or an argument the extractor rejects."),
                        "500": err("Internal or model error."),
                        "503": {**err("Queue full (max_queue) or shutting down."), "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}},
                    },
                }
            },
            "/health": {"get": {"summary": "Readiness", "responses": {
                "200": {"description": "Ready: {'status': 'ok', ...}", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}},
                "503": {"description": "Starting or draining."},
            }}},
            "/metrics": {"get": {"summary": "Prometheus text exposition", "responses": {
                "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
            }}},
            "/openapi.json": {"get": {"summary": "This schema", "responses": {
                "200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}},
            }}},
        },
        "components": {
            "schemas": {
                "ExtractRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "Exactly one of 'text' or 'texts'.",
                    "properties": {
                        "text": {"type": "string", "maxLength": config.max_chars},
                        "texts": {"type": "array", "maxItems": config.max_texts, "items": {"type": "string", "maxLength": config.max_chars}},
                        "method": method_schema,
                        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": DEFAULT_TOP_K},
                        "profile": {"type": "string", "enum": list(PROFILES), "default": "default"},
                        "language": {"type": "string", "enum": list(LANGUAGES), "description": "Detected per text when absent."},
                    },
                    "oneOf": [{"required": ["text"]}, {"required": ["texts"]}],
                },
                "ExtractResponse": {"type": "object", "required": ["keywords"], "properties": {"keywords": keywords}},
                "BatchResponse": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/ExtractResponse"}}},
                },
                "Error": error,
            }
        },
    }
