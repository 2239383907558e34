"""`keyatten-lite serve`: run the HTTP service under uvicorn (docs/serve.md).

Wire it into the main parser with ``from keyatten_lite.serve import cli as serve_cli;
serve_cli.register(subparsers)``; the command's ``func`` is :func:`run`. Starlette and uvicorn are
imported only when the command runs, so the rest of the CLI works without the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from keyatten_lite.serve.config import LANGUAGES, PROFILES, ServeConfig

INSTALL_HINT = "keyatten-lite serve needs Starlette and uvicorn: pip install 'keyatten-lite[serve]'"


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` command to the top-level ``keyatten-lite`` subparsers object."""
    d = ServeConfig()
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP keyword-extraction service (POST /extract, micro-batched)",
        description="HTTP service with micro-batching: POST /extract, GET /health, /metrics, /openapi.json.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help=f"documents per micro-batch; 1 = batching off (default {d.max_batch})")
    p.add_argument(
        "--max-wait-ms", type=float, default=d.max_wait_ms,
        help=f"how long the first document after an idle spell waits for company (default {d.max_wait_ms:g}: "
        "none; under load batches form while the model runs)",
    )
    p.add_argument(
        "--no-length-buckets", dest="length_buckets", action="store_false",
        help="batch queued documents in arrival order instead of by similar length (slower: padding)",
    )
    p.add_argument(
        "--overtake-docs", type=float, default=d.overtake_docs,
        help="a call takes only documents that arrived within this many documents' model time after its "
        f"oldest one: bounds how long a document can be overtaken (default {d.overtake_docs:g})",
    )
    p.add_argument("--max-queue", type=int, default=d.max_queue, help=f"documents waiting before 503 + Retry-After (default {d.max_queue})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help=f"request body limit, 413 beyond (default {d.max_body_bytes})")
    p.add_argument("--max-texts", type=int, default=d.max_texts, help=f"texts per request, 422 beyond (default {d.max_texts})")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help=f"characters per text, 422 beyond (default {d.max_chars})")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: onnxruntime's choice)")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout_s, help=f"seconds shutdown waits for queued documents (default {d.drain_timeout_s:g})")
    p.add_argument(
        "--preload", default="",
        help="comma-separated LANG[/PROFILE] extractors to load before accepting requests, e.g. 'en,zh' (default: lazily)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=run)
    return p


def _preload_keys(spec: str) -> tuple[tuple[str, str], ...]:
    from keyatten_lite.errors import InvalidArgumentError

    keys = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        lang, _, profile = part.partition("/")
        profile = profile or "default"
        if lang not in LANGUAGES or profile not in PROFILES:
            raise InvalidArgumentError(f"--preload: {part!r} is not LANG[/PROFILE] with LANG in {LANGUAGES}, PROFILE in {PROFILES}")
        keys.append((lang, profile))
    return tuple(dict.fromkeys(keys))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    from keyatten_lite.serve.app import create_app

    config = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        length_buckets=args.length_buckets,
        overtake_docs=args.overtake_docs,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        threads=args.threads,
        drain_timeout_s=args.drain_timeout,
    ).validated()  # InvalidArgumentError: the main CLI prints it and exits 2
    preload = _preload_keys(args.preload)
    if not _is_loopback(args.host):
        print(
            f"keyatten-lite serve: warning: listening on {args.host}; the service has no authentication or TLS",
            file=sys.stderr,
        )
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    app = create_app(config, preload=preload)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
        lifespan="on",
        # After SIGTERM/SIGINT uvicorn stops accepting and waits this long for open requests; then
        # the lifespan shutdown drains whatever is still queued (up to --drain-timeout).
        timeout_graceful_shutdown=max(1, int(config.drain_timeout_s)),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m keyatten_lite.serve.cli``: the serve command on its own (until it is wired in)."""
    parser = argparse.ArgumentParser(prog="keyatten-lite")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    from keyatten_lite.errors import KeyAttenLiteError

    try:
        return int(args.func(args) or 0)
    except KeyAttenLiteError as exc:
        print(f"keyatten-lite: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
