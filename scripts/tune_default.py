"""Tune the default profile on every dev kind at once, on cached forward passes (issue 14).

    python scripts/tune_default.py cache OUT_DIR          # one model pass per dev document, pickled
    python scripts/tune_default.py search OUT_DIR         # re-score with many constants (no model)

The read stage (token scores of every base method at the tuned layers) is the expensive part and
does not depend on the scoring constants, so it runs once; every variant below re-runs prepare
(candidates: cheap), score and rank on the cached reads. The objective is the mean over the dev kinds
of macro F1@10 (equivalently the mean gain over compat, whose figures are constants per kind).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")

# kind: (file, split, language, bundle, documents used while searching)
KINDS = {
    "www": ("en/www.jsonl", "www-dev", "en", "minilm-l6-en", 400),
    "kpcrowd": ("en/kpcrowd-dev.jsonl", "kpcrowd-dev", "en", "minilm-l6-en", 150),
    "inspec_dev": ("en/inspec.jsonl", "inspec-dev", "en", "minilm-l6-en", 300),
    "se17_dev": ("en/semeval2017.jsonl", "semeval2017-first200", "en", "minilm-l6-en", 200),
    "se10_dev": ("en/semeval2010.jsonl", "semeval2010-dev", "en", "minilm-l6-en", 81),
    "csl_dev": ("zh/csl_dev.jsonl", "csl-dev", "zh", "e5-small-zh", 300),
}
# Test sets: read once for the final report only (never searched); SemEval2010's full pass costs
# ~16 s per paper on the shared 2 cores, so its reads are cached in chunks and scored like the eval.
TESTS = {
    "se10_test": ("en/semeval2010.jsonl", "semeval2010-rest", "en", "minilm-l6-en", None),
}
BASES = ("cls_attn", "received_attn", "samrank", "fusion_attn")


def load_docs(kind: str):
    from keyatten_lite.evaluation.metrics import read_dataset, select_documents

    path, split, _lang, _bundle, limit = {**KINDS, **TESTS}[kind]
    return select_documents(read_dataset(DATA / path), split=split, limit=limit)


def cache(out: Path, kinds) -> None:
    from keyatten_lite import KeyAttenExtractor
    from keyatten_lite.pipeline import default

    out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        target = out / f"{kind}.pkl"
        if target.exists():
            continue
        _path, _split, lang, bundle, _limit = {**KINDS, **TESTS}[kind]
        docs = load_docs(kind)
        if kind in TESTS:
            chunked(out, kind, docs, lang, bundle)
            continue
        ex = KeyAttenExtractor(model=bundle, language=lang, intra_op_threads=2)
        res = ex.resources
        t0 = time.time()
        prepared = default.prepare(res, [d.text for d in docs])
        reads = []
        for i in range(0, len(prepared), 16):
            reads.extend(default.read(res, prepared[i : i + 16], BASES, 16))
        rows = [
            {"id": d.id, "text": d.text, "gold": d.keywords, "read": r} for d, r in zip(docs, reads)
        ]
        with open(target, "wb") as handle:
            pickle.dump({"lang": lang, "bundle": bundle, "docs": rows}, handle)
        print(f"{kind}: {len(rows)} docs in {time.time() - t0:.0f}s", flush=True)


def chunked(out: Path, kind: str, docs, lang: str, bundle: str, size: int = 6) -> None:
    """Reads of ``docs`` pickled every ``size`` documents (``{kind}.partNNN.pkl``), so that a run cut
    short still leaves the documents read so far, in order."""
    from keyatten_lite import KeyAttenExtractor
    from keyatten_lite.pipeline import default

    ex = KeyAttenExtractor(model=bundle, language=lang, intra_op_threads=2)
    for part, i in enumerate(range(0, len(docs), size)):
        target = out / f"{kind}.part{part:03d}.pkl"
        if target.exists():
            continue
        t0 = time.time()
        batch = docs[i : i + size]
        reads = default.read(ex.resources, default.prepare(ex.resources, [d.text for d in batch]), BASES, 16)
        rows = [{"id": d.id, "text": d.text, "gold": d.keywords, "read": r} for d, r in zip(batch, reads)]
        with open(target, "wb") as handle:
            pickle.dump({"lang": lang, "bundle": bundle, "docs": rows}, handle)
        print(f"{kind} part {part}: {len(rows)} docs in {time.time() - t0:.0f}s", flush=True)


def merge_parts(out: Path, kind: str) -> Path:
    """The parts read so far of a chunked kind, as one pickle ``{kind}.pkl``."""
    parts = sorted(out.glob(f"{kind}.part*.pkl"))
    blobs = [pickle.load(open(p, "rb")) for p in parts]
    merged = {"lang": blobs[0]["lang"], "bundle": blobs[0]["bundle"], "docs": [d for b in blobs for d in b["docs"]]}
    target = out / f"{kind}.pkl"
    with open(target, "wb") as handle:
        pickle.dump(merged, handle)
    return target


class Scorer:
    """Re-scores cached reads of one dev kind with a profile's constants."""

    def __init__(self, path: Path, limit: int | None = None):
        from keyatten_lite import KeyAttenExtractor
        from keyatten_lite.evaluation.metrics import unique_normalised
        from keyatten_lite.state.idf import IdfState

        blob = pickle.load(open(path, "rb"))
        self.lang, self.bundle = blob["lang"], blob["bundle"]
        self.docs = blob["docs"][:limit] if limit else blob["docs"]
        self.ex = KeyAttenExtractor(model=self.bundle, language=self.lang)
        self.gold = [unique_normalised(d["gold"], self.lang) for d in self.docs]
        self.ex.fit_idf([d["text"] for d in self.docs])
        self._words = {}

    def rank_all(self, config, method: str, top_k: int) -> list[list[str]]:
        from keyatten_lite.pipeline import default
        from keyatten_lite.pipeline.stages import Idf
        from keyatten_lite.profiles import DEFAULT

        res = self.ex.resources
        res.settings = replace(res.settings, profile=DEFAULT.with_constants(config))
        res.memo.pop("raw_text_constants", None)
        idf = Idf(self.ex.idf.lookup(), self.ex.idf) if method.endswith("_idf") else None
        out = []
        for d in self.docs:
            doc = default.prepare_text(res, d["text"])
            if d["read"] is None or not len(doc.candidates):
                out.append([])
                continue
            scores = default.score(res, doc, d["read"], method, idf)
            out.append([p for p, _ in default.rank(res, doc, d["read"], scores, top_k)])
        return out

    def run(self, config, method: str, ks=(5, 10, 15), per_doc: bool = False):
        from keyatten_lite.evaluation.metrics import unique_normalised
        from keyatten_lite.pipeline import default
        from keyatten_lite.pipeline.stages import Idf
        from keyatten_lite.profiles import DEFAULT

        res = self.ex.resources
        res.settings = replace(res.settings, profile=DEFAULT.with_constants(config))
        res.memo.pop("raw_text_constants", None)
        idf = Idf(self.ex.idf.lookup(), self.ex.idf) if method.endswith("_idf") else None
        f = {k: [] for k in ks}
        for d, gold in zip(self.docs, self.gold):
            doc = default.prepare_text(res, d["text"])
            read = d["read"]
            if read is None or not len(doc.candidates):
                ranked = []
            else:
                scores = default.score(res, doc, read, method, idf)
                ranked = default.rank(res, doc, read, scores, max(ks))
            pred = unique_normalised([p for p, _ in ranked], self.lang)
            gs = set(gold)
            for k in ks:
                top = pred[:k]
                m = sum(1 for p in top if p in gs)
                p_ = m / len(top) if top else 0.0
                r_ = m / len(gs) if gs else 0.0
                f[k].append(2 * p_ * r_ / (p_ + r_) if p_ + r_ else 0.0)
        if per_doc:
            return {k: np.asarray(v) for k, v in f.items()}
        return {k: float(np.mean(v)) for k, v in f.items()}


