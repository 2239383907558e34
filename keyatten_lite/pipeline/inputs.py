"""Documents as the pipeline takes them: argument checks, sanitising and truncation.

Every public entry point validates here first, so bad input fails with an ``InvalidArgumentError``
before any model is opened (docs/cache.md, "Awkward input").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.guard import sanitize_text, truncate_text, truncate_tokens

TextInput = Union[str, Sequence[str]]

# The default profile reads the raw text: control characters become spaces, so they neither split
# phrases as punctuation would nor reach the tokenizer.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass
class Input:
    """One document after validation, sanitising and truncation: a text, or tokens with tags."""

    text: str | None
    tokens: list[str] | None = None
    tags: list[str] | None = None

    @property
    def is_blank(self) -> bool:
        return not self.tokens if self.text is None else not self.text.strip()

    def key_fields(self) -> dict:
        """What identifies the input in a cache key (POS tags only matter for token input)."""
        if self.text is not None:
            return {"text": self.text}
        return {"tokens": self.tokens, "pos_tags": self.tags}


def clean_text(text: str, max_chars: int) -> str:
    """Lone surrogates to U+FFFD, then the first ``max_chars`` characters (docs/cache.md)."""
    return truncate_text(sanitize_text(text), max_chars)


def raw_reading_text(text: str, max_chars: int) -> str:
    """The text the raw-text reader sees: cleaned, control characters as spaces."""
    return CONTROL_CHARS.sub(" ", clean_text(text, max_chars))


def normalise_input(text: TextInput, pos_tags: Sequence[str] | None, language: str, max_chars: int) -> Input:
    """Validate one document; sanitise and truncate it."""
    if isinstance(text, str):
        return Input(clean_text(text, max_chars))
    if not isinstance(text, Sequence) or isinstance(text, (bytes, bytearray)):
        raise InvalidArgumentError(f"text must be a str or a sequence of str tokens, got {type(text).__name__}")
    tokens = list(text)
    for t in tokens:
        if not isinstance(t, str):
            raise InvalidArgumentError(f"token input must hold str tokens, got {type(t).__name__}: {t!r}")
    if any(not t.strip() for t in tokens):
        raise InvalidArgumentError("token input must not contain blank tokens")
    if pos_tags is None:
        tags = ["n" if language == "zh" else "eng"] * len(tokens)
    else:
        if isinstance(pos_tags, (str, bytes)) or not isinstance(pos_tags, Sequence) or len(pos_tags) != len(tokens):
            raise InvalidArgumentError(f"pos_tags must be a list with one tag per token ({len(tokens)} tokens)")
        if not all(isinstance(t, str) for t in pos_tags):
            raise InvalidArgumentError("pos_tags must be str tags such as 'n' or 'eng'")
        tags = list(pos_tags)
    tokens, tags = truncate_tokens([sanitize_text(t) for t in tokens], tags, max_chars)
    return Input(None, tokens, tags)


def check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an int, got {value!r}")


def check_top_k(top_k: Any) -> int:
    check_int("top_k", top_k)
    if top_k < 1:
        # 0.3.1 sliced with it (negative values returned almost everything); we refuse.
        raise InvalidArgumentError(f"top_k must be >= 1, got {top_k}")
    return int(top_k)


def check_batch_size(batch_size: Any) -> int:
    check_int("batch_size", batch_size)
    if batch_size < 1:
        raise InvalidArgumentError("batch_size must be >= 1")
    return int(batch_size)


def check_texts(texts: Any) -> list:
    if isinstance(texts, (str, bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise InvalidArgumentError("texts must be a list of documents (str or token lists)")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str) and not (isinstance(t, Sequence) and not isinstance(t, (bytes, bytearray))):
            raise InvalidArgumentError(f"each document must be a str or a list of tokens, got {type(t).__name__}")
    return texts


def check_pos_tags_batch(pos_tags_batch: Any, n: int) -> list:
    if pos_tags_batch is None:
        return [None] * n
    pos_tags_batch = list(pos_tags_batch)
    if len(pos_tags_batch) != n:
        raise InvalidArgumentError(f"pos_tags_batch has {len(pos_tags_batch)} entries for {n} texts")
    return pos_tags_batch


# File runs (`keyatten-lite extract -i`, one process or the Ray engine) batch identically, so their
# outputs are identical to the bit: blocks of BLOCK_RECORDS records in input order; within a block, each
# language's records CHUNK_BATCHES × batch_size at a time (one extract_keywords_batch call each).
BLOCK_RECORDS = 1024
CHUNK_BATCHES = 4


def file_run_chunks(languages: Sequence[str], step: int, block: int = BLOCK_RECORDS) -> list[tuple[str, int, int]]:
    """``(language, first rank, end rank)`` of every chunk of a file run, where a record's rank is its
    position among the records of its language; ``languages`` holds each record's, in input order."""
    out: list[tuple[str, int, int]] = []
    ranks: dict[str, int] = {}
    for first in range(0, len(languages), block):
        counts: dict[str, int] = {}
        for lang in languages[first : first + block]:
            counts[lang] = counts.get(lang, 0) + 1
        for lang, n in counts.items():
            base = ranks.get(lang, 0)
            for start in range(0, n, step):
                out.append((lang, base + start, base + min(start + step, n)))
            ranks[lang] = base + n
    return out
