#!/usr/bin/env python3
"""Same keywords from BIO bundles that share their backbone's graph as from BIO bundles with their own?

    .venv/bin/python scripts/shared_backbone_check.py --before HOME_A --after HOME_B [--docs 200]

Runs, in one fresh process per home (KEYATTEN_LITE_HOME), on the first N documents of Inspec and of
CSL dev: the default extractor of each language (word candidates: the attention graph, which now also
emits the last hidden state) and ``candidate_scoring="bio"`` with the language's BIO bundle; records
the ranked keywords with scores, seconds per document (after one warm-up document) and the bundle
directories' sizes, then compares the two homes: same ranked lists, max abs score difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KEYATTEN_LITE_DATA", REPO.parent / "shared" / "data"))
CASES = (  # (label, language, data file, extractor arguments)
    ("en word", "en", "en/inspec.jsonl", {}),
    ("en bio", "en", "en/inspec.jsonl", {"candidate_scoring": "bio", "bio_model_path": "bio-minilm-en"}),
    ("zh word", "zh", "zh/csl_dev.jsonl", {}),
    ("zh bio", "zh", "zh/csl_dev.jsonl", {"candidate_scoring": "bio", "bio_model_path": "bio-e5-small-zh"}),
)


def run_one(docs: int) -> dict:
    from keyatten_lite import KeyAttenExtractor
    from keyatten_lite.model.registry import bundles_dir

    out: dict = {"cases": {}, "sizes": {}}
    for label, language, rel, kwargs in CASES:
        texts = [json.loads(line)["text"] for line in list(open(DATA / rel, encoding="utf-8"))[:docs]]
        extractor = KeyAttenExtractor(language=language, **kwargs)
        extractor.extract_keywords(texts[0])
        started = time.perf_counter()
        ranked = extractor.extract_keywords_batch(texts, top_k=10, with_scores=True)
        seconds = time.perf_counter() - started
        out["cases"][label] = {"keywords": [[[p, float(s)] for p, s in kw] for kw in ranked], "seconds_per_doc": seconds / len(texts)}
    for bundle in sorted(bundles_dir().iterdir()):
        if bundle.is_dir() and not bundle.name.startswith("."):
            out["sizes"][bundle.name] = sum(f.stat().st_size for f in bundle.iterdir() if f.is_file())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=False)
    ap.add_argument("--after", required=False)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="write the comparison as JSON here")
    args = ap.parse_args(argv)
    if args.child:
        json.dump(run_one(args.docs), sys.stdout)
        return 0
    if not (args.before and args.after):
        ap.error("--before and --after are required")
    results = {}
    for side in ("before", "after"):
        env = {**os.environ, "KEYATTEN_LITE_HOME": getattr(args, side)}
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--docs", str(args.docs)], env=env, capture_output=True, text=True, check=True
        )
        results[side] = json.loads(done.stdout)
    report = {"docs": args.docs, "cases": {}, "sizes": results}
    for label, *_ in CASES:
        a = results["before"]["cases"][label]
        b = results["after"]["cases"][label]
        same = sum([p for p, _ in x] == [p for p, _ in y] for x, y in zip(a["keywords"], b["keywords"]))
        same_sets = sum({p for p, _ in x} == {p for p, _ in y} for x, y in zip(a["keywords"], b["keywords"]))
        diff = max(
            (abs(s - t) for x, y in zip(a["keywords"], b["keywords"]) for (p, s), (q, t) in zip(x, y) if p == q),
            default=0.0,
        )
        report["cases"][label] = {
            "documents": len(a["keywords"]),
            "same_ranked_lists": same,
            "same_sets": same_sets,
            "max_abs_score_diff": diff,
            "seconds_per_doc": [round(a["seconds_per_doc"], 4), round(b["seconds_per_doc"], 4)],
        }
        print(f"{label:8s} {same}/{len(a['keywords'])} same lists, {same_sets} same sets, max score diff {diff:.2e}, "
              f"s/doc {a['seconds_per_doc']:.4f} -> {b['seconds_per_doc']:.4f}")
    for side in ("before", "after"):
        sizes = results[side]["sizes"]
        print(side, {name: f"{size / 1e6:.1f} MB" for name, size in sizes.items()})
    for side in results:
        for case in results[side]["cases"].values():
            case.pop("keywords")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
