"""Dump the default profile's keywords and scores, or compare two dumps (identity check of a refactor).

    # before the change (a checkout of the old tree on PYTHONPATH), then after it, then compare:
    PYTHONPATH=/tmp/old python scripts/default_outputs.py dump before.json
    python scripts/default_outputs.py dump after.json
    python scripts/default_outputs.py compare before.json after.json

``dump`` runs ``DefaultProfileExtractor`` directly (IDF fitted on the same documents) for every listed
method on the first ``--en`` Inspec and ``--zh`` CSL-dev documents (file order), 2 onnxruntime threads.
``compare`` exits 1 unless every keyword list is identical and every score equal to the bit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DATA = Path(os.environ.get("KEYATTEN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
METHODS = ["samrank_idf", "received_attn_idf", "cls_attn_idf", "fusion_attn_idf"]
CORPORA = {"en": ("minilm-l6-en", "en/inspec.jsonl"), "zh": ("e5-small-multi", "zh/csl_dev.jsonl")}


def read_texts(relative: str, limit: int) -> list[str]:
    with open(DATA / relative, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line, _ in zip(handle, range(limit))]


def dump(args: argparse.Namespace) -> int:
    from keyatten_lite import default_profile

    out: dict = {"module": default_profile.__file__, "results": {}}
    for language, limit in (("en", args.en), ("zh", args.zh)):
        if limit <= 0:
            continue
        bundle, relative = CORPORA[language]
        texts = read_texts(relative, limit)
        extractor = default_profile.DefaultProfileExtractor(bundle, language, intra_op_threads=args.threads)
        idf = extractor.fit_idf(texts)
        for method in args.methods:
            ranked = extractor.extract_keywords_batch(texts, method, args.top_k, idf)
            # repr keeps every bit of a float64 score
            out["results"][f"{language}/{method}"] = [[[p, repr(s)] for p, s in doc] for doc in ranked]
            print(f"{language} {method}: {len(texts)} documents", file=sys.stderr)
    Path(args.output).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return 0


def compare(args: argparse.Namespace) -> int:
    before = json.loads(Path(args.before).read_text(encoding="utf-8"))["results"]
    after = json.loads(Path(args.after).read_text(encoding="utf-8"))["results"]
    failed = sorted(set(before) ^ set(after))
    for name in failed:
        print(f"{name}: only in one dump")
    for name in sorted(set(before) & set(after)):
        docs_a, docs_b = before[name], after[name]
        phrases = sum([p for p, _ in a] != [p for p, _ in b] for a, b in zip(docs_a, docs_b))
        scores = sum(a != b for a, b in zip(docs_a, docs_b)) - phrases
        same = len(docs_a) == len(docs_b) and not phrases and not scores
        keywords = sum(len(d) for d in docs_a)
        print(f"{name}: {len(docs_a)} vs {len(docs_b)} documents, {keywords} keywords; documents with other "
              f"phrases {phrases}, with other scores only {scores}: {'IDENTICAL' if same else 'DIFFERENT'}")
        if not same:
            failed.append(name)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dump")
    p.add_argument("output")
    p.add_argument("--en", type=int, default=200)
    p.add_argument("--zh", type=int, default=100)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--top-k", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=dump)
    p = sub.add_parser("compare")
    p.add_argument("before")
    p.add_argument("after")
    p.set_defaults(run=compare)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
