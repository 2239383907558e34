"""Choose the pieces of multilingual-e5-small's vocabulary that Chinese and English text uses.

Writes models/vocab/e5-small-zh.keep (plain text, id ranges of the full vocabulary) and
docs/results/vocabulary.json (pieces kept, identity on every document of the data, coverage on
text left out of the choice). Build-time only; needs wordfreq, kept out of the project's
dependencies (its word lists only decide which pieces to keep):

    pip install --target /tmp/wordfreq wordfreq==3.1.1
    PYTHONPATH=/tmp/wordfreq python scripts/trim_vocabulary.py

The rule, in order:
1. the special tokens and the lowest-scored piece (the Unigram model scores unknown characters
   relative to the minimum);
2. every single-character piece (with or without the word-start mark ▁), so that text in any script
   still splits into characters instead of unknown tokens;
3. every piece made only of CJK ideographs, CJK and full-width punctuation and other punctuation;
4. every piece that the full tokenizer produces on a large word list: wordfreq's Chinese list, its
   English top 100,000 words lower-cased and capitalised, and the top 20,000 in capitals;
5. every piece the full tokenizer produces on the documents of ../shared/data.
Coverage on text nobody chose pieces from: the same rule with step 5 on the dev documents only,
measured on the test documents.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export import sources  # noqa: E402
from export.source_files import check_sha256  # noqa: E402
from export.vocabulary import format_keep_list, trim_unigram_tokenizer  # noqa: E402
from keyatten_lite.evaluation.metrics import read_dataset, select_documents  # noqa: E402
from keyatten_lite.state.atomic import atomic_write_bytes  # noqa: E402

WORD_START = "\u2581"
DEV_SPLITS = [
    ("en/inspec.jsonl", "inspec-dev"),
    ("en/semeval2017.jsonl", "semeval2017-first200"),
    ("en/semeval2010.jsonl", "semeval2010-dev"),
    ("en/www.jsonl", "www-dev"),
    ("en/kpcrowd-dev.jsonl", "kpcrowd-dev"),
    ("zh/csl_dev.jsonl", "csl-dev"),
]
TEST_SPLITS = [
    ("en/inspec.jsonl", "inspec-first500"),
    ("en/semeval2017.jsonl", "semeval2017-rest"),
    ("en/semeval2010.jsonl", "semeval2010-rest"),
    ("zh/csl_test.jsonl", None),
]


def is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FFFF or 0xF900 <= o <= 0xFAFF
        or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF
    )


def is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSZ"


def rule_pieces(vocab: list, specials: list[int]) -> set[int]:
    lowest = min(range(len(vocab)), key=lambda i: vocab[i][1])
    keep = set(specials) | {lowest}
    for i, (piece, _score) in enumerate(vocab):
        body = piece.replace(WORD_START, "")
        if len(body) <= 1:
            keep.add(i)
        elif all(is_cjk(c) or is_punctuation(c) for c in body) and any(is_cjk(c) for c in body):
            keep.add(i)
    return keep


def produced(tokenizer, texts: list[str]) -> set[int]:
    ids: set[int] = set()
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.update(encoding.ids)
    return ids


def word_list_pieces(tokenizer) -> set[int]:
    import wordfreq

    english = wordfreq.top_n_list("en", 100_000)
    words = wordfreq.top_n_list("zh", 10**6) + english + [w.capitalize() for w in english]
    words += [w.upper() for w in english[:20_000]]
    return produced(tokenizer, words)


def split_texts(data: Path, splits) -> dict[str, list[str]]:
    out = {}
    for file, split in splits:
        docs = select_documents(read_dataset(str(data / file)), split=split)
        out[split or Path(file).stem] = [d.text for d in docs]
    return out


def compare(full, trimmed, new_id: dict[int, int], texts: list[str]) -> dict:
    """Documents whose trimmed segmentation equals the full one (ids remapped), and how many of the
    full segmentation's tokens are kept pieces (a dropped piece is re-split into smaller kept ones)."""
    same_docs = tokens = kept_tokens = unknown = 0
    unk = trimmed.token_to_id("<unk>")
    for a, b in zip(full.encode_batch(texts, add_special_tokens=False), trimmed.encode_batch(texts, add_special_tokens=False)):
        mapped = [new_id.get(i, -1) for i in a.ids]
        same = mapped == b.ids and a.offsets == b.offsets
        same_docs += same
        tokens += len(a.ids)
        kept_tokens += sum(i >= 0 for i in mapped)
        unknown += sum(i == unk for i in b.ids) - sum(i == 3 for i in a.ids)
    return {
        "documents": len(texts),
        "identical_documents": same_docs,
        "tokens_full": tokens,
        "tokens_full_with_kept_piece": kept_tokens,
        "extra_unknown_tokens": unknown,
    }


def main(argv=None) -> int:
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--keep-out", default=str(ROOT / "models" / "vocab" / "e5-small-zh.keep"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results" / "vocabulary.json"))
    args = parser.parse_args(argv)
    data = Path(args.data)

    recipe = sources.load_recipe("e5-small-multi")
    src = recipe["source"]
    packages = {p["import_name"]: p for p in src["packages"]}
    tok_spec = src["tokenizer"]
    path = sources.package_dir(packages[tok_spec["package"]], None) / tok_spec["path"]
    check_sha256(path, tok_spec["sha256"], tok_spec["path"])
    document = json.loads(path.read_text(encoding="utf-8"))
    full = Tokenizer.from_str(json.dumps(document))
    full.no_padding()
    full.no_truncation()
    vocab = document["model"]["vocab"]
    specials = [t["id"] for t in document["added_tokens"]] + [document["model"]["unk_id"]]

    base = rule_pieces(vocab, specials)
    words = word_list_pieces(full)
    dev = split_texts(data, DEV_SPLITS)
    test = split_texts(data, TEST_SPLITS)
    all_docs = {f: [json.loads(line)["text"] for line in open(p, encoding="utf-8")] for f, p in
                ((p.relative_to(data).as_posix(), p) for p in sorted(data.glob("*/*.jsonl")))}

    def trimmed_tokenizer(keep: list[int]):
        tok = Tokenizer.from_str(json.dumps(trim_unigram_tokenizer(document, keep)))
        tok.no_padding()
        tok.no_truncation()
        return tok, {old: new for new, old in enumerate(keep)}

    report: dict = {"full_pieces": len(vocab), "rule_pieces": len(base), "word_list_pieces_added": len(words - base)}
    # Held out: the choice sees the dev documents only; the test documents measure coverage.
    dev_keep = sorted(base | words | produced(full, [t for texts in dev.values() for t in texts]))
    tok, new_id = trimmed_tokenizer(dev_keep)
    report["held_out"] = {
        "pieces": len(dev_keep),
        "per_test_split": {name: compare(full, tok, new_id, texts) for name, texts in test.items()},
    }
    # Shipped: every document of the data as well.
    keep = sorted(base | words | produced(full, [t for texts in all_docs.values() for t in texts]))
    tok, new_id = trimmed_tokenizer(keep)
    report["shipped"] = {
        "pieces": len(keep),
        "per_file": {name: compare(full, tok, new_id, texts) for name, texts in all_docs.items()},
    }
    header = [
        "multilingual-e5-small (XLM-R Unigram vocabulary, 250002 pieces): the pieces kept for Chinese and English.",
        f"{len(keep)} ids of the full vocabulary, as ranges; written by scripts/trim_vocabulary.py (the rule is its docstring).",
    ]
    Path(args.keep_out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.keep_out, format_keep_list(keep, header).encode("utf-8"))
    atomic_write_bytes(args.report, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
