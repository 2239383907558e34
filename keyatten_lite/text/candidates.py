"""Candidate phrases: validity, construction, scoring and ranking (spec §4.3, §4.5, §4.6, §4.11, §5.3)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.normalize import normalize_phrase
from keyatten_lite.text.stopwords import ENGLISH_STOP_WORDS

__all__ = [
    "Candidate",
    "build_candidates",
    "build_candidates_with_keys",
    "candidate_keys",
    "candidate_mean_scores",
    "is_valid_word",
    "normalized_keys",
    "rank_candidates",
    "token_counts",
    "valid_word_mask",
]

_ONLY_NON_WORD = re.compile(r"[\W_]+")
_LOWER_LETTER = re.compile("[a-z]")
_ZH_TAG_PREFIXES = ("n", "eng", "v")
TIE_BREAKS = ("earlier", "later")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A phrase made of the words ``[word_start, word_end)`` of a document."""

    text: str
    word_start: int
    word_end: int


# ------------------------------------------------------------------------------------- validity
def _is_valid_chinese(word: str, tag: str) -> bool:
    if not word.strip() or _ONLY_NON_WORD.fullmatch(word):
        return False
    if not tag.startswith(_ZH_TAG_PREFIXES):
        return False
    return len(word) > 1 or tag == "eng"


def _is_valid_english(word: str) -> bool:
    lowered = word.strip().lower()
    return len(lowered) > 1 and lowered not in ENGLISH_STOP_WORDS and _LOWER_LETTER.search(lowered) is not None


def is_valid_word(word: str, tag: str, language: str) -> bool:
    """§4.3. Chinese: non-blank, not only punctuation, tag ``n*``/``eng*``/``v*``, more than one
    character unless tagged exactly ``eng``. English (tag ignored): lower-cased stripped word longer
    than one character, not a stop word, with at least one ASCII letter."""
    if language == "zh":
        return _is_valid_chinese(word, tag)
    if language == "en":
        return _is_valid_english(word)
    raise InvalidArgumentError(f"language must be 'zh' or 'en', got {language!r}")


def valid_word_mask(words: Sequence[str], tags: Sequence[str], language: str) -> np.ndarray:
    """Boolean array: which words pass ``is_valid_word``."""
    _check_lengths(words, tags)
    return np.fromiter(
        (is_valid_word(word, tag, language) for word, tag in zip(words, tags)), dtype=bool, count=len(words)
    )


def _check_lengths(words: Sequence[str], tags: Sequence[str]) -> None:
    if len(words) != len(tags):
        raise InvalidArgumentError(f"got {len(words)} words but {len(tags)} tags: they must match one to one")


# --------------------------------------------------------------------------------- construction
def build_candidates_with_keys(
    words: Sequence[str], tags: Sequence[str], language: str, max_ngram: int = 4
) -> tuple[list[Candidate], list[str]]:
    """§4.5: every run of 1..``max_ngram`` consecutive valid words, first occurrence of each
    normalised key only, ordered by start then length; also returns the keys, in the same order."""
    if max_ngram < 1:
        raise InvalidArgumentError(f"max_ngram must be >= 1, got {max_ngram}")
    valid = valid_word_mask(words, tags, language).tolist()
    joiner = "" if language == "zh" else " "
    seen: set[str] = set()
    candidates: list[Candidate] = []
    keys: list[str] = []
    n = len(words)
    for start in range(n):
        if not valid[start]:
            continue
        for end in range(start + 1, min(n, start + max_ngram) + 1):
            if not valid[end - 1]:
                break
            phrase = joiner.join(words[start:end]).strip()
            if language == "en":
                phrase = phrase.strip("- ")
            key = normalize_phrase(phrase)
            if not key or key in seen:
                continue
            seen.add(key)
            candidates.append(Candidate(phrase, start, end))
            keys.append(key)
    return candidates, keys


