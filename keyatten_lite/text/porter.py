"""The Porter stemmer, giving exactly the stems of nltk's ``PorterStemmer`` in its default
``NLTK_EXTENSIONS`` mode, without importing nltk (``import nltk`` costs seconds of cold start).

Written from the algorithm (M. F. Porter, "An algorithm for suffix stripping", Program 14(3), 1980)
plus the departures that nltk documents for that mode (Martin Porter's later changes and nltk's own),
learned by observing nltk's output; ``scripts/stemmer_identity.py`` checks identity on every word of the
evaluation corpora and on generated tricky words.

Notation of the paper: a letter is a *consonant* unless it is a, e, i, o, u, or a ``y`` that follows
a consonant; any word is ``[C](VC){m}[V]`` and ``m`` is its *measure*; ``*v*`` = "has a vowel",
``*d`` = "ends in a double consonant", ``*o`` = "ends consonant-vowel-consonant, the last not w, x, y".

Departures from the 1980 paper, all those of nltk's default mode:

* a fixed pool of irregular forms (``skies``->``sky``, ``dying``->``die``, ``news``, ...);
* words of one or two letters are returned unchanged;
* step 1a: a four-letter ``-ies`` word keeps its ``e`` (``dies``->``die``);
* step 1b: ``-ied`` -> ``-ie`` for four letters, else ``-i`` (``died``->``die``, ``spied``->``spi``);
* step 1c: ``y``->``i`` only after a consonant that is not the first letter (``cry``->``cri``,
  ``enjoy`` stays, ``say`` stays);
* step 2: ``bli``->``ble`` (instead of ``abli``->``able``), ``logi``->``log`` measured with the ``l``,
  ``fulli``->``ful``, and ``alli``->``al`` applied first and then step 2 run again;
* ``*o`` also holds for a two-letter vowel-consonant word (``axed``->``axe``, ``owed``->``owe``).

Input: one lower-case alphabetic word (the runtime passes ``[a-z]+`` runs). Memoisation is the
caller's job; this module keeps the per-call work to a few ``str`` operations.
"""

from __future__ import annotations

__all__ = ["stem"]

# nltk's irregular forms: looked up before any rule, the value is the stem.
_IRREGULAR = {
    "skies": "sky",
    "sky": "sky",
    "dying": "die",
    "lying": "lie",
    "tying": "tie",
    "news": "news",
    "innings": "inning",
    "inning": "inning",
    "outings": "outing",
    "outing": "outing",
    "cannings": "canning",
    "canning": "canning",
    "howe": "howe",
    "proceed": "proceed",
    "exceed": "exceed",
    "succeed": "succeed",
}


class _ConsonantTable(dict):
    """str.translate table: vowels -> 'v', 'y' -> 'y' (resolved by position later), anything else
    -> 'c' (the paper: every letter that is not a vowel is a consonant)."""

    def __missing__(self, key: int) -> str:
        return "c"


_CV_TABLE = _ConsonantTable({ord(ch): "v" for ch in "aeiou"})
_CV_TABLE[ord("y")] = "y"


def _cv(word: str) -> str:
    """The consonant/vowel pattern of ``word``, one 'c' or 'v' per letter.

    A letter's class depends only on the letters before it, so the pattern of a prefix is the prefix
    of the pattern; ``y`` is a consonant first in the word or after a vowel, else a vowel.
    """
    pattern = word.translate(_CV_TABLE)
    if "y" not in pattern:
        return pattern
    out = []
    previous = "v"  # so that a leading y counts as a consonant
    for cls in pattern:
        if cls == "y":
            cls = "c" if previous == "v" else "v"
        out.append(cls)
        previous = cls
    return "".join(out)


def _measure(stem: str) -> int:
    # m = number of VC sequences; "vc" cannot overlap itself, so str.count counts them all.
    return _cv(stem).count("vc")


def _has_vowel(stem: str) -> bool:
    return "v" in _cv(stem)


def _ends_double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _cv(word)[-1] == "c"


def _ends_cvc(word: str) -> bool:
    """``*o``; nltk also counts a whole two-letter word vowel-consonant (any final consonant)."""
    n = len(word)
    if n >= 3:
        return word[-1] not in "wxy" and _cv(word).endswith("cvc")
    return n == 2 and _cv(word) == "vc"


# ------------------------------------------------------------------------------------- steps
def _step1a(word: str) -> str:
    if word.endswith("s"):
        if word.endswith("sses"):
            return word[:-2]
        if word.endswith("ies"):
            # nltk: "dies" -> "die" (the paper gives "di").
            return word[:-1] if len(word) == 4 else word[:-2]
        if word.endswith("ss"):
            return word
        return word[:-1]
    return word


def _step1b_tidy(stem: str) -> str:
    """What the paper does after removing -ed or -ing: restore an e, undouble, or add e to a cvc."""
    if stem.endswith(("at", "bl", "iz")):
        return stem + "e"
    if _ends_double_consonant(stem) and stem[-1] not in "lsz":
        return stem[:-1]
    if _ends_cvc(stem) and _measure(stem) == 1:
        return stem + "e"
    return stem


