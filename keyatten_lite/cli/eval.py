"""`keyatten-lite eval` (keyphrase quality) and `keyatten-lite bench` (speed and memory).

    keyatten-lite eval ../shared/data/en/inspec.jsonl --split inspec-first500 \\
        --system yake --system tfidf --system lite:minilm-l6-en:samrank_idf -o results/inspec.json
    keyatten-lite bench ../shared/data/en/inspec.jsonl --limit 200 --bundle minilm-l6-en \\
        --keyatten-model /path/to/hf_dir -o results/bench-inspec.json

Both write a JSON file (everything measured, the configuration, machine and versions) and a markdown
table next to it (same name, .md). See docs/results/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from keyatten_lite.errors import InvalidArgumentError

def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise InvalidArgumentError(f"--ks must be comma-separated positive integers, got {text!r}") from error
    if not ks or ks[0] < 1:
        raise InvalidArgumentError(f"--ks must be comma-separated positive integers, got {text!r}")
    return ks


def _cmd_eval(args: argparse.Namespace) -> int:
    from keyatten_lite.evaluation.provenance import write_outputs
    from keyatten_lite.evaluation.run import evaluation_markdown, plot_results, read_idf_corpus, run_evaluation
    from keyatten_lite.evaluation.baselines import RunContext
    from keyatten_lite.evaluation.metrics import NAMED_SPLITS, read_dataset, read_ids_file, select_documents

    ks = _parse_ks(args.ks)
    if args.top_n < max(ks):
        raise InvalidArgumentError(f"--top-n ({args.top_n}) must be at least the largest k ({max(ks)})")
    documents = read_dataset(args.dataset, args.lang)
    ids = read_ids_file(args.ids_file) if args.ids_file else None
    documents = select_documents(documents, split=args.split, ids=ids, offset=args.offset, limit=args.limit)
    context = RunContext(threads=args.threads, batch_size=args.batch_size, top_n=args.top_n)
    if args.idf_corpus:
        context.idf_texts = read_idf_corpus(args.idf_corpus)
        context.idf_source = args.idf_corpus
    from keyatten_lite.cli.records import Progress

    specs = args.system or ["yake", "tfidf"]
    bar = Progress(len(specs), "eval", unit="system")
    # With a bar on the terminal the per-system lines would break it; without one they are the log.
    log = (lambda message: None) if args.quiet or bar.active else (lambda message: print(message, file=sys.stderr))
    try:
        result = run_evaluation(
            documents, specs, context=context, ks=ks, reference=args.reference,
            n_resamples=args.bootstrap_resamples, seed=args.seed, log=log, progress=bar.advance,
        )
    finally:
        bar.close()
    selection = []
    if args.split:
        selection.append(f"split {args.split} ({NAMED_SPLITS[args.split]})")
    if args.ids_file:
        selection.append(f"ids from {args.ids_file}")
    if args.offset or args.limit is not None:
        selection.append(f"offset {args.offset}, limit {args.limit}")
    result["config"] = {
        "dataset": str(args.dataset), "selection": "; ".join(selection) or "all documents",
        "document_ids": [d.id for d in documents], "ks": ks, "top_n": args.top_n,
        "idf_corpus": args.idf_corpus, "threads": args.threads, "batch_size": args.batch_size,
        "bootstrap": {"n_resamples": args.bootstrap_resamples, "seed": args.seed, "confidence": 0.95},
        "command": "keyatten-lite eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]),
    }
    predictions = result.pop("predictions")
    if args.predictions_out:
        with open(args.predictions_out, "w", encoding="utf-8") as handle:
            for spec, per_doc in predictions.items():
                for document, phrases in zip(documents, per_doc):
                    handle.write(json.dumps({"system": spec, "id": document.id, "keywords": phrases}, ensure_ascii=False) + "\n")
    markdown = evaluation_markdown(result)
    md_path = write_outputs(result, markdown, args.output, args.markdown)
    if args.plot:
        message = plot_results(result, args.plot)
        if message:
            print(message, file=sys.stderr)
    if not args.quiet:
        print(markdown)
        print(f"wrote {args.output} and {md_path}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    """Add the `eval` and `bench` sub-commands to the keyatten-lite parser."""
    from keyatten_lite.evaluation.metrics import NAMED_SPLITS

    ev = subparsers.add_parser(
        "eval", help="keyphrase quality (P/R/F1@k) of keyatten-lite and baselines on a dataset",
        description="Score systems on a keyphrase dataset (JSONL {id, lang, text, keywords} or a docsutf8/keys folder). "
        "System specs: lite:<bundle>:<method>[:int8], lite-default:<bundle>:<method>[:int8], "
        "lite-bio:<bio_bundle>:<method>[:compat], yake, yake-jieba, tfidf, tfidf-cands[:<bundle>], keybert, "
        "jieba-textrank, keyatten:<hf_model_dir>:<method>.",
    )
    ev.add_argument("dataset", help="JSONL file or folder with docsutf8/ and keys/")
    ev.add_argument("-s", "--system", action="append", help="system spec (repeat; default: yake and tfidf)")
    ev.add_argument("-o", "--output", default="eval-results.json", help="JSON result file (default %(default)s)")
    ev.add_argument("--markdown", help="markdown table file (default: the JSON path with .md)")
    ev.add_argument("--lang", choices=["en", "zh"], help="language for records/folders without one")
    ev.add_argument("--split", choices=sorted(NAMED_SPLITS), help="a named document subset of the project")
    ev.add_argument("--ids-file", help="evaluate only these ids (one per line)")
    ev.add_argument("--offset", type=int, default=0)
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--idf-corpus", help="IDF corpus for _idf methods and tfidf (JSONL/folder, or text with one "
                    "document per line); default: the evaluated documents (labelled 'transductive idf')")
    ev.add_argument("--ks", default="5,10,15", help="cut-offs (default %(default)s)")
    ev.add_argument("--top-n", type=int, default=15, help="phrases asked of each system (default %(default)s)")
    ev.add_argument("--reference", help="system spec the bootstrap compares against (default: the first)")
    ev.add_argument("--bootstrap-resamples", type=int, default=1000)
    ev.add_argument("--seed", type=int, default=20261126, help="bootstrap seed")
    ev.add_argument("--threads", type=int, default=None, help="onnxruntime / torch threads")
    ev.add_argument("--batch-size", type=int, default=16, help="keyatten-lite batch size")
    ev.add_argument("--predictions-out", help="also write every system's ranked phrases as JSONL")
    ev.add_argument("--plot", help="bar chart of F1@k per system (PNG; needs matplotlib)")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=_cmd_eval)

    from keyatten_lite.cli import bench

    bench.register(subparsers)
