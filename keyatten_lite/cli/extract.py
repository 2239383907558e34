"""`keyatten-lite extract` and `keyatten-lite idf fit`.

A JSONL run reads its input in blocks, extracts each block (grouped by language, in chunks of
``4 × batch_size`` documents) and writes the block's records in input order, so memory stays bounded
and a run that stops (a bad line with ``--on-error stop``, Ctrl-C) keeps every record extracted before.
"""

from __future__ import annotations

import argparse
import json
import sys

from keyatten_lite.cli.records import (
    LineWriter,
    Progress,
    RecordError,
    check_output_path,
    count_lines,
    iter_records,
    report_skipped,
)
from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError
from keyatten_lite.pipeline.inputs import BLOCK_RECORDS, CHUNK_BATCHES
from keyatten_lite.text.language import detect_language

LANGUAGES = ("zh", "en")


def record_language(record, forced: str | None, detect) -> str:
    lang = forced or record.data.get("lang") or detect(record.data["text"])
    if lang not in LANGUAGES:
        raise RecordError(f"line {record.line}: lang must be 'zh' or 'en', got {lang!r}")
    return lang


def output_record(record, keywords) -> dict:
    """One output line: exactly what every engine writes for an input record."""
    return {"id": record.data.get("id", record.index), "keywords": [[p, round(s, 6)] for p, s in keywords]}


def requested_variant(args: argparse.Namespace) -> str | None:
    """--int8 / --fp32, or None: the bundle's default variant (fp32 for compat)."""
    return "int8" if getattr(args, "int8", False) else "fp32" if getattr(args, "fp32", False) else None


