"""Words located in the raw text and the default profile's candidate phrases (no model).

English words are letter/digit runs with their character spans; a candidate never crosses punctuation
or a stop word. Chinese words are jieba's, as in 0.3.1, located in the text. A candidate set groups every
occurrence of a phrase under its normalised key, so scoring can use all occurrences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyatten_lite.text.normalize import joinable_word_key, normalize_phrase
from keyatten_lite.text.stopwords import ENGLISH_STOP_WORDS

# Words: letter/digit runs, inner hyphens and apostrophes kept ("state-of-the-art", "3D-models").
_EN_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
_EN_LETTER = re.compile("[A-Za-z]")


def english_words(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words of ``text`` with ``[n, 2]`` character spans and a segment id per word.

    The segment id grows at every gap between two words that holds anything but whitespace
    (punctuation, brackets, symbols): candidates never cross a segment border. Line breaks are
    whitespace (abstracts and PDF text are hard-wrapped mid-phrase).
    """
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    segments: list[int] = []
    segment = 0
    previous_end = 0
    for match in _EN_WORD.finditer(text):
        start, end = match.span()
        if words and text[previous_end:start].strip():
            segment += 1
        words.append(match.group())
        spans.append((start, end))
        segments.append(segment)
        previous_end = end
    return words, np.asarray(spans, dtype=np.int64).reshape(-1, 2), np.asarray(segments, dtype=np.int64)


def split_at_case_changes(words: Sequence[str], segments: np.ndarray) -> np.ndarray:
    """Segment ids that also grow where a lowercase word is followed by a capitalised one with only
    whitespace between ("... for web applications Dynamic resource ...": a title run into its
    abstract, "platform Web"): such a pair is almost never one keyphrase in running text."""
    out = np.asarray(segments, dtype=np.int64).copy()
    shift = 0
    for i in range(1, len(words)):
        previous, word = words[i - 1], words[i]
        if previous.islower() and word[0].isupper() and any(c.islower() for c in word[1:]):
            shift += 1
        out[i] += shift
    return out


# A sentence starts after . ! ? : ; or a line break (titles stand on their own line), or at the start.
_SENTENCE_GAP = re.compile(r"[.!?:;\n]")


def _sentence_starts(text: str, words: Sequence[str], spans: np.ndarray) -> np.ndarray:
    """bool [n]: the word starts a sentence (the first word, or one after . ! ? : ; or a line break)."""
    starts = np.zeros(len(words), dtype=bool)
    previous_end = 0
    for index, (start, end) in enumerate(spans):
        starts[index] = index == 0 or _SENTENCE_GAP.search(text[previous_end : int(start)]) is not None
        previous_end = int(end)
    return starts


def title_case_words(text: str, words: Sequence[str], spans: np.ndarray) -> np.ndarray:
    """bool [n]: the word stands in a Title Case (or ALL CAPS) sentence: one that capitalises a stop
    word inside it ("... Networks For Graph ..."), or of 4+ words capitalises 80 % of them. Capitals
    there are the style of a headline, not names."""
    n = len(words)
    out = np.zeros(n, dtype=bool)
    if not n:
        return out
    starts = _sentence_starts(text, words, spans)
    bounds = list(np.flatnonzero(starts)) + [n]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sentence = words[lo:hi]
        capital = [w[0].isupper() for w in sentence]
        stop_capital = any(capital[i] and sentence[i].lower() in ENGLISH_STOP_WORDS for i in range(1, len(sentence)))
        if stop_capital or (len(sentence) >= 4 and sum(capital) >= 0.8 * len(sentence)):
            out[lo:hi] = True
    return out


def capitalised_share(text: str, words: Sequence[str], spans: np.ndarray, *, title: np.ndarray | None = None) -> float:
    """Share of English words that are capitalised (``Phish``, ``York``; not all-caps acronyms) where
    a sentence does not start and outside Title Case sentences: high in news (names), low in abstracts
    and papers. ``title``: :func:`title_case_words`, when already found."""
    if not len(words):
        return 0.0
    if title is None:
        title = title_case_words(text, words, spans)
    skip = _sentence_starts(text, words, spans) | title
    named = sum(
        1 for word, skipped in zip(words, skip)
        if not skipped and word[0].isupper() and any(c.islower() for c in word[1:])
    )
    return named / len(words)