def build_candidates(
    words: Sequence[str], tags: Sequence[str], language: str, max_ngram: int = 4
) -> list[Candidate]:
    """§4.5 candidates (see ``build_candidates_with_keys``)."""
    return build_candidates_with_keys(words, tags, language, max_ngram)[0]


def normalized_keys(candidates: Sequence[Candidate]) -> list[str]:
    """The dedup key (``normalize_phrase``) of each candidate's text."""
    return [normalize_phrase(candidate.text) for candidate in candidates]


candidate_keys = normalized_keys


# -------------------------------------------------------------------------------------- scoring
def candidate_mean_scores(word_scores: np.ndarray, candidates: Sequence[Candidate]) -> np.ndarray:
    """§4.6: mean word score over each candidate's words, through float32 prefix sums (as 0.3.1)."""
    scores = np.asarray(word_scores, dtype=np.float32).reshape(-1)
    if not candidates:
        return np.zeros(0, dtype=np.float32)
    starts = np.fromiter((c.word_start for c in candidates), dtype=np.int64, count=len(candidates))
    ends = np.fromiter((c.word_end for c in candidates), dtype=np.int64, count=len(candidates))
    if starts.min() < 0 or ends.max() > scores.shape[0] or np.any(ends <= starts):
        raise InvalidArgumentError(
            f"candidate word ranges must lie inside the {scores.shape[0]} word scores and be non-empty"
        )
    prefix = np.zeros(scores.shape[0] + 1, dtype=np.float32)
    np.cumsum(scores, dtype=np.float32, out=prefix[1:])
    lengths = (ends - starts).astype(np.float32)
    return ((prefix[ends] - prefix[starts]) / lengths).astype(np.float32, copy=False)


# -------------------------------------------------------------------------------------- ranking
def rank_candidates(
    texts: Sequence[str],
    keys: Sequence[str],
    scores: np.ndarray,
    top_k: int,
    *,
    dedup_nested: bool,
    tie_break: str = "earlier",
) -> list[tuple[str, float]]:
    """§4.11: the ``top_k`` best (text, score) pairs, best first, non-finite scores dropped.

    Ties are broken deterministically (0.3.1's order among equal scores depends on numpy's SIMD
    sort): ``"earlier"`` puts the earlier candidate first; ``"later"`` the later one (the reversed
    stable order, which the spec reports matches 0.3.1 most often). With ``dedup_nested`` a candidate
    whose key is empty, or a substring or superstring of a key already taken, is skipped.
    """
    if tie_break not in TIE_BREAKS:
        raise InvalidArgumentError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be an integer >= 1, got {top_k!r}")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (len(texts) == len(keys) == values.shape[0]):
        raise InvalidArgumentError(
            f"texts, keys and scores must have one entry per candidate (got {len(texts)}, {len(keys)}, {values.shape[0]})"
        )
    finite = np.flatnonzero(np.isfinite(values))
    if tie_break == "earlier":
        order = finite[np.argsort(-values[finite], kind="stable")]
    else:
        order = finite[np.argsort(values[finite], kind="stable")[::-1]]
    limit = min(int(top_k), order.shape[0])
    if not dedup_nested:
        return [(texts[i], float(values[i])) for i in order[:limit].tolist()]
    selected: list[tuple[str, float]] = []
    selected_keys: list[str] = []
    for i in order.tolist():
        key = keys[i]
        if not key or any(key in other or other in key for other in selected_keys):
            continue
        selected.append((texts[i], float(values[i])))
        selected_keys.append(key)
        if len(selected) >= limit:
            break
    return selected


# --------------------------------------------------------------------------------------- counts
def token_counts(words: Sequence[str], tags: Sequence[str], language: str) -> Counter:
    """§5.3: raw occurrence count of the normalised key of every valid word."""
    mask = valid_word_mask(words, tags, language)
    return Counter(normalize_phrase(words[i]) for i in np.flatnonzero(mask).tolist())
