"""``candidate_scoring="bio"``: BIO-tagged spans as candidates, ranked by attention (§4.8) or alone.

The candidates are a BIO bundle's Viterbi spans (:class:`keyatten_lite.extractors.bio_tagger.BIOExtractor`, windowed).
Each is scored on its occurrences in the text with the token path's scores (§3.4, optionally the §3.6
IDF product). Two profiles:

* ``compat`` (keyatten 0.3.1 §4.8): only documents with word candidates are answered; token scores come
  from the first window (0.3.1 truncates); an occurrence scores the mean of the kept tokens overlapping it
  (0 if none); a candidate scores the maximum over its occurrences *starting from 0*.
* ``default``: the §4.8 bugs fixed (behaviour write-up §12.1 items 3, 4, 13, 19): no word-candidate
  gate; every window is read and an occurrence scores the mean, over the windows that contain it, of its
  tokens' mean; the maximum starts from -inf (negative scores stay negative; a span with no scored
  occurrence is dropped); occurrences are found case-insensitively; words missing from the IDF get the
  default profile's unseen IDF instead of 0.

"BIO alone" methods rank the spans without attention: ``bio_confidence`` (tagger confidence, see
:func:`keyatten_lite.scoring.bio_decode.span_confidence`) and ``bio_order`` (first occurrence first).

Everything here is a pure function over numpy arrays and lists; ``pipeline/bio.py`` drives the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from keyatten_lite.scoring import attention

__all__ = [
    "BIO_ALONE_METHODS",
    "BIOAnalysis",
    "WindowTokens",
    "find_occurrences",
    "occurrence_scores",
    "bio_span_scores",
    "word_tfidf_values",
    "window_token_values",
]

BIO_ALONE_METHODS: tuple[str, ...] = ("bio_confidence", "bio_order")


@dataclass
class WindowTokens:
    """The kept text tokens of one window: character offsets ``[k, 2]`` and raw token scores per base
    method, ``[n_layers, k]`` over the layer positions the analysis was asked for."""

    offsets: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def char_range(self) -> tuple[int, int]:
        if self.offsets.shape[0] == 0:
            return (0, 0)
        return int(self.offsets[:, 0].min()), int(self.offsets[:, 1].max())


@dataclass
class BIOAnalysis:
    """One document: its text, the BIO spans with confidences, and the token scores of its windows."""

    text: str
    spans: list[tuple[str, float]]
    windows: list[WindowTokens]
    layer_positions: list[int]


def find_occurrences(text: str, phrase: str, *, ignore_case: bool = False) -> np.ndarray:
    """Every occurrence ``[start, end)`` of ``phrase`` in ``text``, overlapping ones included (the next
    search starts one character after the previous match, as 0.3.1's ``find(idx + 1)`` loop)."""
    if not phrase:
        return np.zeros((0, 2), dtype=np.int64)
    haystack, needle = text, phrase
    if ignore_case:
        lowered, lowered_phrase = text.lower(), phrase.lower()
        # str.lower can change lengths (e.g. 'İ'); then offsets would not map back: search as is.
        if len(lowered) == len(text) and len(lowered_phrase) == len(phrase):
            haystack, needle = lowered, lowered_phrase
    found = []
    index = haystack.find(needle)
    while index >= 0:
        found.append((index, index + len(needle)))
        index = haystack.find(needle, index + 1)
    return np.asarray(found, dtype=np.int64).reshape(-1, 2)


def _span_means(offsets: np.ndarray, values: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean of the tokens overlapping each span, number of such tokens); mean 0 where none."""
    if spans.shape[0] == 0 or offsets.shape[0] == 0:
        return np.zeros(spans.shape[0]), np.zeros(spans.shape[0], dtype=np.int64)
    overlap = (offsets[None, :, 1] > spans[:, None, 0]) & (offsets[None, :, 0] < spans[:, None, 1])
    counts = overlap.sum(axis=1)
    sums = overlap.astype(np.float64) @ np.asarray(values, dtype=np.float64)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0), counts


def occurrence_scores(
    windows: Sequence[WindowTokens], window_values: Sequence[np.ndarray], spans: np.ndarray, *, compat: bool
) -> np.ndarray:
    """Score of each occurrence ``spans [O, 2]`` from per-window token values (one array per window).

    ``compat``: the first window only; an occurrence without an overlapping token scores 0 (§4.7).
    Otherwise: the mean over the windows that contain the occurrence whole (or, when none does, that
    overlap it) of the mean of its overlapping tokens; NaN when no window has such a token.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if compat:
        if not windows:
            return np.zeros(spans.shape[0])
        means, _ = _span_means(windows[0].offsets, window_values[0], spans)
        return means
    total = np.zeros(spans.shape[0])
    used = np.zeros(spans.shape[0])
    partial_total = np.zeros(spans.shape[0])
    partial_used = np.zeros(spans.shape[0])
    for window, values in zip(windows, window_values):
        means, counts = _span_means(window.offsets, values, spans)
        lo, hi = window.char_range
        whole = (spans[:, 0] >= lo) & (spans[:, 1] <= hi) & (counts > 0)
        total += np.where(whole, means, 0.0)
        used += whole
        partial = counts > 0
        partial_total += np.where(partial, means, 0.0)
        partial_used += partial
    out = np.full(spans.shape[0], np.nan)
    has_whole = used > 0
    out[has_whole] = total[has_whole] / used[has_whole]
    only_partial = ~has_whole & (partial_used > 0)
    out[only_partial] = partial_total[only_partial] / partial_used[only_partial]
    return out


def bio_span_scores(
    analysis: BIOAnalysis,
    window_values: Sequence[np.ndarray],
    *,
    compat: bool,
) -> np.ndarray:
    """§4.8 step 4: each span's best occurrence score (compat: the maximum starting from 0.0, so
    negative scores and spans never found floor at 0; default: starting from -inf)."""
    out = np.empty(len(analysis.spans))
    for c, (piece, _) in enumerate(analysis.spans):
        occurrences = find_occurrences(analysis.text, piece, ignore_case=not compat)
        values = occurrence_scores(analysis.windows, window_values, occurrences, compat=compat)
        values = values[np.isfinite(values)]
        best = 0.0 if compat else -np.inf
        out[c] = max(best, float(values.max())) if values.size else best
    return out


def word_tfidf_values(
    keys: Sequence[str], valid: np.ndarray, lookup: Mapping[str, float], unseen: float
) -> np.ndarray:
    """§5.3 ``tf(key) · idf(key)`` of each word (0 for invalid words), with ``unseen`` as the IDF of
    valid words the lookup lacks (0.3.1 used 0, which wipes them out of the product)."""
    valid = np.asarray(valid, dtype=bool)
    counts = Counter(k for k, ok in zip(keys, valid) if ok)
    return np.fromiter(
        (counts[k] * float(lookup.get(k, unseen)) if ok else 0.0 for k, ok in zip(keys, valid)),
        dtype=np.float32,
        count=len(keys),
    )


def window_token_values(
    analysis: BIOAnalysis,
    base: str,
    layer_indices: Sequence[int],
    weights: Sequence[float] | None,
    word_spans: np.ndarray | None,
    word_values: np.ndarray | None,
) -> list[np.ndarray]:
    """Per-window token scores of ``base``: the layers at ``layer_indices`` (rows of the analysis'
    score arrays) fused with ``weights`` (§3.5), then, with word values, the §3.6 product hybrid."""
    out = []
    for window in analysis.windows:
        rows = window.scores[base][list(layer_indices)]
        if rows.shape[0] == 1:
            values = rows[0].astype(np.float32)
        else:
            fused = attention.fuse_layers([{base: row} for row in rows], weights)
            values = np.asarray(fused[base], dtype=np.float32)
        if word_values is not None and values.size:
            token_tfidf = attention.project_word_values_to_tokens(word_spans, window.offsets, word_values)
            values = attention.idf_hybrid(values, token_tfidf)
        out.append(values)
    return out
