"""The default profile's candidate scoring, pure functions over numpy arrays.

Token scores become word scores by character overlap; a candidate's score combines the attention of all
its occurrences with IDF, first position, frequency and length, log-linearly (the weights are the
profile's constants, ``keyatten_lite.profiles.default.DefaultProfileConfig``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.normalize import normalize_phrase
from keyatten_lite.text.phrases import CandidateSet

if TYPE_CHECKING:  # the constants live with the profile; scoring only reads them
    from keyatten_lite.profiles.default import DefaultProfileConfig

def word_scores_from_token_offsets(
    word_spans: np.ndarray,
    token_offsets: np.ndarray,
    token_scores: np.ndarray,
    how: str = "mean",
    alignable: np.ndarray | None = None,
) -> np.ndarray:
    """Each word's score from the tokens whose character span overlaps it (mean, max or sum).

    Tokens are in text order, so the overlapping tokens of a word form a contiguous range found with
    two binary searches. Words without a token (none: every character is tokenised) score 0.
    """
    spans = np.asarray(word_spans, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(token_offsets, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(token_scores, dtype=np.float64).reshape(-1)
    if values.shape[0] != offsets.shape[0]:
        raise InvalidArgumentError(f"{values.shape[0]} token scores for {offsets.shape[0]} token offsets")
    keep = (offsets[:, 1] > offsets[:, 0]) if alignable is None else (alignable & (offsets[:, 1] > offsets[:, 0]))
    offsets, values = offsets[keep], values[keep]
    out = np.zeros(spans.shape[0], dtype=np.float64)
    if spans.shape[0] == 0 or offsets.shape[0] == 0:
        return out
    # Tokens are ordered; the running max of ends makes the overlap range search safe.
    ends = np.maximum.accumulate(offsets[:, 1])
    lo = np.searchsorted(ends, spans[:, 0], side="right")  # first token ending after the word starts
    hi = np.searchsorted(offsets[:, 0], spans[:, 1], side="left")  # tokens starting before the word ends
    has = hi > lo
    if how == "max":
        for w in np.flatnonzero(has):
            out[w] = values[lo[w] : hi[w]].max()
        return out
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    total = prefix[hi] - prefix[lo]
    if how == "sum":
        return np.where(has, total, 0.0)
    if how != "mean":
        raise InvalidArgumentError(f"how must be mean, max or sum, got {how!r}")
    return np.where(has, total / np.maximum(hi - lo, 1), 0.0)


def idf_values(
    words: Sequence[str], valid: np.ndarray, lookup: Mapping[str, float], unseen: float
) -> np.ndarray:
    """IDF of each word's key (``unseen`` for a valid word missing from the lookup; 0 for invalid words)."""
    valid = np.asarray(valid, dtype=bool)
    return np.fromiter(
        (lookup.get(normalize_phrase(w), unseen) if ok else 0.0 for w, ok in zip(words, valid)),
        dtype=np.float64,
        count=len(words),
    )


def unseen_idf_value(lookup: Mapping[str, float], document_count: int | None, rule: str) -> float:
    """The IDF given to words the lookup lacks: ``ln(N+1)+1`` (df = 0), the largest seen IDF, or 0."""
    if rule == "zero":
        return 0.0
    if rule == "df0" and document_count is not None:
        return math.log(max(document_count, 1) + 1) + 1.0
    return max(lookup.values(), default=1.0)


