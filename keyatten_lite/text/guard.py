"""Defined, bounded handling of awkward input text (rules documented in docs/cache.md).

* Lone surrogates (which cannot be encoded as UTF-8 and make jieba, the tokenizer and JSON choke)
  become U+FFFD; a valid surrogate pair written as two code points becomes its astral character.
* Only the first ``max_chars`` characters of a text are segmented (default 100,000); token input
  keeps tokens up to the same total length. The model then reads the first ``max_length`` tokens, as
  in keyatten 0.3.1; words past that point stay candidates with score 0.
* Chinese: jieba's POS HMM costs up to ~50 ms per character on long runs of characters outside its
  dictionary (a 10,000-character run took minutes). A run of more than ``MAX_HMM_RUN`` CJK
  characters, and, in a document with more than ``MAX_UNKNOWN_CJK`` characters that jieba's
  dictionary lacks, every run holding such a character, is segmented with the HMM off (dictionary
  words and single characters). Natural text never triggers either rule (the longest CJK run in the
  CSL corpora is 70 characters; the most out-of-dictionary characters in one CSL document is 7), so
  it segments exactly as 0.3.1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.segment import ChineseSegmenter

__all__ = [
    "DEFAULT_MAX_CHARS",
    "MAX_HMM_RUN",
    "MAX_UNKNOWN_CJK",
    "TEXT_RULES_VERSION",
    "BoundedChineseSegmenter",
    "sanitize_text",
    "truncate_text",
    "truncate_tokens",
]

DEFAULT_MAX_CHARS = 100_000
MAX_HMM_RUN = 200
MAX_UNKNOWN_CJK = 100
# Part of every cache key: bump when any rule here changes what a text segments into.
TEXT_RULES_VERSION = 1

_SURROGATE = re.compile("[\ud800-\udfff]")
# jieba's re_han_detail: the characters its HMM runs over.
_CJK_RUN = re.compile("[\u4e00-\u9fd5]+")


def sanitize_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (pairs joined); unchanged otherwise."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def truncate_text(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters of ``text``."""
    return text if len(text) <= max_chars else text[:max_chars]


def truncate_tokens(
    tokens: Sequence[str], tags: Sequence[str], max_chars: int
) -> tuple[list[str], list[str]]:
    """Tokens (and their tags) up to ``max_chars`` characters in total; the token that crosses the
    limit is cut to fit, later ones are dropped."""
    out_tokens: list[str] = []
    out_tags: list[str] = []
    used = 0
    for token, tag in zip(tokens, tags):
        if used >= max_chars:
            break
        if used + len(token) > max_chars:
            token = token[: max_chars - used]
            if not token.strip():
                break
        out_tokens.append(token)
        out_tags.append(tag)
        used += len(token)
    return out_tokens, out_tags


def check_max_chars(max_chars: object) -> int:
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise InvalidArgumentError(f"max_chars must be a positive int, got {max_chars!r}")
    return max_chars


class BoundedChineseSegmenter(ChineseSegmenter):
    """A :class:`ChineseSegmenter` whose time stays bounded on pathological text (module docstring).

    Text that triggers no rule goes to ``ChineseSegmenter.segment`` unchanged. Otherwise the text is
    cut around the flagged CJK runs: the pieces between them are segmented normally (titles
    registered, English re-merged), the runs with the HMM off. Everything happens under the
    segmenter's lock, so a document's segmentation and its title registration stay atomic.
    """

    def _flagged_runs(self, text: str) -> list[tuple[int, int]]:
        runs = [m.span() for m in _CJK_RUN.finditer(text)]
        if not runs:
            return []
        flagged = {span for span in runs if span[1] - span[0] > MAX_HMM_RUN}
        freq = self._ready().tokenizer.FREQ
        unknown_runs = []
        unknown = 0
        for start, end in runs:
            missing = sum(1 for ch in text[start:end] if not freq.get(ch))
            if missing:
                unknown += missing
                unknown_runs.append((start, end))
        if unknown > MAX_UNKNOWN_CJK:
            flagged.update(unknown_runs)
        return sorted(flagged)

    def segment(self, text: str) -> tuple[list[str], list[str]]:
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        with self._lock:
            flagged = self._flagged_runs(text)
            if not flagged:
                return super().segment(text)
            words: list[str] = []
            tags: list[str] = []
            cursor = 0
            for start, end in flagged:
                if start > cursor:
                    w, t = super().segment(text[cursor:start])
                    words += w
                    tags += t
                for pair in self._ready().lcut(text[start:end], HMM=False):
                    word = pair.word.strip()
                    if word:
                        words.append(word)
                        tags.append(pair.flag)
                cursor = end
            if cursor < len(text):
                w, t = super().segment(text[cursor:])
                words += w
                tags += t
            return words, tags
