"""Well-formed candidate spans: the checks the CSA default profile applies to the BIO tagger's spans.

The tagger decodes spans token by token, so some of them are fragments no reader would call a keyword:
a bracket opened and never closed (``(正向``), punctuation at an edge (``正向)``, ``,``), a lone Chinese
character (``反``), a piece of a word (``反向混`` out of ``反向混淆``), or a phrase that starts or ends
with a function word (``的社会福利水平``). On CSL dev 800-999 (200 documents) 99.7 % of the tagger's
spans that equal a gold keyword begin and end where jieba's dictionary segmentation (no HMM) puts a word
boundary, against 67 % of the others; a fragment is widened to the words it cuts rather than dropped, and
edge function words are trimmed (docs/segment_attention.md, "Well-formed candidates").
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from keyatten_lite.text.language import CJK_IDEOGRAPH

__all__ = ["WordGrid", "align_to_words", "is_lone_ideograph", "is_malformed"]

_OPENING = "([{（【《〈「『“"
_CLOSING = ")]}）】》〉」』”"
# Straight double quotes pair with themselves; ' and ’ are also the apostrophe (Young's modulus), so
# only an opening ‘ with no ’ to close it counts as unpaired. Quotes may stand at either edge.
_EDGE_QUOTES = "\"'’‘"
# jieba tag classes (first letter) of the words trimmed from a span's edges: particles (的 uj, 了 ul, 等 u),
# conjunctions (和, 以及) and, at the start only, prepositions (对, 通过, 基于). Verbs stay: 22 % of CSL dev
# gold keywords of two or more words start with one (构建…, 树立…).
_LEADING_FUNCTION_TAGS = frozenset("ucp")
_TRAILING_FUNCTION_TAGS = frozenset("uc")


def is_lone_ideograph(span: str) -> bool:
    """One CJK ideograph and nothing else (surrounding whitespace ignored)."""
    return CJK_IDEOGRAPH.fullmatch(span.strip()) is not None


def is_malformed(span: str) -> bool:
    """Blank, a bracket pair left open or closed alone, an odd number of straight double quotes, or
    punctuation at an edge other than a bracket or quote that opens at the start or closes at the end, or
    an apostrophe (``电动汽车(EVs)``, ``“印象”``, ``Ce3+``, ``Young's modulus``, ``students'`` are well
    formed; ``(正向``, ``正向)``, ``规则,``, ``‘长林`` are not)."""
    text = span.strip()
    if not text:
        return True
    for opening, closing in zip(_OPENING, _CLOSING):
        if text.count(opening) != text.count(closing):
            return True
    if text.count('"') % 2:
        return True
    if text.count("‘") > text.count("’"):  # an opening single quote left open (a lone ’ may be an apostrophe)
        return True
    first, last = text[0], text[-1]
    if unicodedata.category(first).startswith("P") and first not in _OPENING + _EDGE_QUOTES:
        return True
    return unicodedata.category(last).startswith("P") and last not in _CLOSING + _EDGE_QUOTES


@dataclass(frozen=True)
class WordGrid:
    """A segmentation of a text (every character, in order) as each word's jieba tag and start offset;
    ``starts`` ends with the text's length."""

    text: str
    tags: tuple[str, ...]
    starts: tuple[int, ...]

    @classmethod
    def of(cls, text: str, words: Sequence[str], tags: Sequence[str]) -> "WordGrid | None":
        """The grid, or None when ``words`` do not cover ``text`` (then no word boundary is known)."""
        if "".join(words) != text or len(words) != len(tags):
            return None
        starts = [0]
        for word in words:
            starts.append(starts[-1] + len(word))
        return cls(text, tuple(tags), tuple(starts))


def align_to_words(span: str, grid: WordGrid) -> str:
    """``span`` on word boundaries: its first occurrence in the text widened to the words it cuts (a
    fragment that happens to end on a boundary elsewhere, ``反向混`` of ``反向混淆…反向混``, is still a
    fragment where the tagger first found it); then without leading particles,
    conjunctions and prepositions and trailing particles and conjunctions, never fewer than one word.
    A span that does not occur verbatim is returned as it is (the tagger strips or re-spaces some)."""
    text, starts = grid.text, grid.starts
    start = text.find(span)
    if start < 0 or not span:
        return span
    low = bisect.bisect_right(starts, start) - 1  # the word holding the span's first character
    high = bisect.bisect_left(starts, start + len(span))  # one past the word holding its last
    while high - low > 1 and grid.tags[low][:1] in _LEADING_FUNCTION_TAGS:  # a set: "" (no tag) is no class
        low += 1
    while high - low > 1 and grid.tags[high - 1][:1] in _TRAILING_FUNCTION_TAGS:
        high -= 1
    return text[starts[low]:starts[high]]
