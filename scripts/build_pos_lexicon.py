"""Build ``keyatten_lite/text/non_keyphrase_words.txt`` (issue 14) from lemminflect's lexicon.

    pip download lemminflect==0.2.3 --no-deps -d /tmp/lemm && unzip -o /tmp/lemm/*.whl -d /tmp/lemm/x
    python scripts/build_pos_lexicon.py /tmp/lemm/x/lemminflect/resources/lemma_lu.csv.gz \
        > keyatten_lite/text/non_keyphrase_words.txt

lemminflect (MIT licence) ships ``lemma_lu.csv.gz``: every English word form it knows with each
universal POS it can take (noun, verb, adj, adv, aux). A word is kept when every reading is a verb,
auxiliary or adverb (unambiguous: "learns", "efficiently"; not "learning", "structure", "results"),
plus the pronouns and determiners the stop list lacks. Only alphabetic words of at least two letters
that are not already stop words; printed sorted, one a line, after a comment header.
"""

from __future__ import annotations

import collections
import gzip
import sys

from keyatten_lite.text.stopwords import ENGLISH_STOP_WORDS

PRONOUNS_DETERMINERS = (
    "each every either neither another whose whatever whichever whoever whomever itself themselves "
    "ourselves yourself yourselves herself himself myself oneself anybody anyone anything everybody "
    "everyone everything nobody somebody someone something nothing such several many much most"
).split()


def main(path: str) -> None:
    readings = collections.defaultdict(set)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            word, upos, _lemma = line.rstrip("\n").split(",", 2)
            readings[word.lower()].add(upos)
    words = {w for w, tags in readings.items() if tags <= {"verb", "aux", "adv"}}
    words.update(PRONOUNS_DETERMINERS)
    words = sorted(w for w in words if w.isalpha() and w.isascii() and len(w) > 1 and w not in ENGLISH_STOP_WORDS)
    print("# English words known only as verbs, auxiliaries or adverbs (every reading in lemminflect 0.2.3's")
    print("# lexicon, MIT licence), plus pronouns and determiners the stop list lacks; one word a line.")
    print("# Built by scripts/build_pos_lexicon.py; read by keyatten_lite.text.phrases.non_keyphrase_words.")
    print("\n".join(words))


if __name__ == "__main__":
    main(sys.argv[1])
