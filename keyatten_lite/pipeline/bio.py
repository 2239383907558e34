"""``candidate_scoring="bio"`` stages: BIO spans as candidates, ranked by attention (§4.8) or alone.

prepare: the cleaned text; read: the BIO tagger's spans and, for attention methods, per-window token
scores (from the BIO graph itself when it shares the attention bundle's backbone: one forward pass;
otherwise from the attention bundle's own windows); score: ``scoring/bio.py`` (0.3.1's §4.8 in
``profile="compat"``, its fixed form in the default profile); rank: stable, ties keep the BIO order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.pipeline.compat import Document, kept_text_tokens, prepare_input
from keyatten_lite.pipeline.inputs import Input
from keyatten_lite.pipeline.stages import Idf, Stages
from keyatten_lite.profiles.default import tuned_layers
from keyatten_lite.scoring import attention
from keyatten_lite.scoring.bio import (
    BIO_ALONE_METHODS,
    BIOAnalysis,
    WindowTokens,
    bio_span_scores,
    window_token_values,
    word_tfidf_values,
)
from keyatten_lite.scoring.default import unseen_idf_value
from keyatten_lite.state.idf import tfidf_word_values
from keyatten_lite.text.candidates import rank_candidates, valid_word_mask
from keyatten_lite.text.normalize import normalize_phrase
from keyatten_lite.text.phrases import chinese_words, english_valid_mask, english_words
from keyatten_lite.text.segment import locate_word_offsets

# Documents whose windows are sorted and batched together.
BIO_CHUNK_DOCS = 256


def base_of(method: str) -> str | None:
    if isinstance(method, str) and method in BIO_ALONE_METHODS:
        return None
    return attention.base_method(method)[0]


def check_method(method, candidate_scoring: str) -> tuple[str | None, bool]:
    """``(base method, uses_idf)``; the BIO-alone methods (bio mode only) have no base method."""
    if isinstance(method, str) and method in BIO_ALONE_METHODS:
        if candidate_scoring != "bio":
            raise InvalidArgumentError(f"method {method!r} ranks BIO spans: it needs candidate_scoring='bio'")
        return None, False
    return attention.base_method(method)


def is_compat(res) -> bool:
    return res.settings.profile.bio == "bio_compat"


@dataclass
class BioDocument:
    text: str  # cleaned
    word_document: Document | None = None  # compat: 0.3.1's word candidates (its gate and its IDF words)


@dataclass
class BioRead:
    analysis: BIOAnalysis
    layers: dict[str, tuple[list[int], list[float]]]  # per base method: layer positions and weights


def prepare(res, texts: Sequence[str]) -> list[BioDocument]:
    return [BioDocument(res.clean(t)) for t in texts]


def layers_for(res, base: str) -> tuple[list[int], list[float]]:
    """Layer positions (in ``res.bundle``) and fusion weights: compat and explicit layers as the token
    path reads them; otherwise the default profile's tuned layers."""
    s = res.settings
    if is_compat(res) or s.layer_indices is not None or s.layer_index is not None:
        return res.read_layers()
    res.bio()
    layers = list(tuned_layers(res.bio_attention_name or "", base) or [-1])
    return [res.bundle.layer_position(x) for x in layers], [1.0] * len(layers)


def read(res, docs: Sequence[BioDocument], bases: Sequence[str], batch_size: int) -> list[BioRead | None]:
    compat = is_compat(res)
    out: list[BioRead | None] = [None] * len(docs)
    todo = [i for i, d in enumerate(docs) if d.text.strip()]
    if compat and bases:
        # 0.3.1 builds the word candidates first and answers [] when there are none (§4.8 step 1).
        for i in todo:
            docs[i].word_document = prepare_input(res, Input(docs[i].text), with_prefix=False)
        todo = [i for i in todo if docs[i].word_document.candidates]
    if not todo:
        return out
    layers = {base: layers_for(res, base) for base in bases}
    positions = list(dict.fromkeys(p for ps, _ in layers.values() for p in ps))
    # Windows are sorted by length across a whole chunk before batching (padding costs quadratic
    # attention time); each window's attention is reduced as its batch completes, so chunks can be large.
    chunk_docs = max(batch_size, BIO_CHUNK_DOCS)
    for first in range(0, len(todo), chunk_docs):
        chunk = todo[first : first + chunk_docs]
        analyses = _analyses(res, [docs[i].text for i in chunk], list(bases), positions, compat, batch_size)
        for i, analysis in zip(chunk, analyses):
            out[i] = BioRead(analysis, layers)
    return out


