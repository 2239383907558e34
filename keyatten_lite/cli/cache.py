"""`keyatten-lite cache info|prune|clear`: inspect and maintain the disk cache (docs/cache.md)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    """Add the ``cache`` command to the top-level ``keyatten-lite`` parser."""
    cache = subparsers.add_parser("cache", help="inspect, prune or clear the extraction cache")
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    for name, help_text in (
        ("info", "print entry counts and sizes as JSON"),
        ("prune", "delete the least recently used entries until the cache fits --max-bytes"),
        ("clear", "delete every cache entry"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--cache-dir", default="cache", help="the extractor's cache_dir (default ./cache)")
        if name != "clear":
            action.add_argument("--max-bytes", type=int, default=None, help="size bound (default 256 MiB)")
        action.set_defaults(func=_run, cache_action=name)
    cache.set_defaults(func=lambda args: _usage(cache))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _run(args: argparse.Namespace) -> int:
    from keyatten_lite.state.cache import DEFAULT_MAX_BYTES, DiskCache
    from keyatten_lite.errors import InvalidArgumentError

    max_bytes = getattr(args, "max_bytes", None)
    if max_bytes is not None and max_bytes < 0:
        raise InvalidArgumentError("--max-bytes must be >= 0")
    cache = DiskCache(args.cache_dir, max(max_bytes, 1) if max_bytes is not None else DEFAULT_MAX_BYTES)
    if args.cache_action == "info":
        report = cache.info()
    elif args.cache_action == "prune":
        report = cache.prune(max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES)
    else:
        report = {"removed": cache.clear()}
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
