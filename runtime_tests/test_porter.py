"""keyatten_lite.text.porter: our Porter stemmer is nltk's PorterStemmer (NLTK_EXTENSIONS), without nltk.

scripts/stemmer_identity.py runs the full comparison (every corpus word and ~1.6 million generated words).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest

from keyatten_lite.text.porter import stem

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("KEYATTEN_LITE_DATA") or REPO.parent / "shared" / "data")

# Checked by hand against the rules (Porter 1980 steps plus nltk's departures) and against nltk 3.10.
HAND_CHECKED = {
    # Porter 1980 examples, step by step
    "caresses": "caress",
    "ponies": "poni",
    "caress": "caress",
    "cats": "cat",
    "feed": "feed",
    "agreed": "agre",
    "plastered": "plaster",
    "bled": "bled",
    "motoring": "motor",
    "sing": "sing",
    "conflated": "conflat",
    "troubled": "troubl",
    "sized": "size",
    "hopping": "hop",
    "tanned": "tan",
    "falling": "fall",
    "hissing": "hiss",
    "fizzed": "fizz",
    "failing": "fail",
    "filing": "file",
    "happy": "happi",
    "relational": "relat",
    "conditional": "condit",
    "rational": "ration",
    "digitizer": "digit",
    "vietnamization": "vietnam",
    "predication": "predic",
    "operator": "oper",
    "feudalism": "feudal",
    "decisiveness": "decis",
    "hopefulness": "hope",
    "callousness": "callous",
    "sensibility": "sensibl",
    "triplicate": "triplic",
    "formative": "form",
    "formalize": "formal",
    "electrical": "electr",
    "goodness": "good",
    "revival": "reviv",
    "allowance": "allow",
    "inference": "infer",
    "airliner": "airlin",
    "adjustable": "adjust",
    "defensible": "defens",
    "irritant": "irrit",
    "replacement": "replac",
    "cement": "cement",
    "dependent": "depend",
    "adoption": "adopt",
    "communism": "commun",
    "effective": "effect",
    "bowdlerize": "bowdler",
    "probate": "probat",
    "rate": "rate",
    "cease": "ceas",
    "controll": "control",
    "roll": "roll",
    "generalizations": "gener",
    # nltk departures
    "skies": "sky",
    "dying": "die",
    "news": "news",
    "innings": "inning",
    "proceed": "proceed",
    "is": "is",
    "as": "as",
    "a": "a",
    "dies": "die",
    "ies": "i",
    "died": "die",
    "spied": "spi",
    "cry": "cri",
    "say": "say",
    "enjoy": "enjoy",
    "enjoyment": "enjoy",
    "geology": "geolog",
    "ology": "olog",
    "sensibly": "sensibl",
    "hopefully": "hope",
    "awfully": "aw",
    "carelessly": "carelessli",
    "sensationally": "sensat",
    "formally": "formal",
    "axed": "axe",
    "owed": "owe",
    "aged": "age",
}

# Endings that reach every rule of steps 1-5 and the nltk departures.
SUFFIXES = (
    "s ies sses ss ed ied eed ing y ly ally fully ently ously bly ation ational ization izer ator alism "
    "iveness fulness ousness ality ivity bility logy icate ative alize icity ical ful ness al ance ence "
    "er ic able ible ant ement ment ent sion tion ion ou ism ate ity ous ive ize e ll at bl iz"
).split()


def _nltk_stemmer():
    porter = pytest.importorskip("nltk.stem.porter")
    return porter.PorterStemmer(mode=porter.PorterStemmer.NLTK_EXTENSIONS)


@pytest.mark.parametrize("word, expected", sorted(HAND_CHECKED.items()))
def test_hand_checked(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_generated_words_match_nltk() -> None:
    reference = _nltk_stemmer()
    letters = string.ascii_lowercase
    roots = ["".join(t) for t in itertools.product("aeiouybdlstwx", repeat=2)]
    roots += ["gener", "rel", "cond", "geo", "hope", "care", "sk", "cr", "d", "agr", "exc", "form"]
    words = {"".join(t) for n in (1, 2) for t in itertools.product(letters, repeat=n)}
    words.update(root + suffix for root in roots for suffix in SUFFIXES)
    words.update(reference.pool)  # nltk's irregular forms
    words.update(HAND_CHECKED)
    assert len(words) > 10_000
    mismatches = [(w, stem(w), reference.stem(w)) for w in sorted(words) if stem(w) != reference.stem(w)]
    assert mismatches == []


def test_hand_checked_agree_with_nltk() -> None:
    reference = _nltk_stemmer()
    assert {w: reference.stem(w) for w in HAND_CHECKED} == HAND_CHECKED


def test_corpus_words_match_nltk() -> None:
    files = sorted(DATA_DIR.glob("*/*.jsonl")) if DATA_DIR.is_dir() else []
    if not files:
        pytest.skip(f"evaluation data not found at {DATA_DIR} (set KEYATTEN_LITE_DATA); generated words still checked")
    reference = _nltk_stemmer()
    run = re.compile("[a-z]+")
    words: set[str] = set()
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in itertools.islice(fh, 300):  # the first 300 documents of each file
                if line.strip():
                    doc = json.loads(line)
                    words.update(run.findall(str(doc.get("text", "")).lower()))
                    for keyword in doc.get("keywords") or ():
                        words.update(run.findall(str(keyword).lower()))
    assert len(words) > 2_000
    mismatches = [(w, stem(w), reference.stem(w)) for w in sorted(words) if stem(w) != reference.stem(w)]
    assert mismatches == []


def test_import_does_not_load_nltk() -> None:
    code = (
        "import sys\n"
        "import keyatten_lite.text.porter as p\n"
        "assert p.stem('generalizations') == 'gener'\n"
        "print(sorted(m for m in sys.modules if m == 'nltk' or m.startswith('nltk.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
