"""The default profile's word-mode stages: the raw text, read whole.

prepare: words located in the raw text and punctuation-bounded candidates (``text/phrases.py``);
read: the graph over windows of the raw text, token scores of each base method at the layers tuned for
it (``model/windows.py``); score: word scores by character overlap, then occurrences × IDF × position ×
frequency × length (``scoring/default.py``, constants from ``profiles/default.py``); rank: best first,
nested candidates suppressed as the constants say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keyatten_lite.model.windows import TokenScores, token_scores_for_texts
from keyatten_lite.pipeline.stages import Idf, Stages
from keyatten_lite.profiles.default import DefaultProfileConfig, config_for
from keyatten_lite.scoring import attention
from keyatten_lite.scoring.default import (
    idf_values,
    rank_candidate_set,
    score_candidates,
    uses_names,
    unseen_idf_value,
    word_scores_from_token_offsets,
)
from keyatten_lite.text.normalize import normalize_phrase
from keyatten_lite.text.phrases import (
    CandidateSet,
    capitalised_share,
    build_candidate_set,
    chinese_valid_mask,
    chinese_words,
    english_valid_mask,
    english_words,
    name_fragments,
    split_at_case_changes,
    title_case_words,
)


@dataclass
class RawTextDocument:
    text: str
    words: list[str]
    spans: np.ndarray
    valid: np.ndarray
    candidates: CandidateSet
    # English names features, found once here (every scored method reads them): the capitalised
    # share and, per candidate, whether it only occurs as a piece of a name (None when unused).
    names: float = 0.0
    name_fragments: np.ndarray | None = None


@dataclass
class RawTextRead:
    token_scores: TokenScores
    rows: dict[str, list[int]]  # per base method: rows of token_scores.scores[base] to average


def constants(res) -> DefaultProfileConfig:
    """The profile's constants for this bundle (read once per extractor: config_for parses a file)."""
    profile = res.settings.profile
    if profile.constants is not None:
        return profile.constants
    cached = res.memo.get("raw_text_constants")
    if cached is None:
        cached = res.memo["raw_text_constants"] = config_for(res.bundle.name, res.settings.language)
    return cached


def layer_positions(res, base: str | None = None) -> list[int]:
    """Indices into the bundle's exported layers of the layers to average for base method ``base``."""
    bundle = res.bundle
    wanted = res.settings.explicit_layers()
    profile_constants = res.settings.profile.constants
    if wanted is None and profile_constants is not None and profile_constants.layers:
        wanted = list(profile_constants.layers)
    if wanted is None:
        layers = config_for(bundle.name, res.settings.language, base).layers
        wanted = list(layers) if layers else [-1]
    return [bundle.layer_position(i) for i in wanted]


def words_of(res, text: str):
    """(words, tags or None, spans, segments or None, valid) of a raw text."""
    cfg = constants(res)
    if res.settings.language == "en":
        words, spans, segments = english_words(text)
        if cfg.case_boundaries:
            segments = split_at_case_changes(words, segments)
        limit = cfg.pos_filter_max_words
        pos_filter = cfg.pos_filter if limit is None or len(words) <= limit else "none"
        return words, None, spans, segments, english_valid_mask(words, pos_filter)
    with res.segment_lock:
        words, tags, spans = chinese_words(text, res.segmenter)
    return words, tags, spans, None, chinese_valid_mask(words, tags, cfg.zh_extra_tags)


def document_keys(res, text: str) -> set[str]:
    """The keys whose IDF the raw-text scoring looks up (what ``fit_idf`` counts)."""
    words, _tags, _spans, _segments, valid = words_of(res, text)
    return {normalize_phrase(w) for w, ok in zip(words, valid) if ok}


def prepare_text(res, text: str) -> RawTextDocument:
    cfg = constants(res)
    words, tags, spans, segments, valid = words_of(res, text)
    if not cfg.punctuation_boundaries:
        segments = None
    cands = build_candidate_set(
        words, valid, segments, res.settings.language, max_ngram=cfg.max_ngram, tags=tags, end_filter=cfg.end_filter
    )
    doc = RawTextDocument(text, words, spans, valid, cands)
    if res.settings.language == "en" and (uses_names(cfg) or cfg.name_fragment_penalty):
        title = title_case_words(text, words, spans)
        if uses_names(cfg):
            doc.names = capitalised_share(text, words, spans, title=title)
        if cfg.name_fragment_penalty:
            doc.name_fragments = name_fragments(text, words, spans, cands, title=title)
    return doc


def prepare(res, texts: Sequence[str]) -> list[RawTextDocument]:
    """``texts`` are raw reading texts (``inputs.raw_reading_text``)."""
    return [prepare_text(res, t) for t in texts]


def read(res, docs: Sequence[RawTextDocument], bases: Sequence[str], batch_size: int) -> list[RawTextRead | None]:
    """One windowed pass over the documents with candidates, for every base method at the union of
    the layers they read (``batch_size`` is the constants' ``windows_per_batch`` here)."""
    out: list[RawTextRead | None] = [None] * len(docs)
    todo = [i for i, d in enumerate(docs) if len(d.candidates)]
    if not todo:
        return out
    cfg = constants(res)
    positions = {base: layer_positions(res, base) for base in bases}
    union = sorted({p for ps in positions.values() for p in ps})
    rows = {base: [union.index(p) for p in ps] for base, ps in positions.items()}
    token_scores = token_scores_for_texts(
        res.bundle,
        [docs[i].text for i in todo],
        list(bases),
        union,
        window=cfg.window,
        stride_fraction=cfg.stride_fraction,
        windows_per_batch=cfg.windows_per_batch,
    )
    for i, ts in zip(todo, token_scores):
        out[i] = RawTextRead(ts, rows)
    return out


def idf_parts(res, idf: Idf) -> tuple:
    """(lookup, the IDF of words the lookup lacks)."""
    state = idf.state
    n = state.doc_count if state is not None and state.has_counts else None
    return idf.lookup, unseen_idf_value(idf.lookup, n, constants(res).unseen_idf)


def score(res, doc: RawTextDocument, read: RawTextRead, method: str, idf: Idf | None) -> np.ndarray:
    cfg = constants(res)
    base = attention.base_method(method)[0]
    ts = read.token_scores
    per_token = ts.scores[base][read.rows[base]].mean(axis=0)
    words = word_scores_from_token_offsets(doc.spans, ts.offsets, per_token, cfg.token_to_word, ts.alignable)
    word_idf = None
    if idf is not None:
        lookup, unseen = idf_parts(res, idf)
        word_idf = idf_values(doc.words, doc.valid, lookup, unseen)
    scores = score_candidates(doc.candidates, words, word_idf, cfg, doc.names)
    if doc.name_fragments is not None:
        scores = scores - cfg.name_fragment_penalty * doc.name_fragments
    return scores


def rank(res, doc: RawTextDocument, read: RawTextRead, scores: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    return [(p, float(s)) for p, s in rank_candidate_set(doc.candidates, scores, int(top_k), constants(res).nested)]


RAW_TEXT = Stages("raw_text", prepare=prepare, read=read, score=score, rank=rank)
