"""Well-formed candidate spans: the checks the CSA default profile applies to the BIO tagger's spans.

The tagger decodes spans token by token, so some of them are fragments no reader would call a keyword:
a bracket opened and never closed (``(正向``), punctuation at an edge (``正向)``, ``,``), a lone Chinese
character (``反``), or a piece of a word (``反向混`` out of ``反向混淆``). On CSL dev 800-999 (200
documents) 99.7 % of the tagger's spans that equal a gold keyword begin and end where jieba's dictionary
segmentation (no HMM) puts a word boundary, against 67 % of the others (docs/segment_attention.md).
"""

from __future__ import annotations

import unicodedata
from typing import Collection, Sequence

from keyatten_lite.text.language import CJK_IDEOGRAPH

__all__ = ["is_lone_ideograph", "is_malformed", "keeps_word_boundaries", "word_boundaries"]

_OPENING = "([{（【《〈「『“"
_CLOSING = ")]}）】》〉」』”"
# Straight double quotes pair with themselves; ' and ’ are also the apostrophe (Young's modulus), so
# only an opening ‘ with no ’ to close it counts as unpaired. Quotes may stand at either edge.
_EDGE_QUOTES = "\"'’‘"


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


def word_boundaries(words: Sequence[str]) -> frozenset[int]:
    """The character offsets at which ``words`` (a segmentation that covers its text, every character
    included, in order) start and end."""
    offsets = {0}
    position = 0
    for word in words:
        position += len(word)
        offsets.add(position)
    return frozenset(offsets)


def keeps_word_boundaries(text: str, span: str, boundaries: Collection[int]) -> bool:
    """Does some occurrence of ``span`` in ``text`` start and end on a word boundary? A span that does
    not occur verbatim (the tagger strips or re-spaces some) is given the benefit of the doubt."""
    start = text.find(span)
    if start < 0:
        return True
    while start >= 0:
        if start in boundaries and start + len(span) in boundaries:
            return True
        start = text.find(span, start + 1)
    return False
