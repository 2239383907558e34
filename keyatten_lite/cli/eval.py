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
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from keyatten_lite.errors import InvalidArgumentError

VERSIONED_PACKAGES = (
    "keyatten-lite", "numpy", "onnxruntime", "tokenizers", "jieba", "nltk", "yake", "scikit-learn",
    "keyatten", "torch", "transformers",
)


# ----------------------------------------------------------------------------------------------------------------
# Machine and versions (shared with bench.py)


def package_versions(names: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata (imports nothing)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_bytes = None
    try:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:  # timings are only comparable on an idle machine: record how busy it was
        load_average = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load_average = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_bytes": memory_bytes,
        "load_average": load_average,
    }


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_outputs(result: dict, markdown: str, json_path: str | os.PathLike, markdown_path: str | None) -> Path:
    """Write the JSON and the markdown (default: the JSON path with .md); returns the markdown path."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path = Path(markdown_path) if markdown_path else json_path.with_suffix(".md")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown, encoding="utf-8")
    return md_path


# ----------------------------------------------------------------------------------------------------------------
# eval


def _read_idf_corpus(path: str) -> list[str]:
    """An IDF corpus: a dataset (JSONL with "text", or a docsutf8/keys folder) or plain text, one document per line."""
    from keyatten_lite.evaluation.metrics import read_dataset

    target = Path(path)
    if target.is_file() and target.suffix not in (".jsonl", ".json"):
        return [line for line in target.read_text(encoding="utf-8").splitlines() if line.strip()]
    if target.is_file():
        texts = []
        with open(target, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        texts.append(str(json.loads(line)["text"]))
                    except (json.JSONDecodeError, KeyError, TypeError) as error:
                        raise InvalidArgumentError(f"{target}:{line_number}: expected a JSON object with 'text'") from error
        return texts
    return [d.text for d in read_dataset(target)]


def run_evaluation(
    documents: Sequence,
    specs: Sequence[str],
    *,
    context=None,
    ks: Sequence[int] = (5, 10, 15),
    reference: str | None = None,
    n_resamples: int = 1000,
    seed: int = 20261126,
    log=print,
) -> dict[str, Any]:
    """Run every system on the documents and score it; paired bootstrap of each system against ``reference``
    (default: the first system that ran). Returns the result dict written as JSON; ``predictions`` holds
    each system's ranked phrases (the caller drops it from the JSON unless asked)."""
    from keyatten_lite.evaluation.baselines import RunContext, SystemUnavailable, build_system
    from keyatten_lite.evaluation.metrics import (
        aggregate_scores, match_counts, paired_bootstrap, per_document_scores, present_gold_share, unique_normalised,
    )

    if not documents:
        raise InvalidArgumentError("no documents to evaluate (check --split/--limit/--offset/--ids-file)")
    context = context or RunContext()
    systems = [build_system(spec, context) for spec in specs]  # fail on a bad spec before any work
    gold_counts = [len(unique_normalised(d.keywords, d.lang)) for d in documents]
    result: dict[str, Any] = {
        "date": now_iso(),
        "machine": machine_info(),
        "versions": package_versions(),
        "dataset": {
            "n_documents": len(documents),
            "languages": sorted({d.lang for d in documents}),
            "present_gold_share": present_gold_share(documents),
            "mean_gold_per_document": sum(gold_counts) / len(documents),
        },
        "systems": [],
        "comparisons": [],
        "predictions": {},
    }
    # Check every system before running any: a missing bundle fails now, a missing optional package skips.
    unavailable: dict[int, str] = {}
    for index, system in enumerate(systems):
        try:
            system.check_available()
        except SystemUnavailable as error:
            unavailable[index] = str(error)
    per_doc_f1: dict[str, Any] = {}
    for index, system in enumerate(systems):
        entry: dict[str, Any] = {"spec": system.spec}
        if index in unavailable:
            log(f"[eval] skipped {system.spec}: {unavailable[index]}")
            entry.update(label=system.label, skipped=unavailable[index])
            result["systems"].append(entry)
            continue
        log(f"[eval] {system.spec}: {len(documents)} documents ...")
        started = time.perf_counter()
        predictions = system.predict(documents)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        counts = match_counts(predictions, documents, ks)
        scores = aggregate_scores(counts)
        entry.update(system.describe())
        entry["idf_source"] = (
            None if not system.uses_idf
            else "evaluated documents (transductive)" if system.transductive
            else context.idf_source
        )
        entry["scores"] = {str(k): v for k, v in scores.items()}
        entry["mean_predictions"] = sum(len(p) for p in predictions) / len(predictions)
        result["systems"].append(entry)
        result["predictions"][system.spec] = predictions
        per_doc_f1[system.spec] = per_document_scores(counts)["f1"]
        log(f"[eval] {system.label}: " + ", ".join(f"F1@{k} {s['macro_f1']:.3f}" for k, s in scores.items()))
    ran = [s for s in result["systems"] if "scores" in s]
    if reference is None and ran:
        reference = ran[0]["spec"]
    if reference is not None and reference not in per_doc_f1:
        raise InvalidArgumentError(f"--reference {reference!r} is not among the systems that ran")
    for entry in ran:
        if entry["spec"] == reference:
            continue
        for column, k in enumerate(ks):
            boot = paired_bootstrap(
                per_doc_f1[entry["spec"]][:, column], per_doc_f1[reference][:, column],
                n_resamples=n_resamples, seed=seed,
            )
            result["comparisons"].append({
                "system": entry["spec"], "label": entry["label"], "reference": reference, "k": k, "metric": "macro_f1",
                "difference": boot.difference, "ci_low": boot.low, "ci_high": boot.high,
                "confidence": boot.confidence, "n_resamples": boot.n_resamples, "seed": boot.seed,
            })
    return result


