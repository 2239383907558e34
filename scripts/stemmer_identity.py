"""Check that keyatten_lite.text.porter.stem gives exactly nltk's PorterStemmer (NLTK_EXTENSIONS) stems.

Words compared:
  * corpus: every distinct [a-z]+ run of the lower-cased "text" and "keywords" of every document of
    every *.jsonl under the data folder (default ../shared/data, or $KEYATTEN_LITE_DATA, or --data);
  * generated: every word of 1-4 letters, roots (all 1-2 letter strings and 3-letter strings over a
    representative alphabet) joined to every suffix the rules know and their inflections
    (-ies, -ied, -eed, -ing, -ly, -ement, -ational, ...), the corpus words with those endings added,
    and the keys of nltk's own irregular-forms pool.

Prints the number of distinct words, the mismatches (must be 0) and the time per word of each stemmer
(no memoisation on either side). Exit status 1 on any mismatch.

    .venv/bin/python scripts/stemmer_identity.py [--data DIR] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import string
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyatten_lite.text.porter import stem as our_stem

_RUN = re.compile("[a-z]+")

# Endings that exercise every rule of steps 1-5 and the nltk departures.
SUFFIXES = """
s es ies sses ss us is ed ied eed eeds eeding ing ings ying yed y ys ly ily ally fully ently ely ously
bly ably ibly li alli bli ation ations ational ationally tional tionally ization izations izer izers ator
alism iveness fulness ousness ality alities ivity bility bilities logy logies logi ologist icate icated
ative alize alized alizing icity ical ically ful fulness ness al als ance ances ence ences er ers ic ics
able ible ant ants ement ements ment ments ent ents sion sions tion tions ion ions ou ism isms ate ated
ating ates ity ities ous ive ives ize ized izing izes e le les ll lle lled lling at bl iz ated bled
bling izing eed ee ees eing yer iest ier iness
""".split()


def corpus_words(data: Path) -> tuple[set[str], int]:
    words: set[str] = set()
    files = sorted(data.rglob("*.jsonl"))
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                doc = json.loads(line)
                words.update(_RUN.findall(str(doc.get("text", "")).lower()))
                for keyword in doc.get("keywords") or ():
                    words.update(_RUN.findall(str(keyword).lower()))
    return words, len(files)


def generated_words(corpus: set[str], quick: bool) -> set[str]:
    letters = string.ascii_lowercase
    words: set[str] = set()
    for n in (1, 2, 3) if quick else (1, 2, 3, 4):
        words.update("".join(t) for t in itertools.product(letters, repeat=n))
    roots = {"".join(t) for n in (1, 2) for t in itertools.product(letters, repeat=n)}
    alphabet = "aeiouy" + ("bdlstwx" if quick else "bcdglnrstwxz")
    roots.update("".join(t) for t in itertools.product(alphabet, repeat=3))
    roots.update(["", "gener", "ration", "sensat", "hope", "care", "geo", "theo", "archaeo", "feas",
                  "poss", "du", "form", "cem", "ag", "contr", "rel", "cond", "dev", "adopt", "happ",
                  "enjo", "sk", "sp", "cr", "d", "t", "l", "p", "f", "tr", "agr", "bl", "pr", "exc"])
    for root in roots:
        words.update(root + suffix for suffix in SUFFIXES)
    sample = sorted(corpus)[:: 4 if quick else 1]
    for word in sample:
        words.update(word + suffix for suffix in ("s", "ed", "ing", "ly", "ness", "ation", "ies", "e"))
    words.discard("")
    return words


def nltk_stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer(mode=PorterStemmer.NLTK_EXTENSIONS)


def per_word_seconds(function, words: list[str]) -> float:
    start = time.perf_counter()
    for word in words:
        function(word)
    return (time.perf_counter() - start) / max(1, len(words))


def import_seconds(statement: str) -> float:
    """Wall time of a fresh interpreter running ``statement`` (minus an empty interpreter)."""

    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
        return time.perf_counter() - start

    return max(0.0, run(statement) - run("pass"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("KEYATTEN_LITE_DATA") or REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--quick", action="store_true", help="smaller generated set (no 4-letter words)")
    args = parser.parse_args()

    nltk_import = import_seconds("import nltk.stem.porter")
    ours_import = import_seconds("import keyatten_lite.text.porter")
    reference = nltk_stemmer()

    if args.data.is_dir():
        corpus, n_files = corpus_words(args.data)
    else:
        print(f"data folder {args.data} not found: comparing generated words only")
        corpus, n_files = set(), 0
    generated = generated_words(corpus, args.quick) - corpus
    generated.update(reference.pool)  # nltk's irregular forms, whatever this nltk version holds

    mismatches = []
    for label, words in (("corpus", corpus), ("generated", generated)):
        ordered = sorted(words)
        for word in ordered:
            ours, theirs = our_stem(word), reference.stem(word)
            if ours != theirs:
                mismatches.append((word, ours, theirs))
        if ordered:
            t_ours = per_word_seconds(our_stem, ordered)
            t_nltk = per_word_seconds(reference.stem, ordered)
            print(f"{label:9s}: {len(ordered):8d} distinct words"
                  + (f" from {n_files} files" if label == "corpus" else "")
                  + f"; per word: ours {t_ours * 1e6:.2f} us, nltk {t_nltk * 1e6:.2f} us")
    print(f"total    : {len(corpus) + len(generated):8d} words, {len(mismatches)} mismatches")
    print(f"import   : keyatten_lite.text.porter {ours_import * 1e3:.0f} ms, "
          f"nltk.stem.porter {nltk_import * 1e3:.0f} ms (fresh interpreter, one run)")
    for word, ours, theirs in mismatches[:50]:
        print(f"MISMATCH {word!r}: ours {ours!r}, nltk {theirs!r}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
