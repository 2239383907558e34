"""Word segmentation (spec §4.1, §4.2, §4.7, §4.9).

Chinese goes through jieba's POS tagger, but unlike keyatten 0.3.1 every ``ChineseSegmenter`` owns
its jieba state (a ``jieba.Tokenizer`` and a ``jieba.posseg.POSTokenizer`` over it), so user
dictionaries and 《》 title terms never leak between extractors or into jieba's global tokenizer.
Within one segmenter the history dependence of 0.3.1 is kept on purpose (titles registered by one
document change the segmentation of later ones), because parity with 0.3.1 needs it.

English is a regular expression; no tagger, no tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence, Union

from keyatten_lite.errors import InvalidArgumentError

__all__ = [
    "ChineseSegmenter",
    "UserDict",
    "locate_word_offsets",
    "merge_english_words",
    "segment_english",
    "segment_text",
]

UserDict = Union[str, os.PathLike, Mapping[str, Any], Iterable[Any], None]

_TITLE = re.compile("《(.+?)》")
_ENGLISH_SEPARATOR = re.compile(r"[-\s./\\@#&*+=~`|]+")
_SEPARATOR_CHARS = frozenset("-./\\@#&*+=~`|")
_ENGLISH_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
# jieba's user-dictionary line format: "word [freq] [tag]" (same pattern as jieba.re_userdict).
_USERDICT_LINE = re.compile(r"^(.+?)( [0-9]+)?( [a-z]+)?$")
_DEFAULT_USER_TAG = "nz"

# One entry of a user dictionary: (term, frequency or None for jieba's suggestion, tag or None).
_Entry = tuple[str, Union[int, None], Union[str, None]]


# --------------------------------------------------------------------------------------- English
def segment_english(text: str) -> tuple[list[str], list[str]]:
    """§4.2: every ``[A-Za-z][A-Za-z0-9-]*`` match, all tagged ``eng`` (digits and punctuation vanish)."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
    words = _ENGLISH_WORD.findall(text)
    return words, ["eng"] * len(words)