def evaluation_markdown(result: dict[str, Any]) -> str:
    """Markdown: a table of macro P/R/F1 at each k (+ micro F1), and the bootstrap comparisons."""
    config = result.get("config", {})
    dataset = result["dataset"]
    ks = config.get("ks") or sorted({int(k) for s in result["systems"] for k in s.get("scores", {})})
    lines = [
        f"# Keyphrase evaluation: {config.get('dataset', '?')}",
        "",
        f"{dataset['n_documents']} documents ({', '.join(dataset['languages'])}; selection: "
        f"{config.get('selection', 'all')}), {dataset['mean_gold_per_document']:.1f} gold phrases per document, "
        f"{100 * dataset['present_gold_share']:.1f} % of gold present in the text. "
        f"Date {result['date']}, {result['machine']['cpu_model']} ({result['machine']['usable_cpus']} usable CPUs).",
        "",
        "Macro P/R/F1 at k on the first k de-duplicated outputs (all gold counts); micro F1 in the last columns.",
        "",
    ]
    header = ["system"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")] + [f"µF1@{k}" for k in ks] + ["s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for entry in result["systems"]:
        if "scores" not in entry:
            lines.append(f"| {entry['label']} | skipped: {entry['skipped']} |")
            continue
        cells = [entry["label"]]
        for k in ks:
            s = entry["scores"][str(k)]
            cells += [f"{s['macro_p']:.3f}", f"{s['macro_r']:.3f}", f"{s['macro_f1']:.3f}"]
        cells += [f"{entry['scores'][str(k)]['micro_f1']:.3f}" for k in ks]
        cells.append(f"{entry.get('seconds', 0):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if result["comparisons"]:
        confidence = result["comparisons"][0]["confidence"]
        lines += [
            "",
            f"Paired bootstrap of the macro F1@k difference against `{result['comparisons'][0]['reference']}` "
            f"({result['comparisons'][0]['n_resamples']} resamples of the documents, "
            f"{100 * confidence:.0f} % percentile interval):",
            "",
            "| system | k | difference | CI |",
            "|---|---|---|---|",
        ]
        for c in result["comparisons"]:
            lines.append(f"| {c['label']} | {c['k']} | {c['difference']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] |")
    return "\n".join(lines) + "\n"


def plot_results(result: dict[str, Any], path: str) -> str | None:
    """Bar chart of macro F1@k per system; returns a message instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"--plot {path}: matplotlib is not installed (pip install matplotlib); no chart written"
    import numpy as np

    ran = [s for s in result["systems"] if "scores" in s]
    ks = result.get("config", {}).get("ks") or [5, 10, 15]
    width = 0.8 / max(len(ran), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(ks) * len(ran) ** 0.5 + 4), 4))
    for index, entry in enumerate(ran):
        values = [entry["scores"][str(k)]["macro_f1"] for k in ks]
        axes.bar(np.arange(len(ks)) + index * width, values, width, label=entry["label"])
    axes.set_xticks(np.arange(len(ks)) + width * (len(ran) - 1) / 2, [f"F1@{k}" for k in ks])
    axes.set_ylabel("macro F1")
    axes.set_title(result.get("config", {}).get("dataset", ""))
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def _parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise InvalidArgumentError(f"--ks must be comma-separated positive integers, got {text!r}") from error
    if not ks or ks[0] < 1:
        raise InvalidArgumentError(f"--ks must be comma-separated positive integers, got {text!r}")
    return ks


def _cmd_eval(args: argparse.Namespace) -> int:
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
        context.idf_texts = _read_idf_corpus(args.idf_corpus)
        context.idf_source = args.idf_corpus
    log = (lambda message: print(message, file=sys.stderr)) if not args.quiet else (lambda message: None)
    result = run_evaluation(
        documents, args.system or ["yake", "tfidf"], context=context, ks=ks, reference=args.reference,
        n_resamples=args.bootstrap_resamples, seed=args.seed, log=log,
    )
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
        "lite-bio:<bio_bundle>:<method>[:compat], yake, yake-jieba, tfidf, tfidf-cands[:<bundle>], "
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

    from keyatten_lite.evaluation import bench

    bench.register(subparsers)