def predict(out: Path, kind: str, method: str, target: Path) -> None:
    """The shipped default profile's ranked phrases from cached reads, in ``--predictions-out`` form."""
    from keyatten_lite.profiles.default import BUNDLE_CONFIGS

    path = out / f"{kind}.pkl" if kind in KINDS else merge_parts(out, kind)
    scorer = Scorer(path)
    config = BUNDLE_CONFIGS[scorer.bundle]
    ranked = scorer.rank_all(config, method, 15)
    label = f"lite-default:{scorer.bundle}:{method}" + (" (transductive idf)" if method.endswith("_idf") else "")
    with open(target, "w", encoding="utf-8") as handle:
        for d, phrases in zip(scorer.docs, ranked):
            handle.write(json.dumps({"system": label, "id": d["id"], "keywords": phrases}, ensure_ascii=False) + "\n")


def report(dataset: Path, split: str | None, limit: int | None, files, reference: str, target: Path, title: str) -> None:
    """F1@5/10/15 of every system in the prediction files, on the documents they all cover, and the
    paired bootstrap (1000 resamples, the eval's seed) of ``reference`` minus each other system."""
    from keyatten_lite.evaluation.metrics import (
        match_counts, paired_bootstrap, per_document_scores, read_dataset, select_documents,
    )

    docs = select_documents(read_dataset(dataset), split=split, limit=limit)
    systems: dict[str, dict[str, list[str]]] = {}
    for f in files:
        for line in open(f, encoding="utf-8"):
            row = json.loads(line)
            systems.setdefault(row["system"], {})[row["id"]] = row["keywords"]
    ids = [d.id for d in docs if all(d.id in per for per in systems.values())]
    docs = [d for d in docs if d.id in set(ids)]
    ks = (5, 10, 15)
    f1 = {}
    for name, per in systems.items():
        counts = match_counts([per[d.id] for d in docs], docs, ks)
        f1[name] = per_document_scores(counts)["f1"]
    ref = next(n for n in systems if n.startswith(reference))
    result = {"title": title, "dataset": str(dataset), "split": split, "limit": limit, "n_docs": len(docs),
              "reference": ref, "systems": {}, "bootstrap": {}}
    lines = [f"### {title} ({len(docs)} documents)", "", "| system | F1@5 | F1@10 | F1@15 |", "|---|---|---|---|"]
    for name, scores in f1.items():
        means = scores.mean(axis=0)
        result["systems"][name] = {str(k): float(m) for k, m in zip(ks, means)}
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    lines += ["", f"Paired bootstrap, {ref} minus each (95 % interval):", ""]
    for name, scores in f1.items():
        if name == ref:
            continue
        parts = []
        for column, k in enumerate(ks):
            b = paired_bootstrap(f1[ref][:, column], scores[:, column])
            result["bootstrap"].setdefault(name, {})[str(k)] = [b.difference, b.low, b.high]
            parts.append(f"@{k} {b.difference:+.3f} [{b.low:+.3f}, {b.high:+.3f}]")
        lines.append(f"- vs {name}: " + "; ".join(parts))
    target.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    target.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["cache", "predict", "report"])
    parser.add_argument("out", type=Path, help="cache folder (cache, predict) or report file stem (report)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--method", default="received_attn")
    parser.add_argument("--target", type=Path)
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--split")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--reference", default="lite-default:")
    parser.add_argument("--title", default="")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "cache":
        cache(args.out, args.kinds.split(","))
    elif args.command == "predict":
        predict(args.out, args.kinds, args.method, args.target)
    else:
        report(args.dataset, args.split, args.limit, args.files, args.reference, args.out, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