def name_fragments(
    text: str, words: Sequence[str], spans: np.ndarray, cands: "CandidateSet", *, title: np.ndarray | None = None
) -> np.ndarray:
    """bool [C]: every occurrence of the candidate lies strictly inside a run of capitalised words
    joined by whitespace only ("Steinfeld" and "Hailee" of "Hailee Steinfeld", "York" of "New York"):
    a piece of a name, not a keyword of its own. ``title``: :func:`title_case_words`, when already found."""
    n = len(words)
    # Capitalised words, not counting Title Case sentences (there every word is capitalised).
    capital = np.fromiter((bool(w) and w[0].isupper() for w in words), dtype=bool, count=n)
    capital &= ~(title_case_words(text, words, spans) if title is None else title)
    run = np.zeros(n, dtype=np.int64)  # run id per capitalised word; -1 elsewhere
    run_id = -1
    for i in range(n):
        if not capital[i]:
            run[i] = -1
            continue
        joined = i > 0 and capital[i - 1] and not text[int(spans[i - 1][1]) : int(spans[i][0])].strip()
        if not joined:
            run_id += 1
        run[i] = run_id
    if run_id < 0 or not len(cands):
        return np.zeros(len(cands), dtype=bool)
    run_length = np.bincount(run[run >= 0], minlength=run_id + 1)
    start, end = cands.occurrence_start, cands.occurrence_end
    first_run = run[start]
    inside = (first_run >= 0) & (first_run == run[end - 1]) & (capital[start])
    fragment = inside & (run_length[np.maximum(first_run, 0)] > (end - start))
    not_fragment = np.bincount(cands.occurrence_candidate, weights=~fragment, minlength=len(cands))
    return not_fragment == 0


def english_valid_mask(words: Sequence[str], pos_filter: str = "none") -> np.ndarray:
    """Candidate words: more than one character, a letter, not a stop word; with ``pos_filter="lexicon"``
    also not a word known only as a verb, adverb, pronoun or determiner (``non_keyphrase_words()``)."""
    excluded = non_keyphrase_words() if pos_filter == "lexicon" else frozenset()
    return np.fromiter(
        (
            len(w) > 1
            and _EN_LETTER.search(w) is not None
            and (lowered := w.lower()) not in ENGLISH_STOP_WORDS
            and lowered not in excluded
            for w in words
        ),
        dtype=bool,
        count=len(words),
    )


# Words known only as verbs, auxiliaries or adverbs, plus pronouns and determiners (plain text, one a
# line; built by scripts/build_pos_lexicon.py from lemminflect 0.2.3's lexicon, MIT licence).
LEXICON_FILE = Path(__file__).with_name("non_keyphrase_words.txt")
_NON_KEYPHRASE: frozenset[str] | None = None


def non_keyphrase_words() -> frozenset[str]:
    """Lower-case English words that are only ever verbs, adverbs, pronouns or determiners."""
    global _NON_KEYPHRASE
    if _NON_KEYPHRASE is None:
        text = LEXICON_FILE.read_text(encoding="utf-8")
        _NON_KEYPHRASE = frozenset(w for w in text.split("\n") if w and not w.startswith("#"))
    return _NON_KEYPHRASE


def chinese_valid_mask(words: Sequence[str], tags: Sequence[str], extra_tags: Sequence[str] = ()) -> np.ndarray:
    """The compatible path's Chinese candidate words, plus words of two or more characters whose jieba
    tag starts with one of ``extra_tags`` (such as ``l``: 自然语言, which jieba cuts off 处理)."""
    from keyatten_lite.text.candidates import valid_word_mask

    valid = valid_word_mask(words, tags, "zh")
    if extra_tags:
        prefixes = tuple(extra_tags)
        extra = np.fromiter(
            (len(w) > 1 and w.strip() == w and t.startswith(prefixes) for w, t in zip(words, tags)),
            dtype=bool,
            count=len(words),
        )
        valid = valid | extra
    return valid