class Extractors:
    """One extractor per language, made on first use with the command's options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._by_language: dict[str, object] = {}

    def __call__(self, lang: str):
        if lang not in self._by_language:
            from keyatten_lite.extractors.keyatten import KeyAttenExtractor

            args = self.args
            ex = KeyAttenExtractor(
                model=args.model, language=lang, variant=requested_variant(args), intra_op_threads=args.threads
            )
            if args.idf:
                ex.load_idf(args.idf)
            self._by_language[lang] = ex
        return self._by_language[lang]


def _print_single(args, result) -> None:
    if args.json:
        print(json.dumps([[p, round(s, 6)] for p, s in result], ensure_ascii=False))
    else:
        print(", ".join(p for p, _ in result))


def cmd_extract(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise InvalidArgumentError("--top-k must be >= 1")
    if args.batch_size < 1:
        raise InvalidArgumentError("--batch-size must be >= 1")
    if getattr(args, "engine", "local") == "ray":
        return _extract_with_ray(args)
    if args.address or args.actors:
        raise InvalidArgumentError("--address and --actors need --engine ray")
    extractor_for = Extractors(args)
    if args.text is not None or args.input is None:
        if args.text is not None and args.input:
            raise InvalidArgumentError("give either TEXT or -i FILE, not both")
        text = args.text if args.text is not None else sys.stdin.read()  # plain text on stdin: one document
        lang = args.lang or detect_language(text)
        _print_single(args, extractor_for(lang).extract_keywords(text, method=args.method, top_k=args.top_k, with_scores=True))
        return 0

    check_output_path(args.output)
    errors: list[RecordError] = []
    writer = LineWriter(args.output)
    progress = Progress(count_lines(args.input) if sys.stderr.isatty() else None, "extract")
    block: list = []
    try:
        try:
            for record in iter_records(args.input, errors, args.on_error):
                try:
                    record.lang = record_language(record, args.lang, detect_language)
                except RecordError as error:
                    if args.on_error == "stop":
                        raise
                    errors.append(error)
                    continue
                block.append(record)
                if len(block) >= BLOCK_RECORDS:
                    _extract_block(block, args, extractor_for, writer, progress)
                    block = []
        except RecordError:
            # Stop at the bad line, after extracting and writing every good record before it.
            _extract_block(block, args, extractor_for, writer, progress)
            raise
        _extract_block(block, args, extractor_for, writer, progress)
    finally:
        progress.close()
        writer.close()  # also on a stop or an interruption: the records done so far are kept
    report_skipped(errors)
    return 0


def _extract_block(block, args, extractor_for, writer: LineWriter, progress: Progress) -> None:
    results: dict[int, list] = {}
    by_lang: dict[str, list] = {}
    for position, record in enumerate(block):
        by_lang.setdefault(record.lang, []).append(position)
    step = max(args.batch_size * CHUNK_BATCHES, 1)
    try:
        for lang, positions in by_lang.items():
            ex = extractor_for(lang)
            for start in range(0, len(positions), step):
                chunk = positions[start : start + step]
                keywords = ex.extract_keywords_batch(
                    [block[p].data["text"] for p in chunk],
                    method=args.method,
                    top_k=args.top_k,
                    batch_size=args.batch_size,
                    with_scores=True,
                )
                results.update(zip(chunk, keywords))
                progress.advance(len(chunk))
    except BaseException:
        _write_done(block, results, writer, prefix_only=True)
        raise
    _write_done(block, results, writer)


def _write_done(block, results: dict, writer: LineWriter, *, prefix_only: bool = False) -> None:
    """Write the block's extracted records in input order (on an interruption, only the records before
    the first one not yet extracted, so the output stays an in-order prefix of the input)."""
    for position, record in enumerate(block):
        if position not in results:
            if prefix_only:
                return
            continue
        writer.write(output_record(record, results[position]))


def _extract_with_ray(args: argparse.Namespace) -> int:
    if args.input is None or args.input == "-" or args.text is not None:
        raise InvalidArgumentError("--engine ray reads files: give -i FILE|FOLDER|GLOB and -o OUTPUT_DIR")
    if args.output == "-":
        raise InvalidArgumentError("--engine ray writes part files: give -o OUTPUT_DIR")
    from keyatten_lite.distributed.ray_engine import ray_extract

    summary = ray_extract(
        args.input,
        args.output,
        address=args.address,
        method=args.method,
        top_k=args.top_k,
        model=args.model,
        lang=args.lang,
        idf_path=args.idf,
        int8=args.int8,
        variant=requested_variant(args),
        threads=args.threads,
        batch_size=args.batch_size,
        actors=args.actors,
    )
    print(f"{summary['records']} records, {summary['parts']} parts -> {args.output}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- idf
def cmd_idf_fit(args: argparse.Namespace) -> int:
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor
    from keyatten_lite.state.idf import IdfState

    check_output_path(args.output)
    if getattr(args, "engine", "local") == "ray":
        from keyatten_lite.distributed.ray_engine import ray_idf_fit

        state = ray_idf_fit(args.corpus, args.output, address=args.address, lang=args.lang, merge=args.merge)
        print(f"{state.doc_count} documents, {len(state.document_frequency)} keys -> {args.output}", file=sys.stderr)
        return 0
    merged = []
    for path in args.merge:
        try:
            merged.append(IdfState.load(path))
        except FileNotFoundError:
            raise InvalidArgumentError(f"{path}: no such IDF file") from None
    texts: list[str] = []
    errors: list[RecordError] = []
    for path in args.corpus:
        texts.extend(record.data["text"] for record in iter_records(path, errors, args.on_error))
    lang = args.lang or (detect_language(texts[0]) if texts else "en")
    # Segmentation only: the model bundle is opened only to learn whether it is a decoder.
    ex = KeyAttenExtractor(language=lang)
    ex.fit_idf(texts)
    state = ex.idf
    for other in merged:
        state = state.merge(other)
    state.save(args.output)
    report_skipped(errors)
    print(f"{state.doc_count} documents, {len(state.document_frequency)} keys -> {args.output}", file=sys.stderr)
    return 0


__all__ = ["KeyAttenLiteError", "cmd_extract", "cmd_idf_fit", "output_record", "record_language"]
