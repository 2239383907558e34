"""BIO decoding (keyatten 0.3.1 §7.3-§7.6), pure numpy: Viterbi over the CRF, tags to token spans, span
text, relaxed (threshold) decoding and the span profiles, the span-ownership rule of overlapping windows."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from keyatten_lite.errors import InvalidArgumentError

TAGS = ("B", "I", "O")
TAG_B, TAG_I, TAG_O = 0, 1, 2

# ---------------------------------------------------------------------------------------------
# Viterbi and spans (§7.1, §7.3)


def viterbi_decode(emissions, start, end, transitions) -> list[int]:
    """Best tag path of one sequence: ``emissions`` [T, K], ``start``/``end`` [K], ``transitions`` [K, K].

    Same arithmetic order as a torch CRF (``score_i + T[i, j] + e_t[j]``, then the max over ``i``),
    and ties go to the first index, as torch ``max`` does.
    """
    emissions = np.asarray(emissions)
    dtype = np.result_type(emissions.dtype, np.float32)
    emissions = emissions.astype(dtype, copy=False)
    start = np.asarray(start, dtype=dtype)
    end = np.asarray(end, dtype=dtype)
    transitions = np.asarray(transitions, dtype=dtype)
    if emissions.ndim != 2 or emissions.shape[0] < 1:
        raise InvalidArgumentError(f"emissions must be a non-empty [T, K] array, got shape {emissions.shape}")
    n_tags = emissions.shape[1]
    if start.shape != (n_tags,) or end.shape != (n_tags,) or transitions.shape != (n_tags, n_tags):
        raise InvalidArgumentError(
            f"CRF scores do not match {n_tags} tags: start {start.shape}, end {end.shape}, "
            f"transitions {transitions.shape}"
        )
    score = start + emissions[0]
    history = np.empty((emissions.shape[0] - 1, n_tags), dtype=np.int64)
    for t in range(1, emissions.shape[0]):
        candidates = score[:, None] + transitions + emissions[t][None, :]
        history[t - 1] = np.argmax(candidates, axis=0)  # argmax: first index on ties
        score = candidates[history[t - 1], np.arange(n_tags)]
    score = score + end
    best = int(np.argmax(score))
    path = [best]
    for back in history[::-1]:
        best = int(back[best])
        path.append(best)
    path.reverse()
    return path


def bio_tags_to_spans(tags: Sequence[int]) -> list[tuple[int, int]]:
    """Token spans ``[start, end)``: B opens (closing any open span), I continues or opens, O closes."""
    spans: list[tuple[int, int]] = []
    open_start: int | None = None
    for index, tag in enumerate(tags):
        tag = int(tag)
        if tag == TAG_B:
            if open_start is not None:
                spans.append((open_start, index))
            open_start = index
        elif tag == TAG_I:
            if open_start is None:
                open_start = index
        else:
            if open_start is not None:
                spans.append((open_start, index))
            open_start = None
    if open_start is not None:
        spans.append((open_start, len(tags)))
    return spans


def span_text(text: str, offsets: Sequence[tuple[int, int]], start: int, end: int) -> str | None:
    """``text[off[start].start : off[end-1].end].strip()``, or None when §7.3 skips the span.

    Skipped: a start past the last token, an end offset not after the start offset (a span ending on
    [SEP], whose offsets are (0, 0)), and a text that is empty after stripping. A span starting on
    [CLS] starts at character 0 (its offsets are (0, 0)).
    """
    if start >= len(offsets) or end <= start:
        return None
    char_start = int(offsets[start][0])
    char_end = int(offsets[min(end, len(offsets)) - 1][1])
    if char_end <= char_start:
        return None
    piece = text[char_start:char_end].strip()
    return piece or None


def spans_to_text(
    text: str, offsets: Sequence[tuple[int, int]], spans: Iterable[tuple[int, int]]
) -> list[str]:
    """The texts of ``spans`` in order (skipped spans left out, duplicates kept)."""
    texts = []
    for start, end in spans:
        piece = span_text(text, offsets, start, end)
        if piece is not None:
            texts.append(piece)
    return texts


def dedup_lower(texts: Iterable[str]) -> list[str]:
    """First occurrence of each text, compared in lower case."""
    seen: set[str] = set()
    kept = []
    for piece in texts:
        key = piece.lower()
        if key not in seen:
            seen.add(key)
            kept.append(piece)
    return kept


# ---------------------------------------------------------------------------------------------
# Relaxed decoding (§7.4)


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def relaxed_token_spans(
    probs: np.ndarray, threshold: float, viterbi_spans: Iterable[tuple[int, int]] = ()
) -> list[tuple[int, int, float]]:
    """Threshold spans ``(start, end, conf)`` from per-token tag probabilities ``probs`` [T, 3].

    Scan i: if P_B(i) > threshold, extend over j > i while P_I(j) > P_O(j); conf is the mean of P_B(i)
    and the extension's P_I, plus 1.0 when the span equals a Viterbi span; resume after the span.
    """
    probs = np.asarray(probs, dtype=np.float64)
    exact = set((int(a), int(b)) for a, b in viterbi_spans)
    spans = []
    i, n = 0, probs.shape[0]
    while i < n:
        if probs[i, TAG_B] > threshold:
            j = i + 1
            while j < n and probs[j, TAG_I] > probs[j, TAG_O]:
                j += 1
            conf = float(np.mean(np.concatenate(([probs[i, TAG_B]], probs[i + 1 : j, TAG_I]))))
            if (i, j) in exact:
                conf += 1.0
            spans.append((i, j, conf))
            i = j
        else:
            i += 1
    return spans


def span_variants(
    start: int, end: int, n_tokens: int, max_expand_steps: int = 1, max_subspan_width: int = 0
) -> list[tuple[float, int, int]]:
    """``(penalty, start, end)`` variants of a span, kept inside ``[0, n_tokens)``.

    The span itself (0); extended left or right by e <= max_expand_steps tokens (0.08 e); on both
    sides (0.12 e); with ``max_subspan_width > 0``, each proper sub-span of at most that width (0.04
    per trimmed token). Duplicates keep the lowest penalty; ordered by (penalty, start, end).
    """
    best: dict[tuple[int, int], float] = {}

    def offer(a: int, b: int, penalty: float) -> None:
        if 0 <= a < b <= n_tokens and penalty < best.get((a, b), float("inf")):
            best[(a, b)] = penalty

    offer(start, end, 0.0)
    for e in range(1, max_expand_steps + 1):
        offer(start - e, end, 0.08 * e)
        offer(start, end + e, 0.08 * e)
        offer(start - e, end + e, 0.12 * e)
    if max_subspan_width > 0:
        for a in range(start, end):
            for b in range(a + 1, min(end, a + max_subspan_width) + 1):
                if (a, b) != (start, end):
                    offer(a, b, 0.04 * ((a - start) + (end - b)))
    return sorted(((penalty, a, b) for (a, b), penalty in best.items()))


def merge_max(merged: dict[str, tuple[str, float]], piece: str, score: float) -> None:
    """Keep the highest score per lower-case key (the first text wins ties)."""
    key = piece.lower()
    if key not in merged or score > merged[key][1]:
        merged[key] = (piece, score)


def relaxed_window_scores(
    text: str,
    offsets: Sequence[tuple[int, int]],
    emissions: np.ndarray,
    crf: tuple[np.ndarray, np.ndarray, np.ndarray],
    thresholds: Sequence[float],
    *,
    stride_index: int = 0,
    max_spans: int = 20,
    max_expand_steps: int = 1,
    max_subspan_width: int = 0,
    merged: dict[str, tuple[str, float]] | None = None,
) -> dict[str, tuple[str, float]]:
    """§7.4 for one window (valid tokens only): merge its scored texts into ``merged`` (lower -> (text, score))."""
    merged = {} if merged is None else merged
    emissions = np.asarray(emissions)
    n_tokens = emissions.shape[0]
    viterbi_spans = bio_tags_to_spans(viterbi_decode(emissions, *crf))
    for piece in spans_to_text(text, offsets, viterbi_spans):
        merge_max(merged, piece, 2.0 - stride_index * 1e-4)
    probs = softmax(emissions)
    for k, threshold in enumerate(thresholds):
        spans = relaxed_token_spans(probs, threshold, viterbi_spans)
        spans.sort(key=lambda s: -s[2])  # stable: equal confidences keep scan order
        seen: set[str] = set()
        for start, end, conf in spans:
            if len(seen) >= max_spans:
                break
            for penalty, a, b in span_variants(start, end, n_tokens, max_expand_steps, max_subspan_width):
                if len(seen) >= max_spans:
                    break
                piece = span_text(text, offsets, a, b)
                if piece is None or piece.lower() in seen:
                    continue
                seen.add(piece.lower())
                merge_max(merged, piece, conf - penalty - k * 1e-3 - stride_index * 1e-4)
    return merged


# ---------------------------------------------------------------------------------------------
# Profiles and cleaning (§7.5, §7.6)

PROFILES: dict[str, dict] = {
    "clean": {
        "max_spans": 80,
        "window_strides": (64, 128),
        "threshold_schedule": (0.15, 0.10, 0.05),
        "max_expand_steps": 1,
        "max_subspan_width": 0,
        "clean": True,
    },
    "balanced": {
        "max_spans": 120,
        "window_strides": (64, 128),
        "threshold_schedule": (0.15, 0.10, 0.05),
        "max_expand_steps": 1,
        "max_subspan_width": 2,
        "clean": False,
    },
    "high_recall": {
        "max_spans": 200,
        "window_strides": (64, 128, 192),
        "threshold_schedule": (0.15, 0.10, 0.05, 0.0),
        "max_expand_steps": 1,
        "max_subspan_width": 6,
        "clean": False,
    },
}
CLEAN_MAX_RECALL_PHRASES = 80


def profile_parameters(profile: str) -> dict:
    """Parameters of a profile (name stripped, lower-cased); any unknown name means ``balanced``."""
    if not isinstance(profile, str):
        raise InvalidArgumentError(f"profile must be a str ('clean', 'balanced', 'high_recall'), got {profile!r}")
    return dict(PROFILES.get(profile.strip().lower(), PROFILES["balanced"]))


_EDGE_CHARS = "，。！？；：、（）()《》“”\"'‘’[]【】<>\n\r\t "
_FUNCTION_CHARS = frozenset("的了和与及并而或是在对把将被让给向从由于中上下里外")
_LEADING_VERB_CHARS = frozenset("聊说讲谈论看听做搞用把将让给到向为从就来去要想能会该可被使令谓")
_TRAILING_FRAGMENT_CHARS = frozenset("题分逐出下这的了着")


def _strip_function_chars(piece: str) -> str:
    piece = piece.strip(_EDGE_CHARS)
    while len(piece) > 1:
        if piece[0] in _FUNCTION_CHARS:
            piece = piece[1:].strip(_EDGE_CHARS)
        elif piece[-1] in _FUNCTION_CHARS:
            piece = piece[:-1].strip(_EDGE_CHARS)
        else:
            break
    return piece


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"


def clean_span_text(piece: str) -> str:
    """§7.5 ``clean``: edge punctuation, function characters, leading verbs and trailing fragments."""
    piece = _strip_function_chars(piece)
    while len(piece) > 2 and (piece[0] in _LEADING_VERB_CHARS or piece[-1] in _TRAILING_FRAGMENT_CHARS):
        piece = piece[1:] if piece[0] in _LEADING_VERB_CHARS else piece[:-1]
    return _strip_function_chars(piece)


def acceptable_span(piece: str) -> bool:
    if not piece:
        return False
    if len(piece) == 1:
        return piece.isascii() and piece.isalnum() and not _is_cjk(piece)
    return True


def clean_scored_spans(items: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Clean each text, drop rejected ones, de-duplicate on the exact text (max score), sort descending."""
    best: dict[str, float] = {}
    for piece, score in items:
        cleaned = clean_span_text(piece)
        if acceptable_span(cleaned) and score > best.get(cleaned, float("-inf")):
            best[cleaned] = score
    return sorted(best.items(), key=lambda item: -item[1])


