"""The `keyatten-lite` command line.

    keyatten-lite extract "自然语言处理是人工智能的重要方向"
    keyatten-lite extract -i docs.jsonl -o keywords.jsonl --method samrank_idf --idf idf.tsv
    cat docs.jsonl | keyatten-lite extract -i - > keywords.jsonl
    keyatten-lite idf fit corpus.jsonl -o idf.tsv
    keyatten-lite models build | list
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Iterator, TextIO

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """'zh' when the text has CJK ideographs and they are not swamped by Latin letters, else 'en'."""
    cjk = len(_CJK.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    return "zh" if cjk > 0 and cjk >= latin_words else "en"


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
    ex.add_argument("--int8", action="store_true", help="use the bundle's int8 graph")
    ex.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    ex.add_argument("--batch-size", type=int, default=16)
    ex.set_defaults(func=_cmd_extract)

    idf = sub.add_parser("idf", help="IDF statistics")
    idf_sub = idf.add_subparsers(dest="idf_command", metavar="ACTION")
    fit = idf_sub.add_parser("fit", help="count document frequencies over a JSONL corpus")
    fit.add_argument("corpus", nargs="+", help="JSONL files with a 'text' field")
    fit.add_argument("-o", "--output", required=True, help="IDF file to write (TSV, see docs/idf-format.md)")
    fit.add_argument("--lang", choices=["zh", "en"], help="language (default: detected from the first text)")
    fit.add_argument("--merge", action="append", default=[], help="existing IDF file to add to the counts")
    fit.set_defaults(func=_cmd_idf_fit)

    from keyatten_lite.cli import cache as cli_cache
    from keyatten_lite.cli import models as cli_models

    cli_models.register(sub)
    cli_cache.register(sub)
    try:
        from keyatten_lite.cli import eval as cli_eval
    except ImportError:  # the measurement harness is optional in stripped-down installs
        cli_eval = None
    if cli_eval is not None:
        cli_eval.register(sub)
    return parser


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


# ---------------------------------------------------------------------- extract
def _cmd_extract(args: argparse.Namespace) -> int:
    from keyatten_lite.errors import InvalidArgumentError

    if args.top_k < 1:
        raise InvalidArgumentError("--top-k must be >= 1")
    extractors: dict[str, object] = {}

    def extractor_for(lang: str):
        if lang not in extractors:
            from keyatten_lite.extractors.keyatten import KeyAttenExtractor

            ex = KeyAttenExtractor(
                model=args.model,
                language=lang,
                variant="int8" if args.int8 else "fp32",
                intra_op_threads=args.threads,
            )
            if args.idf:
                ex.load_idf(args.idf)
            extractors[lang] = ex
        return extractors[lang]

    if args.text is not None:
        if args.input:
            raise InvalidArgumentError("give either TEXT or -i FILE, not both")
        lang = args.lang or detect_language(args.text)
        result = extractor_for(lang).extract_keywords(
            args.text, method=args.method, top_k=args.top_k, with_scores=True
        )
        if args.json:
            print(json.dumps([[p, round(s, 6)] for p, s in result], ensure_ascii=False))
        else:
            print(", ".join(p for p, _ in result))
        return 0

    if args.input is None:
        # Plain text on stdin: one document.
        text = sys.stdin.read()
        lang = args.lang or detect_language(text)
        result = extractor_for(lang).extract_keywords(text, method=args.method, top_k=args.top_k, with_scores=True)
        if args.json:
            print(json.dumps([[p, round(s, 6)] for p, s in result], ensure_ascii=False))
        else:
            print(", ".join(p for p, _ in result))
        return 0

    records = list(_read_jsonl(sys.stdin if args.input == "-" else args.input))
    out = sys.stdout if args.output == "-" else None
    results: list = [None] * len(records)
    by_lang: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        lang = args.lang or rec.get("lang") or detect_language(rec["text"])
        by_lang.setdefault(lang, []).append(i)
    progress = _Progress(len(records))
    for lang, idx in by_lang.items():
        ex = extractor_for(lang)
        step = max(args.batch_size * 4, 1)
        for start in range(0, len(idx), step):
            chunk = idx[start : start + step]
            keywords = ex.extract_keywords_batch(
                [records[i]["text"] for i in chunk],
                method=args.method,
                top_k=args.top_k,
                batch_size=args.batch_size,
                with_scores=True,
            )
            for i, kws in zip(chunk, keywords):
                results[i] = kws
            progress.advance(len(chunk))
    progress.close()
    lines = [
        json.dumps({"id": rec.get("id", i), "keywords": [[p, round(s, 6)] for p, s in kws]}, ensure_ascii=False)
        for i, (rec, kws) in enumerate(zip(records, results))
    ]
    if out is not None:
        out.write("\n".join(lines) + ("\n" if lines else ""))
    else:
        _atomic_write_text(args.output, "\n".join(lines) + ("\n" if lines else ""))
    return 0


def _read_jsonl(source: str | TextIO) -> Iterator[dict]:
    from keyatten_lite.errors import InvalidArgumentError

    handle = open(source, encoding="utf-8") if isinstance(source, str) else source
    try:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgumentError(f"line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise InvalidArgumentError(f"line {lineno}: expected an object with a string 'text' field")
            yield rec
    finally:
        if isinstance(source, str):
            handle.close()


def _atomic_write_text(path: str, text: str) -> None:
    from keyatten_lite.state.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"), prefix=".keyatten-lite-")


class _Progress:
    """A one-line progress bar on stderr, shown only when stderr is a terminal and the input is long."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.enabled = total >= 50 and sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# ---------------------------------------------------------------------- idf
def _cmd_idf_fit(args: argparse.Namespace) -> int:
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor
    from keyatten_lite.state.idf import IdfState

    texts: list[str] = []
    for path in args.corpus:
        texts.extend(rec["text"] for rec in _read_jsonl(path))
    lang = args.lang or (detect_language(texts[0]) if texts else "en")
    # Segmentation only: the model bundle is never opened for IDF counting.
    ex = KeyAttenExtractor(language=lang)
    ex.fit_idf(texts)
    state = ex.idf
    for other in args.merge:
        state = state.merge(IdfState.load(other))
    state.save(args.output)
    print(f"{state.doc_count} documents, {len(state.document_frequency)} keys -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