def _analyses(res, texts: Sequence[str], bases: Sequence[str], positions: Sequence[int], compat: bool, batch_size: int):
    """BIO spans and per-window token scores (``bases`` at ``positions``) of each text."""

    def window_tokens(text: str, window, attention_maps: np.ndarray):
        if compat and window.window_index > 0:  # 0.3.1 reads the first (truncated) window only
            return None
        offsets = np.asarray(window.offsets, dtype=np.int64).reshape(-1, 2)
        kept = kept_text_tokens(text, offsets, 0)
        scores = {b: np.zeros((len(positions), int(kept.sum())), dtype=np.float32) for b in bases}
        if kept.any():
            for row, p in enumerate(positions):
                A = np.ascontiguousarray(attention_maps[p], dtype=np.float32)
                per_method = attention.token_method_scores(A, causal=False, content_mask=kept, methods=bases)
                for b in bases:
                    scores[b][row] = per_method[b][kept]
        return WindowTokens(offsets[kept], scores)

    bio = res.bio()
    with_attention = bool(bases)
    shared = with_attention and res.bio_shared
    docs = bio.analyse_batch(texts, with_attention=shared, reduce=window_tokens if shared else None, batch_size=batch_size)
    if not with_attention:
        return [BIOAnalysis(t, d.spans, [], []) for t, d in zip(texts, docs)]
    if shared:
        per_text = [d.attentions for d in docs]
    else:
        per_text = _attention_windows(res, texts, compat, batch_size, window_tokens)
    return [
        BIOAnalysis(text, doc.spans, [w for w in tokens if w is not None], list(positions))
        for text, doc, tokens in zip(texts, docs, per_text)
    ]


def _attention_windows(res, texts: Sequence[str], first_only: bool, batch_size: int, reduce) -> list[list]:
    """Attention bundle windows (not shared with the BIO graph): per text, ``reduce(text, window,
    attention)`` of each window read."""
    from keyatten_lite.model.windows import overflow_windows, run_windows, window_tokenizer

    bundle = res.bundle
    if res.bio_window_tokenizer is None:
        stride = min(res.bio().window_stride, bundle.max_length - 3)
        res.bio_window_tokenizer = window_tokenizer(bundle, bundle.max_length, stride)
    windows = overflow_windows(res.bio_window_tokenizer, texts)
    if first_only:
        windows = [w for w in windows if w.window_index == 0]
    reduced = run_windows(
        bundle, windows, [bundle.output_name], batch_size,
        lambda i, out: reduce(texts[windows[i].text_index], windows[i], out[bundle.output_name]),
    )
    grouped: list[list] = [[] for _ in texts]
    for window, value in zip(windows, reduced):
        grouped[window.text_index].append(value)
    return grouped


def words_for_idf(res, text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Default bio profile: (keys, valid, character spans) of the words IDF applies to (the raw-text
    reader's words: English regex words with offsets, Chinese jieba words)."""
    if res.settings.language == "en":
        words, spans, _ = english_words(text)
        valid = english_valid_mask(words)
    else:
        with res.segment_lock:
            words, tags, spans = chinese_words(text, res.segmenter)
        valid = valid_word_mask(words, tags, "zh")
    return [normalize_phrase(w) for w in words], np.asarray(valid, dtype=bool), spans


def document_keys(res, text: str) -> set[str]:
    """The words whose IDF the default bio scoring looks up."""
    keys, valid, _ = words_for_idf(res, res.clean(text))
    return set(k for k, ok in zip(keys, valid) if ok)


def _word_values(res, doc: BioDocument, lookup: Mapping[str, float], idf_state) -> tuple[np.ndarray, np.ndarray]:
    """(word character spans, tf·idf word values) for the §3.6 product on the token path."""
    if is_compat(res):
        word_doc = doc.word_document
        assert word_doc is not None
        spans = np.asarray(locate_word_offsets(doc.text, word_doc.words), dtype=np.int64).reshape(-1, 2)
        return spans, tfidf_word_values(word_doc.words, word_doc.tags, res.settings.language, lookup)
    keys, valid, spans = words_for_idf(res, doc.text)
    count = idf_state.doc_count if idf_state is not None and idf_state.has_counts else None
    unseen = unseen_idf_value(lookup, count, "df0")
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2), word_tfidf_values(keys, valid, lookup, unseen)


def score(res, doc: BioDocument, read: BioRead, method: str, idf: Idf | None) -> np.ndarray:
    analysis = read.analysis
    if not analysis.spans:
        return np.zeros(0, dtype=np.float64)
    if method == "bio_confidence":
        return np.asarray([conf for _, conf in analysis.spans], dtype=np.float64)
    if method == "bio_order":
        return -np.arange(len(analysis.spans), dtype=np.float64)
    base = attention.base_method(method)[0]
    positions, weights = read.layers[base]
    rows = [analysis.layer_positions.index(p) for p in positions]
    word_spans = word_values = None
    if idf is not None:
        word_spans, word_values = _word_values(res, doc, idf.lookup, idf.state)
    values = window_token_values(analysis, base, rows, weights, word_spans, word_values)
    return bio_span_scores(analysis, values, compat=is_compat(res))


def rank(res, doc: BioDocument, read: BioRead, scores: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    span_texts = [piece for piece, _ in read.analysis.spans]
    if not span_texts:
        return []
    dedup = not is_compat(res) and res.settings.dedup_for(top_k)
    # Stable: ties keep the BIO order (§4.8 step 5), whatever tie_break says.
    return rank_candidates(
        span_texts, [normalize_phrase(t) for t in span_texts], scores, top_k, dedup_nested=dedup, tie_break="earlier"
    )


STAGES = Stages("bio", prepare=prepare, read=read, score=score, rank=rank, base_of=base_of)
