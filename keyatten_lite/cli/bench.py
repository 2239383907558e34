"""`keyatten-lite bench` and `keyatten-lite bench-report`: the command line of evaluation/bench.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.evaluation.bench import (
    bench_markdown,
    plan_steps,
    plot_bench,
    run_worker,
    speed_report,
    step_label,
    summarise,
)


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from keyatten_lite.state.atomic import atomic_write_bytes

    results = []
    for path in args.results:
        try:
            results.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise InvalidArgumentError(f"{path}: not a bench result ({error})") from error
        if "summary" not in results[-1]:
            raise InvalidArgumentError(f"{path}: not a bench result (no summary)")
    text = speed_report(results)
    if args.output:
        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
    else:
        print(text)
    return 0


def _csv(text: str, cast=str) -> list:
    try:
        values = [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise InvalidArgumentError(f"cannot read the list {text!r}") from error
    if not values:
        raise InvalidArgumentError(f"empty list {text!r}")
    return values


def _cmd_bench(args: argparse.Namespace) -> int:
    from keyatten_lite.evaluation.provenance import machine_info, now_iso, package_versions, write_outputs

    if not Path(args.corpus).exists():
        raise InvalidArgumentError(f"{args.corpus}: no such corpus")
    threads = _csv(args.threads, int)
    if any(t < 1 for t in threads):
        raise InvalidArgumentError("--threads values must be >= 1")
    config = {
        "corpus": str(Path(args.corpus).resolve()), "limit": args.limit, "bundles": args.bundle or ["minilm-l6-en"],
        "variants": _csv(args.variants), "methods": _csv(args.methods), "threads": threads,
        "keyatten_model": args.keyatten_model, "batch_size": args.batch_size, "single_docs": args.single_docs,
        "repeats": args.repeats, "cold": not args.no_cold,
    }
    steps = plan_steps(
        corpus=config["corpus"], limit=args.limit, bundles=config["bundles"], variants=config["variants"],
        methods=config["methods"], threads=threads, keyatten_model=args.keyatten_model, batch_size=args.batch_size,
        single_docs=args.single_docs, repeats=args.repeats, cold=config["cold"],
    )
    records = []
    for index, step in enumerate(steps, start=1):
        print(f"[bench] {index}/{len(steps)} {step['step']}: {step_label(step)} {step['method']} "
              f"threads={step['threads']}", file=sys.stderr, flush=True)
        outcome = run_worker(step, timeout_s=args.step_timeout)
        if not outcome.get("ok"):
            print(f"[bench]   failed: {outcome.get('error')}", file=sys.stderr)
        records.append({"config": step, "result": outcome})
    result = {"date": now_iso(), "machine": machine_info(), "versions": package_versions(), "config": config,
              "records": records, "summary": summarise(records)}
    markdown = bench_markdown(result)
    md_path = write_outputs(result, markdown, args.output, args.markdown)
    print(markdown)
    print(f"wrote {args.output} and {md_path}", file=sys.stderr)
    if args.plot:
        message = plot_bench(result, args.plot)
        print(message or f"wrote {args.plot}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `bench` and `bench-report` to the keyatten-lite parser (called from cli/eval.py)."""
    bench = subparsers.add_parser(
        "bench", help="speed and memory of keyatten-lite (and keyatten 0.3.1 on torch) on a corpus",
        description="Each step runs in a fresh subprocess; steps are interleaved per repeat and thread count.",
    )
    bench.add_argument("corpus", help="JSONL corpus (or docsutf8/keys folder)")
    bench.add_argument("--limit", type=int, default=100, help="documents (default %(default)s)")
    bench.add_argument("--bundle", action="append", help="bundle name or directory (repeat; default minilm-l6-en)")
    bench.add_argument("--variants", default="fp32,int8", help="bundle variants (default %(default)s)")
    bench.add_argument("--methods", default="received_attn", help="comma-separated methods (default %(default)s)")
    bench.add_argument("--threads", default="1,2", help="thread counts (default %(default)s)")
    bench.add_argument("--keyatten-model", help="HF model directory: also time keyatten 0.3.1 on torch with it")
    bench.add_argument("--batch-size", type=int, default=16)
    bench.add_argument("--single-docs", type=int, default=50, help="documents timed one call at a time")
    bench.add_argument("--repeats", type=int, default=1)
    bench.add_argument("--no-cold", action="store_true", help="skip the cold-start measurements")
    bench.add_argument("--step-timeout", type=float, default=1800.0, help="seconds before a step is abandoned")
    bench.add_argument("-o", "--output", default="bench-results.json")
    bench.add_argument("--markdown", help="markdown file (default: the JSON path with .md)")
    bench.add_argument("--plot", help="PNG chart of throughput and cold start (needs matplotlib)")
    bench.set_defaults(func=_cmd_bench)

    report = subparsers.add_parser(
        "bench-report", help="one markdown page (with ratios against keyatten 0.3.1) from bench JSON results"
    )
    report.add_argument("results", nargs="+", help="JSON files written by keyatten-lite bench")
    report.add_argument("-o", "--output", help="markdown file (default: stdout)")
    report.set_defaults(func=_cmd_bench_report)