def _step1b(word: str) -> str:
    if word.endswith("ed"):
        if word.endswith("ied"):
            # nltk: "died" -> "die", "spied" -> "spi" (no vowel test).
            return word[:-1] if len(word) == 4 else word[:-2]
        if word.endswith("eed"):
            # (m>0) EED -> EE; a failed condition stops step 1b (no -ed removal after it).
            return word[:-1] if _measure(word[:-3]) > 0 else word
        stem = word[:-2]
        return _step1b_tidy(stem) if _has_vowel(stem) else word
    if word.endswith("ing"):
        stem = word[:-3]
        return _step1b_tidy(stem) if _has_vowel(stem) else word
    return word


def _step1c(word: str) -> str:
    # nltk/Martin: y -> i after a consonant that is not the word's first letter.
    if word.endswith("y") and len(word) > 2 and _cv(word[:-1])[-1] == "c":
        return word[:-1] + "i"
    return word


# Steps 2-4 are lists of (suffix, replacement); as in the paper, the first suffix that matches is the
# only one tried, whether or not its condition holds. They are dispatched on the last two letters
# (every word ending in a suffix of the group ends in them), listed longest first where one suffix
# ends another (ational/tional, ization/ation, ement/ment/ent).
def _by_ending(rules: list[tuple[str, str]]) -> dict[str, tuple[tuple[str, str], ...]]:
    table: dict[str, list[tuple[str, str]]] = {}
    for suffix, replacement in rules:
        table.setdefault(suffix[-2:], []).append((suffix, replacement))
    return {ending: tuple(group) for ending, group in table.items()}


_STEP2 = _by_ending(
    [
        ("ational", "ate"),
        ("tional", "tion"),
        ("enci", "ence"),
        ("anci", "ance"),
        ("izer", "ize"),
        ("bli", "ble"),  # Martin: replaces the paper's abli -> able
        ("fulli", "ful"),  # nltk
        ("entli", "ent"),
        ("eli", "e"),
        ("ousli", "ous"),
        ("ization", "ize"),
        ("ation", "ate"),
        ("ator", "ate"),
        ("alism", "al"),
        ("iveness", "ive"),
        ("fulness", "ful"),
        ("ousness", "ous"),
        ("aliti", "al"),
        ("iviti", "ive"),
        ("biliti", "ble"),
        ("logi", "log"),  # Martin; its condition is special, see _step2
    ]
)

_STEP3 = _by_ending(
    [
        ("icate", "ic"),
        ("ative", ""),
        ("alize", "al"),
        ("iciti", "ic"),
        ("ical", "ic"),
        ("ful", ""),
        ("ness", ""),
    ]
)

_STEP4 = _by_ending(
    [
        ("al", ""),
        ("ance", ""),
        ("ence", ""),
        ("er", ""),
        ("ic", ""),
        ("able", ""),
        ("ible", ""),
        ("ant", ""),
        ("ement", ""),
        ("ment", ""),
        ("ent", ""),
        ("ion", ""),  # also needs the stem to end in s or t
        ("ou", ""),
        ("ism", ""),
        ("ate", ""),
        ("iti", ""),
        ("ous", ""),
        ("ive", ""),
        ("ize", ""),
    ]
)


def _step2(word: str) -> str:
    if word.endswith("alli"):
        # nltk: alli -> al is tried before the list and, when it applies, step 2 runs again
        # ("sensationalli" -> "sensational" -> "sensate"); when it does not, no other rule matches.
        stem = word[:-4]
        return _step2(stem + "al") if _measure(stem) > 0 else word
    for suffix, replacement in _STEP2.get(word[-2:], ()):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            # logi -> log is measured with the l kept ("geologi": m("geol") = 1, m("geo") = 0).
            measured = word[:-3] if suffix == "logi" else stem
            return stem + replacement if _measure(measured) > 0 else word
    return word


def _step3(word: str) -> str:
    for suffix, replacement in _STEP3.get(word[-2:], ()):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            return stem + replacement if _measure(stem) > 0 else word
    return word


def _step4(word: str) -> str:
    for suffix, _ in _STEP4.get(word[-2:], ()):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            if suffix == "ion" and not stem.endswith(("s", "t")):
                return word
            return stem if _measure(stem) > 1 else word
    return word


def _step5(word: str) -> str:
    # 5a: (m>1) E -> ; (m=1 and not *o) E -> .
    if word.endswith("e"):
        stem = word[:-1]
        m = _measure(stem)
        if m > 1 or (m == 1 and not _ends_cvc(stem)):
            word = stem
    # 5b: (m>1 and *d and *L) -> single letter (dropping one l leaves m unchanged).
    if word.endswith("ll") and _measure(word) > 1:
        word = word[:-1]
    return word


def stem(word: str) -> str:
    """The Porter stem of a lower-case alphabetic ``word``, as nltk's default PorterStemmer gives it."""
    irregular = _IRREGULAR.get(word)
    if irregular is not None:
        return irregular
    if len(word) <= 2:
        return word
    word = _step1a(word)
    word = _step1b(word)
    word = _step1c(word)
    word = _step2(word)
    word = _step3(word)
    word = _step4(word)
    return _step5(word)
