"""Phrase normalisation: the key used for candidate dedup, token counts and IDF (spec §4.4).

``normalize_phrase`` reproduces keyatten 0.3.1 with nltk installed: Porter stemming (nltk's
NLTK_EXTENSIONS mode) of purely alphabetic runs. The stemmer is the project's own (``text/porter.py``,
identical stems to nltk's on every word of the evaluation data and 1.6 M generated words): importing
nltk cost 1-4 s of every cold start. 0.3.1 silently skipped stemming without nltk, which changed every
English key; here stemming never depends on an optional package.
"""

from __future__ import annotations

import re
from functools import lru_cache

from keyatten_lite.text.porter import stem as porter_stem

__all__ = ["joinable_word_key", "normalize_phrase", "stem"]

_CJK = re.compile("[\u4e00-\u9fff]")
_WHITESPACE = re.compile(r"\s+")
_ALNUM_RUN = re.compile("[a-z0-9]+")
_ALNUM = re.compile("[a-z0-9]")

@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Porter stem of one lower-case alphabetic run (memoised: corpora repeat words a lot)."""
    return porter_stem(word)


@lru_cache(maxsize=65536)
def normalize_phrase(text: str) -> str:
    """The dedup/IDF key of ``text`` (§4.4).

    Lower-cased, ``_`` read as a space; text with a CJK ideograph (U+4E00-U+9FFF) loses its whitespace
    and keeps its punctuation; other text becomes its ``[a-z0-9]+`` runs, alphabetic runs
    Porter-stemmed, joined with no separator (or, without any run, the text minus whitespace).
    """
    text = text.strip().lower().replace("_", " ")
    if _CJK.search(text):
        return _WHITESPACE.sub("", text)
    runs = _ALNUM_RUN.findall(text)
    if not runs:
        return _WHITESPACE.sub("", text)
    # The runs are ASCII, so str.isalpha() is exactly "letters only".
    return "".join(stem(run) if run.isalpha() else run for run in runs)


def joinable_word_key(word: str) -> str | None:
    """The key of ``word`` if the key of any space-joined phrase of such words is their keys
    concatenated, else None.

    Without a CJK ideograph a text's key is its ``[a-z0-9]+`` runs after lower-casing (alphabetic runs
    stemmed), joined with nothing. A space ends a run and lower-casing maps one character at a time
    (the one context rule, final sigma, yields no ASCII), so the runs of ``"w1 w2 ..."`` are the runs of
    ``w1``, then ``w2``, ...; that holds for every word with at least one run and no CJK ideograph.
    A phrase with any other word must be keyed whole with :func:`normalize_phrase`.
    """
    lowered = word.lower()
    if _CJK.search(lowered) or not _ALNUM.search(lowered):
        return None
    return normalize_phrase(word) or None
