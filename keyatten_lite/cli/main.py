"""The `keyatten-lite` command line.

    keyatten-lite extract "自然语言处理是人工智能的重要方向"
    keyatten-lite extract -i docs.jsonl -o keywords.jsonl --method samrank_idf --idf idf.tsv
    cat docs.jsonl | keyatten-lite extract -i - > keywords.jsonl
    keyatten-lite idf fit corpus.jsonl -o idf.tsv
    keyatten-lite models build | list
"""

from __future__ import annotations

import argparse
import sys

from keyatten_lite.cli.records import ON_ERROR
from keyatten_lite.text.language import detect_language

__all__ = ["build_parser", "detect_language", "main"]



def build_parser() -> argparse.ArgumentParser:
    """The whole command line (every sub-command registered)."""
    parser = argparse.ArgumentParser(prog="keyatten-lite", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ex = sub.add_parser("extract", help="extract keywords from text, a JSONL file or stdin")
    ex.add_argument("text", nargs="?", help="the text (omit to read -i FILE, or stdin)")
    ex.add_argument("-i", "--input", help="JSONL file of {'id', 'text'} records ('-' = stdin)")
    ex.add_argument("-o", "--output", default="-", help="where JSONL results go (default stdout)")
    ex.add_argument("--lang", choices=["zh", "en"], help="language (default: detected per text)")
    ex.add_argument("-m", "--method", default="received_attn")
    ex.add_argument("-k", "--top-k", type=int, default=10)
    ex.add_argument("--model", help="bundle directory or default bundle name (default: per language)")
    ex.add_argument("--idf", help="IDF file (keyatten-lite idf fit) for the _idf methods")
    ex.add_argument("--json", action="store_true", help="print [[phrase, score], ...] for a single text")
    variant = ex.add_mutually_exclusive_group()
    variant.add_argument("--int8", action="store_true", help="use the bundle's int8 graph")
    variant.add_argument("--fp32", action="store_true", help="use the bundle's fp32 graph (default: the bundle's default variant)")
    ex.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ex.add_argument("--batch-size", type=int, default=16)
    ex.add_argument("--on-error", choices=ON_ERROR, default="stop",
                    help="a bad input line: stop there (keeping what was extracted) or skip it and report it at the end")
    _engine_options(ex, "-o is then a folder of JSONL part files")
    ex.set_defaults(func=_run("cmd_extract"))

    idf = sub.add_parser("idf", help="IDF statistics")
    idf_sub = idf.add_subparsers(dest="idf_command", metavar="ACTION")
    fit = idf_sub.add_parser("fit", help="count document frequencies over a JSONL corpus")
    fit.add_argument("corpus", nargs="*", help="JSONL files with a 'text' field")
    fit.add_argument("-i", "--input", action="append", default=[], help="more input (repeatable; with --engine ray "
                     "also Parquet files, folders and globs)")
    fit.add_argument("-o", "--output", required=True, help="IDF file to write (TSV, see docs/idf-format.md)")
    fit.add_argument("--lang", choices=["zh", "en"], help="language (default: detected from the first text)")
    fit.add_argument("--merge", action="append", default=[], help="existing IDF file to add to the counts")
    fit.add_argument("--on-error", choices=ON_ERROR, default="stop", help="a bad input line: stop, or skip and report it")
    _engine_options(fit, "the counts are merged into one file, the same as one process writes")
    fit.set_defaults(func=_run("cmd_idf_fit"))

    from keyatten_lite.cli import cache as cli_cache
    from keyatten_lite.cli import models as cli_models

    cli_models.register(sub)
    cli_cache.register(sub)
    from keyatten_lite.serve import cli as serve_cli  # light: starlette and uvicorn load when it runs

    serve_cli.register(sub)
    try:
        from keyatten_lite.cli import eval as cli_eval
    except ImportError:  # the measurement harness is optional in stripped-down installs
        cli_eval = None
    if cli_eval is not None:
        cli_eval.register(sub)
    return parser


def _run(name: str):
    """A sub-command in cli/extract.py, imported when it runs (the parser stays cheap to build)."""

    def run(args: argparse.Namespace) -> int:
        from keyatten_lite.cli import extract

        if name == "cmd_idf_fit":
            args.corpus = list(args.corpus) + list(args.input)
            if not args.corpus:
                from keyatten_lite.errors import InvalidArgumentError

                raise InvalidArgumentError("idf fit needs input: CORPUS files or -i INPUT")
        return getattr(extract, name)(args)

    return run


def _engine_options(parser: argparse.ArgumentParser, note: str) -> None:
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help=f"local: this process; ray: Ray Data, on this machine or a cluster ({note}; docs/scale.md)")
    parser.add_argument("--address", help="with --engine ray: the cluster to join (default: start Ray on this machine)")
    parser.add_argument("--actors", type=int, default=None, help="with --engine ray: extractor actors (default: by CPUs)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from keyatten_lite.errors import KeyAttenLiteError

    try:
        return int(args.func(args) or 0)
    except KeyAttenLiteError as exc:
        print(f"keyatten-lite: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("keyatten-lite: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a vanished file: one line naming it, not a traceback
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"keyatten-lite: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