# ------------------------------------------------------------------------------ English re-merge
def merge_english_words(words: Sequence[str], tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """§4.1 step 4: glue runs of ``eng*`` words that jieba split apart.

    From an ``eng*`` word: (a) while the next word is an ``x`` separator and the one after it is
    ``eng*``, append both with no space (``Meta``, ``-``, ``cognition`` -> ``Meta-cognition``); then
    (b) while the next word is ``eng*``, append it after one space. (a) is not re-run after (b). The
    merged word keeps the first word's tag.
    """
    merged_words: list[str] = []
    merged_tags: list[str] = []
    n = len(words)
    i = 0
    while i < n:
        word, tag = words[i], tags[i]
        i += 1
        if tag.startswith("eng"):
            while (
                i + 1 < n
                and tags[i] == "x"
                and _ENGLISH_SEPARATOR.fullmatch(words[i])
                and tags[i + 1].startswith("eng")
            ):
                word += words[i] + words[i + 1]
                i += 2
            while i < n and tags[i].startswith("eng"):
                word += " " + words[i]
                i += 1
        merged_words.append(word)
        merged_tags.append(tag)
    return merged_words, merged_tags


# ---------------------------------------------------------------------------- user dictionaries
def _parse_frequency(value: Any, term: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgumentError(
            f"user_dict frequency for {term!r} must be an int or None, got {type(value).__name__}"
        )
    try:
        freq = int(value)
    except ValueError:
        raise InvalidArgumentError(f"user_dict frequency for {term!r} is not an integer: {value!r}") from None
    if freq < 0:
        raise InvalidArgumentError(f"user_dict frequency for {term!r} must be >= 0, got {freq}")
    return freq


def _parse_tag(value: Any, term: str) -> str:
    # 0.3.1 turns a missing or empty tag into "nz"; a non-str tag (which 0.3.1 passed to jieba and then
    # crashed on) is rejected here.
    if value is None or value == "":
        return _DEFAULT_USER_TAG
    if not isinstance(value, str):
        raise InvalidArgumentError(f"user_dict tag for {term!r} must be a str or None, got {type(value).__name__}")
    return value


def _read_userdict_file(path: Path) -> tuple[list[_Entry], bytes]:
    """Parse a jieba dictionary file exactly as ``jieba.Tokenizer.load_userdict`` does."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read user_dict file {str(path)!r}: {exc}") from None
    entries: list[_Entry] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        raw = raw.strip()
        try:
            line = raw.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"user_dict file {str(path)!r} must be UTF-8 (line {lineno} is not)"
            ) from None
        if not line:
            continue
        word, freq, tag = _USERDICT_LINE.match(line).groups()
        entries.append((word, int(freq) if freq is not None else None, tag.strip() if tag is not None else None))
    return entries, data


def _normalise_user_dict(user_dict: UserDict) -> tuple[list[_Entry], str]:
    """The entries to register, in order, and a sha256 of the dictionary content (§4.9 forms)."""
    if user_dict is None:
        return [], hashlib.sha256(b"none").hexdigest()
    if isinstance(user_dict, (str, os.PathLike)):
        path = Path(os.fspath(user_dict)).expanduser()
        if not path.is_file():
            raise InvalidArgumentError(
                f"user_dict file not found: {str(path)!r} (pass an existing jieba dictionary file, "
                "a list of terms, or a {term: tag} mapping)"
            )
        entries, data = _read_userdict_file(path.resolve())
        return entries, hashlib.sha256(b"file\0" + data).hexdigest()
    if isinstance(user_dict, (bytes, bytearray)):
        raise InvalidArgumentError("user_dict must be a path (str or os.PathLike), a mapping or a list of terms, not bytes")

    entries = []
    if isinstance(user_dict, Mapping):
        for raw_term, value in user_dict.items():
            term = str(raw_term).strip()
            if not term:
                continue
            if isinstance(value, (tuple, list)):
                if len(value) != 2:
                    raise InvalidArgumentError(
                        f"user_dict value for {term!r} must be a tag or a (freq, tag) pair, got {value!r}"
                    )
                entries.append((term, _parse_frequency(value[0], term), _parse_tag(value[1], term)))
            else:
                entries.append((term, None, _parse_tag(value, term)))
    elif isinstance(user_dict, Iterable):
        for raw_term in user_dict:
            term = str(raw_term).strip()
            if term:
                entries.append((term, None, _DEFAULT_USER_TAG))
    else:
        raise InvalidArgumentError(
            f"user_dict must be a path, a mapping or an iterable of terms, got {type(user_dict).__name__}"
        )
    # 0.3.1 registers each (term, freq, tag) triple once.
    unique = list(dict.fromkeys(entries))
    payload = json.dumps(unique, ensure_ascii=False, separators=(",", ":"))
    return unique, hashlib.sha256(b"terms\0" + payload.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------------- Chinese
class ChineseSegmenter:
    """jieba POS segmentation with a private dictionary (§4.1 steps 2-4, §4.9).

    ``user_dict``: a path to a jieba dictionary file (``word [freq] [tag]`` lines), a mapping
    ``{term: tag}`` or ``{term: (freq, tag)}`` (a missing tag becomes ``nz``), or an iterable of terms
    (tag ``nz``, jieba's suggested frequency). It is validated here and applied on first use, which
    also imports jieba and, for the first segmenter of the process, parses jieba's default dictionary
    (a second or two; later segmenters copy it in tens of milliseconds). Thread-safe.
    """

    def __init__(self, user_dict: UserDict = None) -> None:
        self._entries, self._user_dict_digest = _normalise_user_dict(user_dict)
        self._lock = threading.RLock()
        self._pos_tokenizer = None  # jieba.posseg.POSTokenizer, created lazily
        self._title_digest = hashlib.sha256()
        self._title_count = 0

    def _ready(self):
        """The private POSTokenizer (caller holds the lock)."""
        if self._pos_tokenizer is None:
            tokenizer, pos_tokenizer = _fresh_jieba_pair()
            for term, freq, tag in self._entries:
                _add_word(tokenizer, term, freq, tag)
            self._pos_tokenizer = pos_tokenizer
        return self._pos_tokenizer

    def initialize(self) -> None:
        """Load jieba and the dictionaries now instead of on the first ``segment`` call."""
        with self._lock:
            self._ready()

    def segment(self, text: str) -> tuple[list[str], list[str]]:
        """Words and jieba POS tags of ``text``: whitespace dropped, English runs re-merged."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        with self._lock:
            pos_tokenizer = self._ready()
            # 《》 titles become dictionary words (tag nz, suggested frequency) for this and every later
            # document, once per occurrence, as in 0.3.1 (re-adding a title bumps its frequency).
            for match in _TITLE.finditer(text):
                term = match.group(1).strip()
                if term:
                    _add_word(pos_tokenizer.tokenizer, term, None, _DEFAULT_USER_TAG)
                    self._title_digest.update(term.encode("utf-8", "surrogatepass") + b"\0")
                    self._title_count += 1
            pairs = pos_tokenizer.lcut(text, HMM=True)
        words: list[str] = []
        tags: list[str] = []
        for pair in pairs:
            word = pair.word.strip()
            if word:
                words.append(word)
                tags.append(pair.flag)
        return merge_english_words(words, tags)

    def dictionary_words(self, text: str) -> list[str]:
        """jieba's dictionary segmentation of ``text`` (no HMM, so unknown runs stay single characters
        rather than guessed words; no tags, no 《》 registration): every character of ``text``, in order."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        with self._lock:
            return list(self._ready().tokenizer.cut(text, HMM=False))

    def dictionary_tags(self, words: Sequence[str]) -> list[str]:
        """jieba's dictionary tag of each of ``words`` (``x`` for a word the dictionary lacks, as the
        single characters of an unknown run in :meth:`dictionary_words`)."""
        with self._lock:
            table = self._ready().word_tag_tab
            return [table.get(word, "x") for word in words]

    def dictionary_fingerprint(self) -> str:
        """sha256 of the user dictionary content and the title terms registered so far.

        Segmentation of a document depends on the state *before* it is segmented, so take the
        fingerprint before calling ``segment`` when using it in a cache key.
        """
        with self._lock:
            state = f"{self._user_dict_digest}:{self._title_count}:{self._title_digest.hexdigest()}"
        return hashlib.sha256(state.encode("ascii")).hexdigest()


_base_dictionary: tuple[dict, int, dict] | None = None  # (FREQ, total, word tags): never mutated
_base_dictionary_lock = threading.Lock()
_pos_tokenizer_class = None


def _import_jieba():
    try:
        import jieba
    except ImportError as exc:
        raise ImportError("Chinese segmentation needs jieba: pip install 'jieba>=0.42.1'") from exc
    return jieba


def _import_posseg(jieba, word_tags: dict):
    """``jieba.posseg``, imported without re-parsing dict.txt when the tag table is already at hand.

    Importing jieba.posseg builds its global ``dt = POSTokenizer(jieba.dt)``, which parses the 5 MB
    dict.txt in Python (0.3 s of a 1.6 s Chinese cold start). With jieba's default dictionary, the
    import here sees an empty dictionary file instead and the global tagger then gets a copy of the
    cached table, which equals what that parse builds (text/jieba_cache.py), so jieba.posseg behaves
    the same for everyone. jieba's own lock is held meanwhile, so no other thread can initialise
    jieba.dt from the empty file. A changed dictionary (jieba.set_dictionary) is imported as usual.
    """
    import io
    import sys

    if "jieba.posseg" in sys.modules or jieba.dt.dictionary is not None:
        import jieba.posseg

        return jieba.posseg
    with jieba.dt.lock:
        jieba.dt.get_dict_file = lambda: io.BytesIO(b"")
        try:
            import jieba.posseg
        finally:
            del jieba.dt.get_dict_file
        if not jieba.posseg.dt.word_tag_tab:
            jieba.posseg.dt.word_tag_tab = dict(word_tags)
    return jieba.posseg


def _fresh_jieba_pair():
    """A new ``jieba.Tokenizer`` and a ``POSTokenizer`` over it, both on private copies of jieba's
    default dictionary.

    The default dictionary is parsed once per process, from a plain-text cache in the keyatten-lite
    home (``text/jieba_cache.py``; built from jieba's ``dict.txt`` on first use, never from the marshal
    cache jieba keeps in the temp directory), and copied for every segmenter. The POSTokenizer copies
    the tags that ``add_word`` registers on *its own* tokenizer before each cut
    (``makesure_userdict_loaded``), so user tags stay private as well.
    """
    global _base_dictionary, _pos_tokenizer_class
    jieba = _import_jieba()
    with _base_dictionary_lock:
        if _base_dictionary is None:
            from keyatten_lite.model.registry import home_dir
            from keyatten_lite.text.jieba_cache import load_default_dictionary, load_pos_table

            cache_dir = home_dir() / "jieba"
            freq, total = load_default_dictionary(cache_dir)
            word_tags = load_pos_table(cache_dir)
            posseg = _import_posseg(jieba, word_tags)
            _base_dictionary = (freq, total, word_tags)

            class _PrivatePOSTokenizer(posseg.POSTokenizer):
                """A POSTokenizer given its tag table instead of re-reading dict.txt."""

                def __init__(self, tokenizer, word_tag_tab: dict) -> None:
                    self.tokenizer = tokenizer
                    self.word_tag_tab = word_tag_tab

            _pos_tokenizer_class = _PrivatePOSTokenizer
        freq, total, word_tags = _base_dictionary
    tokenizer = jieba.Tokenizer()
    # What Tokenizer.initialize() would set, from the shared parse.
    tokenizer.FREQ, tokenizer.total, tokenizer.initialized = dict(freq), total, True
    return tokenizer, _pos_tokenizer_class(tokenizer, dict(word_tags))


def _add_word(tokenizer, word: str, freq: int | None, tag: str | None) -> None:
    """``tokenizer.add_word`` without its one global side effect.

    jieba's add_word puts a zero-frequency word into ``jieba.finalseg``'s module-global force-split
    set, which changes ``jieba.cut`` for everyone. The POS tagger never reads that set, so for
    frequency 0 the dictionary update is done here by hand, leaving the global untouched.
    """
    if freq is None or freq != 0:
        tokenizer.add_word(word, freq, tag)
        return
    tokenizer.check_initialized()
    tokenizer.FREQ[word] = 0
    if tag:
        tokenizer.user_word_tag_tab[word] = tag
    for end in range(1, len(word) + 1):
        tokenizer.FREQ.setdefault(word[:end], 0)


_default_segmenter: ChineseSegmenter | None = None
_default_segmenter_lock = threading.Lock()


def _shared_segmenter() -> ChineseSegmenter:
    global _default_segmenter
    with _default_segmenter_lock:
        if _default_segmenter is None:
            _default_segmenter = ChineseSegmenter()
        return _default_segmenter


def segment_text(
    text: str, language: str, segmenter: ChineseSegmenter | None = None
) -> tuple[list[str], list[str]]:
    """Words and tags of ``text``; Chinese uses ``segmenter`` or a shared plain one (no user dict)."""
    if language == "zh":
        return (segmenter or _shared_segmenter()).segment(text)
    if language == "en":
        return segment_english(text)
    raise InvalidArgumentError(f"language must be 'zh' or 'en', got {language!r}")


# ------------------------------------------------------------------------------------ alignment
@lru_cache(maxsize=4096)
def _tolerant_pattern(word: str, space: str = r"\s+") -> re.Pattern[str]:
    """A regex for a word merged by the re-merge: spaces match any whitespace run, and whitespace
    the segmenter dropped around separator characters (``Meta - cognition``) may reappear."""
    parts: list[str] = []
    previous = ""
    for char in word:
        if char == " ":
            if previous != " ":
                parts.append(space)
        else:
            if previous and previous != " " and (char in _SEPARATOR_CHARS or previous in _SEPARATOR_CHARS):
                parts.append(r"\s*")
            parts.append(re.escape(char))
        previous = char
    return re.compile("".join(parts))


def locate_word_offsets(text: str, words: Sequence[str], *, compat: bool = False) -> list[tuple[int, int]]:
    """Character span ``(start, end)`` of each word in ``text``, searching left to right.

    ``compat=True`` is 0.3.1 exactly (§4.7): ``text.find`` from a cursor, retried from 0 (which can
    land on an earlier occurrence), and ``InvalidArgumentError`` when a word is not in the text. The
    default never moves backwards, matches merged English words whatever whitespace separated them in
    the source, and gives a word that cannot be found an empty span at the cursor.
    """
    spans: list[tuple[int, int]] = []
    cursor = 0
    for word in words:
        if compat:
            start = text.find(word, cursor)
            if start < 0:
                start = text.find(word)
            if start < 0:
                raise InvalidArgumentError(f"Failed to align word {word!r} in text.")
            end = start + len(word)
        else:
            if any(char == " " or char in _SEPARATOR_CHARS for char in word):
                # The pattern also matches the exact form, so this finds the earliest occurrence.
                match = _tolerant_pattern(word).search(text, cursor)
                if match is None:  # eng words jieba split with nothing between them
                    match = _tolerant_pattern(word, r"\s*").search(text, cursor)
                start, end = match.span() if match is not None else (-1, -1)
            else:
                start = text.find(word, cursor)
                end = start + len(word)
            if start < 0:
                start = end = cursor
        spans.append((start, end))
        cursor = end
    return spans
