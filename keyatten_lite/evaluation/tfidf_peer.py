"""The TF-IDF peers' pure parts (the ``tfidf`` and ``tfidf-cands`` systems of baselines.py): English
n-gram candidates inside punctuation- and stop-word-free runs, and sublinear tf x sklearn's smooth idf."""

from __future__ import annotations

import math
import re
from collections import Counter

__all__ = ["english_ngram_candidates", "english_stop_words", "rank_by_tfidf", "smooth_idf"]

# Line breaks are not boundaries (Inspec abstracts are hard-wrapped mid-phrase).
_ENGLISH_BOUNDARY = re.compile(r"[.,;:!?()\[\]{}\"]+")
_ENGLISH_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def english_stop_words() -> frozenset[str]:
    try:
        from keyatten_lite.text.stopwords import ENGLISH_STOP_WORDS
    except ImportError:  # the runtime list may not exist in a partial checkout; sklearn's is the same list
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # type: ignore[no-redef]
    return frozenset(ENGLISH_STOP_WORDS)


def english_ngram_candidates(text: str, stop_words: frozenset[str], max_n: int = 3) -> list[str]:
    """Lower-cased 1..max_n-grams inside runs of non-stop words that cross no punctuation, in text order."""
    phrases = []
    for chunk in _ENGLISH_BOUNDARY.split(text):
        run: list[str] = []
        for word in [*(w.lower() for w in _ENGLISH_WORD.findall(chunk)), None]:
            if word is not None and word not in stop_words:
                run.append(word)
                continue
            for start in range(len(run)):
                for length in range(1, max_n + 1):
                    if start + length <= len(run):
                        phrases.append(" ".join(run[start : start + length]))
            run = []
    return phrases


def smooth_idf(document_frequency: int, n_documents: int) -> float:
    """sklearn's smooth IDF: ln((N + 1) / (df + 1)) + 1."""
    return math.log((n_documents + 1) / (document_frequency + 1)) + 1.0


def rank_by_tfidf(
    term_counts: Counter, document_frequency: Counter, n_documents: int, top_n: int
) -> list[str]:
    """Terms by sublinear tf (1 + ln count) x smooth idf, descending; ties keep first-occurrence order."""
    scored = [
        (term, (1.0 + math.log(count)) * smooth_idf(document_frequency.get(term, 0), n_documents))
        for term, count in term_counts.items()
    ]
    scored.sort(key=lambda pair: -pair[1])  # stable: Counter keeps insertion (text) order
    return [term for term, _ in scored[:top_n]]