def score_candidates(
    cands: CandidateSet,
    word_scores: np.ndarray,
    word_idf: np.ndarray | None,
    config: DefaultProfileConfig,
    names: float = 0.0,
) -> np.ndarray:
    """Log-linear candidate score (see :class:`DefaultProfileConfig`); float64 [C]. ``names``: the
    document's capitalised share (:func:`keyatten_lite.text.phrases.capitalised_share`)."""
    C = len(cands)
    if C == 0:
        return np.zeros(0, dtype=np.float64)
    ws = np.maximum(np.asarray(word_scores, dtype=np.float64), 0.0)
    prefix = np.concatenate([[0.0], np.cumsum(ws)])
    length = (cands.occurrence_end - cands.occurrence_start).astype(np.float64)
    occurrence = (prefix[cands.occurrence_end] - prefix[cands.occurrence_start]) / length
    counts = cands.counts.astype(np.float64)
    mean_attention = np.bincount(cands.occurrence_candidate, weights=occurrence, minlength=C) / counts
    tiny = 1e-12
    frequency_power, length_power, position_scale = adaptive_powers(cands, len(ws), config, names)
    log_score = np.log(mean_attention + tiny) + frequency_power * np.log(counts)
    if word_idf is not None:
        idf_prefix = np.concatenate([[0.0], np.cumsum(np.asarray(word_idf, dtype=np.float64))])
        starts = cands.first_word
        ends = starts + cands.n_words
        mean_idf = (idf_prefix[ends] - idf_prefix[starts]) / cands.n_words
        log_score += config.idf_power * np.log(mean_idf + tiny)
    log_score -= config.position_power * np.log1p(cands.first_word.astype(np.float64) / position_scale)
    log_score += length_power * np.log(cands.n_words.astype(np.float64))
    return log_score


def uses_names(config: DefaultProfileConfig) -> bool:
    """Whether the priors read the document's capitalised share (only then is it computed)."""
    return bool(config.length_power_names or config.frequency_power_names)


def adaptive_powers(
    cands: CandidateSet, n_doc_words: int, config: DefaultProfileConfig, names: float = 0.0
) -> tuple[float, float, float]:
    """(frequency power, length power, position scale) for this document (``DefaultProfileConfig``:
    the priors are smooth functions of the document's length, of how often its multi-word
    candidates repeat and of the share ``names`` of its words capitalised inside a sentence)."""
    fp, lp, scale = config.frequency_power, config.length_power, config.position_scale
    if not (
        config.length_power_repeat or config.length_power_size or config.frequency_power_size
        or config.position_scale_size or uses_names(config)
    ):
        return fp, lp, scale
    size = math.log(max(n_doc_words, 1) / 100.0)
    if config.names_words:
        names *= math.exp(-n_doc_words / config.names_words)
    multi = cands.n_words >= 2
    repeat = float((cands.counts[multi] >= 2).mean()) if multi.any() else 0.0
    lp = lp + config.length_power_repeat * repeat + config.length_power_size * size + config.length_power_names * names
    lp = min(max(lp, 0.0), 2.0)
    fp = fp + config.frequency_power_size * size + config.frequency_power_names * names
    fp = min(max(fp, 0.0), 1.5)
    return fp, lp, scale * math.exp(config.position_scale_size * size)


def rank_candidate_set(
    cands: CandidateSet, scores: np.ndarray, top_k: int, nested: str = "none"
) -> list[tuple[str, float]]:
    """Best ``top_k`` (text, score); ties keep the earlier candidate. ``nested``: ``substring`` skips a
    key inside or around a taken key; ``contained`` skips a candidate whose every occurrence may lie
    inside a taken longer candidate (its count is not above the taken one's). When fewer than ``top_k``
    survive "contained", the best suppressed candidates fill the list, in score order."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(-values[finite], kind="stable")].tolist()
    if nested == "none":
        return [(cands.texts[i], float(values[i])) for i in order[:top_k]]
    counts = cands.counts
    taken: list[int] = []
    out: list[tuple[str, float]] = []
    for i in order:
        key = cands.keys[i]
        if nested == "substring":
            if any(key in cands.keys[j] or cands.keys[j] in key for j in taken):
                continue
        else:  # contained; English pads with spaces so that the test is word-aligned
            pad = " " if cands.joiner else ""
            inner = pad + cands.texts[i].lower() + pad
            if any(
                cands.n_words[j] > cands.n_words[i]
                and inner in pad + cands.texts[j].lower() + pad
                and counts[i] <= counts[j]
                for j in taken
            ):
                continue
        taken.append(i)
        out.append((cands.texts[i], float(values[i])))
        if len(out) >= top_k:
            break
    if nested == "contained" and len(out) < top_k:
        # Fewer survivors than asked (short texts): the best suppressed candidates join them, and the
        # list stays in score order.
        chosen = set(taken)
        extra = [i for i in order if i not in chosen][: top_k - len(out)]
        keep = chosen | set(extra)
        out = [(cands.texts[i], float(values[i])) for i in order if i in keep]
    return out


