"""Order bias of the CSA reranker: the tagger's (bio) order against random orders over 1, 3 and 5 seeds.

    KEYATTEN_LITE_HOME=... python scripts/csa_order_bias.py --language zh [-o docs/results/csa-order-bias-zh.json]

Dev documents only (neither the reranker nor the fusion was trained on them): CSL dev 800-999 (zh),
Inspec dev, the first 300 after the first 500 by id (en). The trained reranker bundle of the language,
its trained candidates (the default profile's). Each document's candidate list is scored once in the
tagger's order and once per seed (42-46) in a random order; an order setting is then the mean over its
passes (the extractor's ``combine_passes``), ranked alone (``rank_fusion=False``) and fused with the
tagger's and the default extractor's lists (the default profile). F1@5/10/15 as ``keyatten-lite eval``
computes them, each setting against random-3 (the default) with a 95 % paired-bootstrap interval.
Time per document: ``extract_keywords_batch`` of the real extractor for each setting over the first
``--timed`` documents (candidates included), after one warm-up call. A self-check asserts that the
decomposed random-3 ranking is the extractor's own on the timed documents.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DATA = Path(os.environ.get("KEYATTEN_LITE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SEEDS = (42, 43, 44, 45, 46)
SETTINGS = {  # name: the passes it averages (None = the tagger's order)
    "bio order": (None,),
    "random, 1 seed": SEEDS[:1],
    "random, 3 seeds (default)": SEEDS[:3],
    "random, 5 seeds": SEEDS,
}
KS = (5, 10, 15)


def dev_documents(language: str):
    from keyatten_lite.evaluation.metrics import read_dataset, select_documents

    if language == "zh":
        return select_documents(read_dataset(DATA / "zh/csl_dev.jsonl"), split="csl-dev", offset=800, limit=200)
    return select_documents(read_dataset(DATA / "en/inspec.jsonl"), split="inspec-dev", limit=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", choices=("zh", "en"), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timed", type=int, default=50, help="documents timed per setting")
    parser.add_argument("-o", "--output")
    args = parser.parse_args()

    import numpy as np

    from keyatten_lite import CandidateSegmentAttentionExtractor
    from keyatten_lite.evaluation.metrics import match_counts, paired_bootstrap, per_document_scores
    from keyatten_lite.evaluation.provenance import machine_info, now_iso, package_versions
    from keyatten_lite.extractors.segment_attention import combine_passes, fuse_rankings

    documents = dev_documents(args.language)
    csa = CandidateSegmentAttentionExtractor(language=args.language, intra_op_threads=args.threads)
    in_bio_order = CandidateSegmentAttentionExtractor(language=args.language, intra_op_threads=args.threads, candidate_order="bio")

    def one_pass(pool, text, seed):
        """One prompt, built by the extractor itself (order, document fitting, prompt), scored alone."""
        extractor = in_bio_order if seed is None else csa
        return extractor.scored_passes(text, pool, random_seeds=None if seed is None else [seed], batch_size=1)[0]

    rankings: dict[str, dict[str, list[list[str]]]] = {name: {"reranker": [], "fused": []} for name in SETTINGS}
    started = time.perf_counter()
    for index, document in enumerate(documents):
        pool = csa.candidate_pool(document.text) if document.text.strip() else None
        usable = pool is not None and len(pool.candidates) >= 2
        passes = {seed: one_pass(pool, document.text, seed) for seed in (None, *SEEDS)} if usable else {}
        for name, seeds in SETTINGS.items():
            scored = [passes[s] for s in seeds if passes.get(s)]
            reranked = combine_passes(scored, len(pool.candidates)) if usable else []
            rankings[name]["reranker"].append([c for c, _ in reranked][: max(KS)])
            fused = fuse_rankings(reranked, [pool.bio_ranking, pool.default_ranking], max(KS)) if usable else []
            rankings[name]["fused"].append([c for c, _ in fused])
        if index % 50 == 0:
            print(f"  {index}/{len(documents)} documents ({time.perf_counter() - started:.0f} s)", flush=True)

    timed = [d.text for d in documents[: args.timed]]
    seconds: dict[str, float] = {}
    for name, seeds in SETTINGS.items():
        extractor = CandidateSegmentAttentionExtractor(
            language=args.language, intra_op_threads=args.threads,
            candidate_order="bio" if seeds == (None,) else "random", random_seeds=None if seeds == (None,) else list(seeds),
        )
        extractor.extract_keywords_batch(timed[:2])  # warm-up: sessions, jieba, the BIO tagger
        t0 = time.perf_counter()
        out = extractor.extract_keywords_batch(timed, top_k=max(KS))
        seconds[name] = (time.perf_counter() - t0) / len(timed)
        if name == "random, 3 seeds (default)":  # the decomposition above is the extractor's ranking
            assert [set(o) for o in out] == [set(r) for r in rankings[name]["fused"][: len(timed)]], "decomposition differs"

    reference = "random, 3 seeds (default)"
    table: dict[str, dict] = {}
    per_doc = {}
    for name in SETTINGS:
        for ranking in ("reranker", "fused"):
            per_doc[(name, ranking)] = per_document_scores(match_counts(rankings[name][ranking], documents, KS))["f1"]
    for (name, ranking), f1 in per_doc.items():
        row = {"f1": {str(k): float(f1[:, c].mean()) for c, k in enumerate(KS)}, "seconds_per_document": seconds[name]}
        if name != reference:
            boot = paired_bootstrap(f1[:, 1], per_doc[(reference, ranking)][:, 1])
            row["minus_default_at_10"] = {"difference": boot.difference, "low": boot.low, "high": boot.high}
        table[f"{name} | {ranking}"] = row

    lines = [f"CSA order bias, {args.language}: {len(documents)} dev documents, {now_iso()}, "
             f"load {os.getloadavg()[0]:.1f}, {args.threads} threads", "",
             "| order | ranking | F1@5 | F1@10 | F1@15 | minus random-3 @10 | s / doc |", "|---|---|---:|---:|---:|---|---:|"]
    for key, row in table.items():
        name, ranking = key.split(" | ")
        diff = row.get("minus_default_at_10")
        cell = f"{diff['difference']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff else ""
        lines.append(f"| {name} | {ranking} | " + " | ".join(f"{row['f1'][str(k)]:.3f}" for k in KS) + f" | {cell} | {row['seconds_per_document']:.2f} |")
    print("\n".join(lines))
    if args.output:
        result = {"date": now_iso(), "machine": machine_info(), "versions": package_versions(), "language": args.language,
                  "documents": [d.id for d in documents], "timed_documents": len(timed), "threads": args.threads,
                  "load_average": os.getloadavg()[0], "seeds": list(SEEDS), "settings": table}
        target = Path(args.output)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(target)  # atomic: a half-written result never replaces a whole one
        target.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