_CORE_PREFIXES = ("n", "eng", "vn")
_ALLOWED_PREFIXES = ("n", "eng", "a", "b", "v", "vn", "j", "l", "i")
_MODIFIER_PREFIXES = _CORE_PREFIXES + ("a", "b", "v")


def mine_recall_oriented_phrases(
    text: str, language: str = "zh", max_phrases: int = 50, max_ngram: int = 6, segmenter=None
) -> list[str]:
    """§7.6: noun-headed jieba word n-grams (2-16 characters), de-duplicated on the normalised key.

    Chinese only (other languages give ``[]``). ``segmenter`` defaults to the shared plain
    :class:`keyatten_lite.text.segment.ChineseSegmenter` (no user dictionary).
    """
    if language != "zh" or not isinstance(text, str) or not text.strip():
        return []
    from keyatten_lite.text.normalize import normalize_phrase
    from keyatten_lite.text.segment import segment_text

    words, tags = segment_text(text, "zh", segmenter)
    phrases: list[str] = []
    seen: set[str] = set()
    for i in range(len(words)):
        for j in range(i, min(len(words), i + max_ngram)):
            span_tags = tags[i : j + 1]
            if not span_tags[-1].startswith(_CORE_PREFIXES):
                continue
            if not all(tag.startswith(_ALLOWED_PREFIXES) for tag in span_tags):
                break
            if not all(tag.startswith(_MODIFIER_PREFIXES) for tag in span_tags[:-1]):
                break
            phrase = "".join(words[i : j + 1])
            if not 2 <= len(phrase) <= 16:
                continue
            key = normalize_phrase(phrase)
            if key in seen:
                continue
            seen.add(key)
            phrases.append(phrase)
            if len(phrases) >= max_phrases:
                return phrases
    return phrases


# ---------------------------------------------------------------------------------------------
# Windows


def owned_span_range(window_index: int, n_windows: int, n_content: int, stride: int) -> tuple[int, int]:
    """Content positions ``[lo, hi)`` a window owns (its spans must start there).

    Consecutive overflow windows share ``stride`` content tokens; the first half of the shared part
    belongs to the earlier window, the second half to the later one, so ownership partitions the
    text. Position -1 is [CLS], owned by the first window only.
    """
    lo = stride // 2 if window_index > 0 else -1
    hi = n_content - (stride - stride // 2) if window_index < n_windows - 1 else n_content + 1
    return lo, hi



def span_confidence(emissions: np.ndarray, start: int, end: int) -> float:
    """Tagger confidence of the token span ``[start, end)``: the mean of P(B) at its first token and
    P(I) at the others, from the softmax of the emissions (the confidence §7.4 gives threshold spans)."""
    probs = softmax(np.asarray(emissions)[start:end])
    return float(np.concatenate(([probs[0, TAG_B]], probs[1:, TAG_I])).mean())


