"""The disk cache around the pipeline (docs/cache.md): look every document up, run only the misses.

The cache never changes an answer: keys hold everything the answer depends on (bundle content hash,
package and library versions, every parameter, the dictionary state, the IDF fingerprint for ``_idf``
methods only). Two wrappers, one per kind of stages:

* ``run_compat_cached`` (0.3.1's stages): (1) keyword layer by text + dictionary fingerprint, no
  segmentation; on a miss, segment, then (2) keyword layer by the segmentation, (3) document layer by
  the segmentation (word scores of all six methods: no forward pass), (4) compute.
* ``run_raw_text_cached`` (the default profile): keyword layer by text + configuration.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from keyatten_lite.pipeline import compat, default
from keyatten_lite.pipeline.inputs import Input
from keyatten_lite.pipeline.stages import Idf, run_stages
from keyatten_lite.scoring import attention
from keyatten_lite.state.cache import DiskCache, DocumentEntry, cache_key
from keyatten_lite.state.idf import IdfState, lookup_fingerprint
from keyatten_lite.text.candidates import token_counts
from keyatten_lite.text.guard import TEXT_RULES_VERSION

_TITLE_OPEN, _TITLE_CLOSE = "《", "》"
Ranked = list[tuple[str, float]]


@functools.lru_cache(maxsize=None)
def library_versions(language: str) -> dict:
    """Versions of the libraries whose behaviour is part of the answer (cache keys)."""
    from importlib.metadata import PackageNotFoundError, version

    def get(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    # The Porter stemmer (text/porter.py, versioned with the package) makes the phrase keys; jieba
    # segments Chinese.
    return {"jieba": get("jieba") if language == "zh" else None}


def idf_fingerprint(idf_argument, fitted: IdfState | None) -> str | None:
    """§5.5 fingerprint; an IdfState (including the fitted one) computes it once and keeps it."""
    if isinstance(idf_argument, IdfState):
        return idf_argument.fingerprint()
    if idf_argument is not None:
        # A plain mapping may have changed since the last call, so it is hashed once per call.
        return lookup_fingerprint(idf_argument)
    return fitted.fingerprint() if fitted is not None else None


def compat_config(res) -> dict:
    """Everything that changes a document's analysis, except the document and the dictionary."""
    from keyatten_lite import __version__

    s = res.settings
    bundle = res.bundle
    positions, weights = res.read_layers()
    return {
        "schema": "keyatten-lite-cache-key/1",
        "package": __version__,
        "text_rules": TEXT_RULES_VERSION,
        "bundle": bundle.content_hash,
        "variant": s.variant,
        "language": s.language,
        "candidate_scoring": s.candidate_scoring,
        # Resolved values: layer_index=-1 and 5 on a 6-layer model share entries.
        "layers": [bundle.exported_layers[p] for p in positions],
        "layer_weights": [float(w) for w in weights],
        "causal": res.is_causal,
        "prefix": res.resolved_prefix() if s.word_mode else res.token_prefix(),
        "libraries": library_versions(s.language),
    }


def _replay_segmentation_side_effects(res, inp: Input) -> None:
    """On a cache hit, register the document's 《》 titles as segmenting it would have, so that
    later documents see the same dictionary (and keys) with or without the cache."""
    if res.settings.language == "zh" and inp.text is not None and _TITLE_OPEN in inp.text and _TITLE_CLOSE in inp.text:
        res.segment_clean(inp.text)