def chinese_words(text: str, segmenter) -> tuple[list[str], list[str], np.ndarray]:
    """jieba words and tags (as the compatible path) with their ``[n, 2]`` spans in ``text``."""
    from keyatten_lite.text.segment import locate_word_offsets

    words, tags = segmenter.segment(text)
    spans = np.asarray(locate_word_offsets(text, words), dtype=np.int64).reshape(-1, 2)
    return words, tags, spans


# ---------------------------------------------------------------------------------------------- candidates
@dataclass
class CandidateSet:
    """Unique candidates of one document and every occurrence of each (word index ranges)."""

    texts: list[str]
    keys: list[str]
    n_words: np.ndarray  # int64 [C]
    first_word: np.ndarray  # int64 [C]: word index of the first occurrence
    occurrence_candidate: np.ndarray  # int64 [O]
    occurrence_start: np.ndarray  # int64 [O] word index
    occurrence_end: np.ndarray  # int64 [O] word index (exclusive)
    joiner: str = " "  # what joins words in a candidate's text: " " in English, "" in Chinese

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.occurrence_candidate, minlength=len(self.texts)).astype(np.int64)


_LY_ED = re.compile(r"(?:ly|ed)$", re.IGNORECASE)


def _allowed_end(word: str, tag: str | None, end_filter: str) -> bool:
    if end_filter == "ly-ed":
        return _LY_ED.search(word) is None
    if end_filter == "no-v":
        return tag is None or tag != "v"
    return True


def _candidate_text(words: Sequence[str], start: int, end: int, joiner: str, language: str) -> str:
    phrase = joiner.join(words[start:end]).strip()
    return phrase.strip("- ") if language == "en" else phrase


def build_candidate_set(
    words: Sequence[str],
    valid: np.ndarray,
    segments: np.ndarray | None,
    language: str,
    *,
    max_ngram: int = 4,
    tags: Sequence[str] | None = None,
    end_filter: str = "none",
) -> CandidateSet:
    """Every run of 1..``max_ngram`` consecutive valid words inside one segment, grouped by key.

    The text of a candidate is its first occurrence (words joined by a space in English, nothing in
    Chinese, as 0.3.1 joins them).
    """
    n = len(words)
    valid_list = np.asarray(valid, dtype=bool).tolist()
    segment_list = [0] * n if segments is None else np.asarray(segments).tolist()
    joiner = "" if language == "zh" else " "
    # Keys of space-joined phrases are their words' keys joined (normalize.joinable_word_key): each
    # distinct word is normalised once, not every n-gram occurrence. None: key the phrase whole.
    memo: dict[str, str | None] = {}
    word_keys: list[str | None] = [None] * n
    if joiner == " ":
        for i, w in enumerate(words):
            if w not in memo:
                memo[w] = joinable_word_key(w)
            word_keys[i] = memo[w]
    ends_ok = [_allowed_end(w, tags[i] if tags is not None else None, end_filter) for i, w in enumerate(words)]
    index: dict[str, int] = {}
    texts: list[str] = []
    keys: list[str] = []
    lengths: list[int] = []
    firsts: list[int] = []
    occ_c: list[int] = []
    occ_s: list[int] = []
    occ_e: list[int] = []
    for start in range(n):
        if not valid_list[start]:
            continue
        joined: str | None = ""  # the word keys of words[start:end] joined, while every one is joinable
        for end in range(start + 1, min(n, start + max_ngram) + 1):
            last = end - 1
            if not valid_list[last] or segment_list[last] != segment_list[start]:
                break
            part = word_keys[last]
            joined = joined + part if joined is not None and part is not None else None
            if not ends_ok[last]:
                continue
            phrase = None
            if joined is not None:
                key = joined
            else:
                phrase = _candidate_text(words, start, end, joiner, language)
                key = normalize_phrase(phrase)
                if not key:
                    continue
            c = index.get(key)
            if c is None:
                c = index[key] = len(texts)
                texts.append(phrase if phrase is not None else _candidate_text(words, start, end, joiner, language))
                keys.append(key)
                lengths.append(end - start)
                firsts.append(start)
            occ_c.append(c)
            occ_s.append(start)
            occ_e.append(end)
    as_int = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return CandidateSet(
        texts, keys, as_int(lengths), as_int(firsts), as_int(occ_c), as_int(occ_s), as_int(occ_e), joiner
    )
