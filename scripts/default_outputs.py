"""Dump keywords and scores of every method × profile × candidate mode, or compare two dumps.

The identity check of a refactor: dump with the old tree, dump with the new one, compare.

    PYTHONPATH=/tmp/old python scripts/default_outputs.py dump before.json   # a checkout of the old tree
    python scripts/default_outputs.py dump after.json
    python scripts/default_outputs.py compare before.json after.json

``dump`` uses the public API only (``KeyAttenExtractor``: ``fit_idf`` on the same documents, then
``extract_keywords_batch(..., with_scores=True)``), so it runs unchanged on any layout of the package.
Corpora: the first ``--en`` Inspec, ``--zh`` CSL-dev and ``--long`` SemEval-2010 documents (file order).
Modes: ``word``, ``token_span`` and ``bio`` (with the default BIO bundles, when built); profiles
``default`` and ``compat``; every attention method and its ``_idf`` variant, plus ``bio_confidence`` and
``bio_order`` in bio mode. The graphs are deterministic for equal inputs, so each distinct
``session.run`` is computed once per process (``--no-memo`` turns that off); every call still goes
through the whole pipeline. ``compare`` exits 1 unless every keyword list is identical and every score
equal to the bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("KEYATTEN_LITE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BASE_METHODS = ["cls_attn", "received_attn", "samrank", "fusion_attn", "voted_attn", "excess_attn"]
METHODS = BASE_METHODS + [m + "_idf" for m in BASE_METHODS]
BIO_ALONE = ["bio_confidence", "bio_order"]
# corpus name -> (language, file, default limit option)
CORPORA = {"en": ("en", "en/inspec.jsonl"), "zh": ("zh", "zh/csl_dev.jsonl"), "long": ("en", "en/semeval2010.jsonl")}
BIO_BUNDLES = {"en": "bio-minilm-en", "zh": "bio-e5-small-zh"}


def read_texts(relative: str, limit: int) -> list[str]:
    with open(DATA / relative, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line, _ in zip(handle, range(limit))]


def memoise_sessions() -> dict:
    """Make onnxruntime's ``InferenceSession.run`` return a stored result for inputs it has seen."""
    import onnxruntime as ort

    store: dict = {}
    original = ort.InferenceSession.run

    def run(self, output_names, input_feed, run_options=None):
        digest = hashlib.sha256()
        # sessions of one graph file (one per extractor) share results
        digest.update(repr((getattr(self, "_model_path", None) or id(self), output_names)).encode())
        for name in sorted(input_feed):
            value = input_feed[name]
            digest.update(name.encode())
            digest.update(repr((value.dtype.str, value.shape)).encode())
            digest.update(value.tobytes())
        key = digest.digest()
        if key not in store:
            store[key] = original(self, output_names, input_feed, run_options)
        return [x.copy() for x in store[key]]

    ort.InferenceSession.run = run
    return store


def bio_available(language: str) -> bool:
    from keyatten_lite.errors import BundleNotFoundError

    try:
        import keyatten_lite

        keyatten_lite.KeyAttenExtractor(language=language, candidate_scoring="bio", bio_model_path=BIO_BUNDLES[language])
        return True
    except BundleNotFoundError:
        return False


def dump(args: argparse.Namespace) -> int:
    import keyatten_lite

    store = None if args.no_memo else memoise_sessions()
    out: dict = {"package": keyatten_lite.__file__, "results": {}}
    limits = {"en": args.en, "zh": args.zh, "long": args.long}
    for corpus, (language, relative) in CORPORA.items():
        if limits[corpus] <= 0:
            continue
        texts = read_texts(relative, limits[corpus])
        if store is not None:
            store.clear()  # corpora share no inputs
        for mode in args.modes:
            if mode == "bio" and not bio_available(language):
                print(f"{corpus} bio: BIO bundle {BIO_BUNDLES[language]} not built, skipped", file=sys.stderr)
                continue
            methods = [m for m in args.methods if m in METHODS or mode == "bio"]
            if mode == "bio":
                methods = methods + [m for m in BIO_ALONE if m not in methods]
            for profile in args.profiles:
                options = {"bio_model_path": BIO_BUNDLES[language]} if mode == "bio" else {}
                extractor = keyatten_lite.KeyAttenExtractor(
                    language=language, candidate_scoring=mode, profile=profile, intra_op_threads=args.threads, **options
                )
                started = time.perf_counter()
                extractor.fit_idf(texts)
                for method in methods:
                    ranked = extractor.extract_keywords_batch(texts, method=method, top_k=args.top_k, with_scores=True)
                    # repr keeps every bit of a float score
                    out["results"][f"{corpus}/{mode}/{profile}/{method}"] = [[[p, repr(s)] for p, s in d] for d in ranked]
                print(
                    f"{corpus} {mode} {profile}: {len(texts)} documents × {len(methods)} methods "
                    f"in {time.perf_counter() - started:.1f} s",
                    file=sys.stderr,
                )
    if store is not None:
        out["distinct_session_runs"] = len(store)
    Path(args.output).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return 0


def compare(args: argparse.Namespace) -> int:
    before = json.loads(Path(args.before).read_text(encoding="utf-8"))["results"]
    after = json.loads(Path(args.after).read_text(encoding="utf-8"))["results"]
    failed = sorted(set(before) ^ set(after))
    for name in failed:
        print(f"{name}: only in one dump")
    documents = keywords = 0
    for name in sorted(set(before) & set(after)):
        docs_a, docs_b = before[name], after[name]
        phrases = sum([p for p, _ in a] != [p for p, _ in b] for a, b in zip(docs_a, docs_b))
        scores = sum(a != b for a, b in zip(docs_a, docs_b)) - phrases
        same = len(docs_a) == len(docs_b) and not phrases and not scores
        documents += len(docs_a)
        keywords += sum(len(d) for d in docs_a)
        if not same or args.verbose:
            print(f"{name}: {len(docs_a)} vs {len(docs_b)} documents; documents with other phrases {phrases}, "
                  f"with other scores only {scores}: {'IDENTICAL' if same else 'DIFFERENT'}")
        if not same:
            failed.append(name)
    print(f"{len(set(before) & set(after))} combinations, {documents} document results, {keywords} keywords: "
          f"{len(failed)} different")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dump")
    p.add_argument("output")
    p.add_argument("--en", type=int, default=200)
    p.add_argument("--zh", type=int, default=100)
    p.add_argument("--long", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--modes", nargs="+", default=["word", "token_span", "bio"])
    p.add_argument("--profiles", nargs="+", default=["default", "compat"])
    p.add_argument("--top-k", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memo", action="store_true", help="run every forward pass (slow)")
    p.set_defaults(run=dump)
    p = sub.add_parser("compare")
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=compare)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
