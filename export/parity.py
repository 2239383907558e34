"""Keyword parity of keyatten-lite against keyatten 0.3.1 (torch backend) on the same checkpoint.

    python -m keyatten_lite_export.parity --lang en --docs 200 [--out parity-en.json]

Build time only: it imports keyatten 0.3.1, and through it torch and transformers.

Ties: 0.3.1 orders equal scores arbitrarily (numpy's unstable SIMD argsort, §12.2 of the behaviour
write-up), and ONNX attention differs from torch by ~1e-7, so scores that agree to ``tie_tol`` form
one tie group. A document agrees when 0.3.1's top-k list, position by position, falls in the same tie
group as ours: whole groups as sets, and the group cut by the top-k boundary as a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

DEFAULT_BUNDLE = {"en": "minilm-l6-en", "zh": "e5-small-zh"}
# keyatten 0.3.1 reads the full-vocabulary model of a trimmed bundle: parity then also proves the trim.
FULL_SOURCE = {"e5-small-zh": "e5-small-multi"}
DEFAULT_DATA = {"en": "en/inspec.jsonl", "zh": "zh/csl_dev.jsonl"}
ALL_METHODS = [
    m + suffix
    for suffix in ("", "_idf")
    for m in ("cls_attn", "received_attn", "samrank", "fusion_attn", "voted_attn", "excess_attn")
]


def tie_groups(ranked: Sequence[tuple[str, float]], tie_tol: float) -> list[set[str]]:
    """Split a ranked (phrase, score) list into groups of consecutive near-equal scores."""
    groups: list[set[str]] = []
    previous = None
    for phrase, score in ranked:
        if previous is not None and abs(previous - score) <= tie_tol:
            groups[-1].add(phrase)
        else:
            groups.append({phrase})
        previous = score
    return groups


def same_up_to_ties(ours: Sequence[tuple[str, float]], theirs: Sequence[str], top_k: int, tie_tol: float) -> bool:
    """True when ``theirs`` (0.3.1's top-k) is a valid ordering of ``ours`` (the full ranking)."""
    if len(theirs) != min(top_k, len(ours)):
        return False
    position = 0
    for group in tie_groups(ours, tie_tol):
        if position >= len(theirs):
            break
        window = theirs[position : position + len(group)]
        if not set(window) <= group or len(set(window)) != len(window):
            return False
        position += len(window)
    return position == len(theirs)


def load_documents(lang: str, n_docs: int, data_dir: Path) -> list[dict]:
    path = data_dir / DEFAULT_DATA[lang]
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return docs[:n_docs]


def source_model_dir(bundle_name: str, home: Path | None = None) -> Path:
    """The Hugging Face directory a default bundle was exported from (prepared again if missing)."""
    from keyatten_lite.model.registry import home_dir

    from . import sources

    target = (home or home_dir()) / "sources" / bundle_name
    if not (target / "config.json").exists():
        recipe = sources.load_recipe(bundle_name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{bundle_name}-", dir=target.parent if target.parent.exists() else None))
        info = sources.prepare(recipe, tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(info["model_dir"], target)
    return target


def run(lang: str, n_docs: int, data_dir: Path, top_k: int = 10, methods: Sequence[str] = ALL_METHODS,
        bundle: str | None = None, model_dir: Path | None = None, tie_tol: float = 1e-5,
        threads: int = 2, speed: bool = True, mode: str = "word") -> dict:
    """Compare keyword lists of every method on ``n_docs`` documents; return a JSON-able report."""
    import torch

    torch.set_num_threads(threads)
    from keyatten import KeyAttenExtractor as Original

    from keyatten_lite import KeyAttenExtractor

    bundle = bundle or DEFAULT_BUNDLE[lang]
    model_dir = model_dir or source_model_dir(FULL_SOURCE.get(bundle, bundle))
    docs = load_documents(lang, n_docs, data_dir)
    texts = [d["text"] for d in docs]

    lite = KeyAttenExtractor(profile="compat", model=bundle, language=lang, intra_op_threads=threads, candidate_scoring=mode)
    lite.fit_idf(texts)
    with tempfile.TemporaryDirectory() as cache_dir:
        # 0.3.1's document cache holds all six methods' word scores, so one forward pass per document
        # serves all twelve methods; the ranking is recomputed from those scores on every call.
        original = Original(model=str(model_dir), language=lang, backend="torch",
                            cache_enabled=True, cache_dir=cache_dir, candidate_scoring=mode)
        original.fit_idf(texts)
        report: dict = {"lang": lang, "mode": mode, "bundle": bundle, "model_dir": str(model_dir),
                        "documents": len(docs), "top_k": top_k, "tie_tol": tie_tol, "methods": {}}
        for method in methods:
            ours_all = lite.extract_keywords_batch(texts, method=method, top_k=10_000, with_scores=True)
            differing, original_errors = [], []
            for doc, ours in zip(docs, ours_all):
                try:
                    theirs = original.extract_keywords(doc["text"], method=method, top_k=top_k)
                except ValueError as exc:  # 0.3.1's word alignment fails on some merged words (§12.1 item 6)
                    original_errors.append({"id": doc["id"], "error": str(exc)[:200]})
                    continue
                if not same_up_to_ties(ours, theirs, top_k, tie_tol):
                    differing.append({"id": doc["id"], "ours": [p for p, _ in ours[:top_k]], "theirs": theirs,
                                      "our_scores": [round(s, 7) for _, s in ours[: top_k + 3]]})
            compared = len(docs) - len(original_errors)
            report["methods"][method] = {
                "compared": compared,
                "agree": compared - len(differing),
                "agreement": (compared - len(differing)) / max(compared, 1),
                "differing": differing,
                "original_errors": original_errors,
            }
            print(f"{lang} {mode} {method:18s} {compared - len(differing)}/{compared}", file=sys.stderr)
    if speed:
        report["speed"] = batch_speed(texts, lang, bundle, model_dir, threads)
    return report


def batch_speed(texts: Sequence[str], lang: str, bundle: str, model_dir: Path, threads: int,
                method: str = "received_attn") -> dict:
    """docs/s of both batch paths on the same documents and threads, one warm-up call each."""
    import torch

    torch.set_num_threads(threads)
    from keyatten import KeyAttenExtractor as Original

    from keyatten_lite import KeyAttenExtractor

    lite = KeyAttenExtractor(profile="compat", model=bundle, language=lang, intra_op_threads=threads)
    original = Original(model=str(model_dir), language=lang, backend="torch")
    figures = {}
    for label, fn in (("keyatten_lite", lambda t: lite.extract_keywords_batch(t, method=method)),
                      ("keyatten_0.3.1", lambda t: original.extract_keywords_batch(t, method=method))):
        fn(list(texts[:4]))  # load the model and warm up outside the timed region
        start = time.perf_counter()
        fn(list(texts))
        elapsed = time.perf_counter() - start
        figures[label] = {"seconds": round(elapsed, 3), "docs_per_s": round(len(texts) / elapsed, 2)}
    figures["speedup"] = round(figures["keyatten_lite"]["docs_per_s"] / figures["keyatten_0.3.1"]["docs_per_s"], 2)
    figures.update({"threads": threads, "method": method, "documents": len(texts)})
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyatten_lite_export.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", choices=["en", "zh"], required=True)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--data", default=os.environ.get("KEYATTEN_LITE_DATA", "../shared/data"))
    parser.add_argument("--methods", nargs="*", default=ALL_METHODS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["word", "token_span"], default="word", help="candidate_scoring")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    report = run(args.lang, args.docs, Path(args.data), methods=args.methods, threads=args.threads,
                 speed=not args.no_speed, mode=args.mode)
    text = json.dumps(report, ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(f"{args.lang}, candidate_scoring={args.mode}, {report['documents']} documents, top_k={report['top_k']}")
    print("| method | agree / compared | share | 0.3.1 raised |\n|---|---|---|---|")
    for method, fig in report["methods"].items():
        print(f"| {method} | {fig['agree']}/{fig['compared']} | {fig['agreement']:.3f} | {len(fig['original_errors'])} |")
    if "speed" in report:
        print(json.dumps(report["speed"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