def run_compat_cached(
    res,
    cache: DiskCache,
    inputs: list[Input],
    method: str,
    uses_idf: bool,
    idf_fp: str | None,
    idf: Idf | None,
    top_k: int,
    batch_size: int,
) -> list[Ranked]:
    s = res.settings
    n = len(inputs)
    results: list[Ranked | None] = [None] * n
    if all(inp.is_blank for inp in inputs):
        return [[] for _ in inputs]
    word_mode = s.word_mode
    config = compat_config(res)
    if word_mode:
        # Resolve the prefix before any document, so hits and misses segment it at the same point.
        res.prefix_words()
    keyword_fields = {
        "method": method,
        "top_k": top_k,
        "dedup_nested": s.dedup_nested,
        "dedup_nested_for_topk5": s.dedup_nested_for_topk5,
        "tie_break": s.tie_break,
        # Only the _idf methods depend on the IDF (0.3.1 keyed every method on it).
        "idf": idf_fp if uses_idf else None,
    }
    docs: list[compat.Document | None] = [None] * n
    scores: list[dict[str, np.ndarray] | None] = [None] * n
    write_keys: list[list[str]] = [[] for _ in range(n)]  # keyword keys to store the result under
    document_keys: list[str | None] = [None] * n
    misses: list[int] = []
    for i, inp in enumerate(inputs):
        if inp.is_blank:
            results[i] = []
            continue
        if inp.text is not None:
            with res.segment_lock:
                # Fingerprint taken before this document is segmented: the dictionary state its
                # segmentation depends on (segmenting it registers its own 《》 titles).
                text_key = cache_key({**config, "dictionary": res.dictionary_state(), "text": inp.text, **keyword_fields})
                hit = cache.get_keywords(text_key)
                if hit is not None:
                    results[i] = hit
                    _replay_segmentation_side_effects(res, inp)
                    continue
                words, tags = compat.segment_input(res, inp)
            write_keys[i].append(text_key)
        else:
            words, tags = inp.tokens, inp.tags
        doc_key = cache_key(
            {
                **config,
                "words": words,
                "tags": tags,
                # token_span scores character spans of the text itself.
                "text": None if word_mode else inp.text,
            }
        )
        keyword_key = cache_key({"document": doc_key, **keyword_fields})
        write_keys[i].append(keyword_key)
        hit = cache.get_keywords(keyword_key)
        if hit is not None:
            results[i] = hit
            continue
        entry = cache.get_document(doc_key) if word_mode else None
        if entry is not None and entry.words == list(words) and entry.tags == list(tags):
            docs[i] = compat.Document(
                entry.words, entry.tags, [], [], entry.candidates, entry.keys, inp.text, entry.token_counts
            )
            scores[i] = entry.scores
            continue
        docs[i] = compat.make_document(res, words, tags, inp.text)
        document_keys[i] = doc_key
        misses.append(i)

    span_reads: dict[int, object] = {}
    if misses and word_mode:
        computed = compat.read_words(res, [docs[i] for i in misses], None, batch_size)
        for i, doc_scores in zip(misses, computed):
            doc = docs[i]
            scores[i] = doc_scores
            entry = DocumentEntry(
                doc.words, doc.tags, doc.candidates, doc.keys, dict(token_counts(doc.words, doc.tags, s.language)), doc_scores
            )
            doc.token_counts = entry.token_counts
            cache.put_document(document_keys[i], entry)
    elif misses:
        base = attention.base_method(method)[0]
        span_reads = dict(zip(misses, compat.read_spans(res, [docs[i] for i in misses], [base], batch_size)))

    for i in range(n):
        if results[i] is None:
            doc = docs[i]
            if word_mode:
                candidate_scores = compat.score_words(res, doc, scores[i], method, idf)
            else:
                read = span_reads[i]
                candidate_scores = np.zeros(0) if read is None else compat.score_spans(res, doc, read, method, idf)
            results[i] = compat.rank(res, doc, None, candidate_scores, top_k)
            for key in write_keys[i]:
                cache.put_keywords(key, results[i])
        elif len(write_keys[i]) == 2:  # found by segmentation: add the fast text entry
            cache.put_keywords(write_keys[i][0], results[i])
    return results  # type: ignore[return-value]


def run_raw_text_cached(
    res,
    cache: DiskCache | None,
    texts: Sequence[str],
    method: str,
    uses_idf: bool,
    idf_fp: str | None,
    idf: Idf | None,
    top_k: int,
    batch_size: int,
) -> list[Ranked]:
    """The default profile's stages on raw reading texts, with a keyword-layer cache when given."""
    from keyatten_lite import __version__

    results: list[Ranked | None] = [[] if not t.strip() else None for t in texts]
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return [[] for _ in texts]
    keys: dict[int, str] = {}
    if cache is not None:
        s = res.settings
        config = {
            "schema": "keyatten-lite-default-profile/1",
            "package": __version__,
            "bundle": res.bundle.content_hash,
            "variant": s.variant,
            "language": s.language,
            "layers": default.layer_positions(res, attention.base_method(method)[0]),
            "config": repr(default.constants(res)),
            "libraries": library_versions(s.language),
            "dictionary": res.dictionary_state(),
            "method": method,
            "top_k": top_k,
            "idf": idf_fp if uses_idf else None,
        }
        for i in todo:
            keys[i] = cache_key({**config, "text": texts[i]})
            results[i] = cache.get_keywords(keys[i])
        todo = [i for i in todo if results[i] is None]
    if todo:
        computed = run_stages(default.RAW_TEXT, res, [texts[i] for i in todo], [method], top_k, idf, batch_size)[method]
        for i, ranked in zip(todo, computed):
            results[i] = ranked
            if i in keys:
                cache.put_keywords(keys[i], ranked)
    return results  # type: ignore[return-value]
