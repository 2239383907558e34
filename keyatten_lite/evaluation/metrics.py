"""Keyphrase evaluation: dataset reading, gold/prediction normalisation, P/R/F1 at k, paired bootstrap.

The convention (see docs/results/README.md) is the one of the peer measurements:
macro and micro P/R/F1 at k on the first k de-duplicated predictions, P@k = matches / min(k, #pred)
(0 without predictions), R@k = matches / #gold, every gold phrase counts (absent ones too).
English phrases are compared as Porter-stemmed ``[a-z0-9]+`` token runs joined by one space,
Chinese phrases with whitespace removed. Nothing here imports torch or nltk (the stemmer is the runtime's, identical to nltk's default mode).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from keyatten_lite.errors import InvalidArgumentError

DEFAULT_KS: tuple[int, ...] = (5, 10, 15)

_TOKEN_RUN = re.compile(r"[a-z0-9]+")
_WHITESPACE = re.compile(r"\s+")
_INTEGER = re.compile(r"\d+")


# ----------------------------------------------------------------------------------------------------------------
# Documents and datasets


@dataclass(frozen=True)
class Document:
    """One evaluation document: its gold keyphrases as given in the source (not normalised)."""

    id: str
    lang: str
    text: str
    keywords: tuple[str, ...] = field(default_factory=tuple)


def _document_from_record(record: dict, where: str, default_lang: str | None) -> Document:
    missing = [key for key in ("id", "text", "keywords") if key not in record]
    if missing:
        raise InvalidArgumentError(
            f"{where}: record lacks {', '.join(missing)}; each line must be "
            '{"id", "lang", "text", "keywords"}'
        )
    lang = record.get("lang") or default_lang
    if lang not in ("en", "zh"):
        raise InvalidArgumentError(f"{where}: lang must be 'en' or 'zh', got {lang!r}; pass --lang to set it")
    keywords = record["keywords"]
    if isinstance(keywords, str) or not isinstance(keywords, Sequence):
        raise InvalidArgumentError(f"{where}: keywords must be a list of strings")
    return Document(str(record["id"]), lang, str(record["text"]), tuple(str(k) for k in keywords))


def read_jsonl(path: str | os.PathLike, default_lang: str | None = None) -> list[Document]:
    """Read a JSON Lines dataset ({"id","lang","text","keywords"} per line; blank lines skipped)."""
    documents = []
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise InvalidArgumentError(f"{path}: cannot be read ({error.strerror or error})") from None
    with handle:
        for line_number, raw in enumerate(handle, start=1):
            where = f"{path} line {line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidArgumentError(f"{where}: not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidArgumentError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise InvalidArgumentError(f"{where}: expected a JSON object")
            documents.append(_document_from_record(record, where, default_lang))
    return documents


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidArgumentError(f"{path}: not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start})") from None


def read_folder(path: str | os.PathLike, lang: str = "en") -> list[Document]:
    """Read the classic layout ``docsutf8/<id>.txt`` + ``keys/<id>.key`` (one gold phrase per line).

    Documents without a key file are skipped (they cannot be scored); ids are the file stems, in sorted order.
    """
    root = Path(path)
    docs_dir, keys_dir = root / "docsutf8", root / "keys"
    if not docs_dir.is_dir() or not keys_dir.is_dir():
        raise InvalidArgumentError(f"{root}: expected sub-folders docsutf8/ and keys/")
    documents = []
    for text_file in sorted(docs_dir.glob("*.txt")):
        key_file = keys_dir / (text_file.stem + ".key")
        if not key_file.is_file():
            continue
        keywords = [line.strip() for line in _read_utf8(key_file).splitlines() if line.strip()]
        documents.append(Document(text_file.stem, lang, _read_utf8(text_file), tuple(keywords)))
    return documents


def read_dataset(path: str | os.PathLike, lang: str | None = None) -> list[Document]:
    """Read a JSONL file or a docsutf8/keys folder."""
    target = Path(path)
    if target.is_dir():
        return read_folder(target, lang or "en")
    if target.is_file():
        return read_jsonl(target, lang)
    raise InvalidArgumentError(f"{target}: no such dataset file or folder")


def numeric_id(document_id: str) -> int:
    """The last integer in an id ("inspec/1001" -> 1001), for numeric ordering; ids without one sort last."""
    numbers = _INTEGER.findall(document_id)
    return int(numbers[-1]) if numbers else 2**62


# Named splits of the project. Inspec: the first 500 documents by numeric id (the peer measurements'
# "first 500 by file id"). SemEval2017: the first 200 lines of the file (kept for tuning) and the rest.
NAMED_SPLITS: dict[str, str] = {
    "inspec-first500": "the first 500 documents sorted by the integer in their id",
    "inspec-dev": "every document after the first 500 sorted by the integer in their id (dev data)",
    "semeval2017-first200": "the first 200 documents in file order",
    "semeval2017-rest": "every document after the first 200 in file order",
    # SemEval-2010 has no dev split of its own; long-document settings need one.
    "semeval2010-dev": "every third document (0th, 3rd, ...) in the order of the id strings (81 of 243)",
    "semeval2010-rest": "the other documents (162 of 243), in file order",
    # Dev-only files (../shared/data README): every document, named so that a run says it is dev data.
    "www-dev": "every document in file order (en/www.jsonl is dev data only)",
    "kpcrowd-dev": "every document in file order (en/kpcrowd-dev.jsonl is dev data only)",
    "csl-dev": "every document in file order (zh/csl_dev.jsonl is dev data)",
}


def select_documents(
    documents: Sequence[Document],
    *,
    split: str | None = None,
    ids: Iterable[str] | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[Document]:
    """Subset: named split first, then an id list (kept in dataset order), then offset/limit."""
    selected = list(documents)
    if split is not None:
        if split == "inspec-first500":
            selected = sorted(selected, key=lambda d: numeric_id(d.id))[:500]
        elif split == "inspec-dev":
            selected = sorted(selected, key=lambda d: numeric_id(d.id))[500:]
        elif split in ("www-dev", "kpcrowd-dev", "csl-dev"):
            pass
        elif split == "semeval2017-first200":
            selected = selected[:200]
        elif split == "semeval2017-rest":
            selected = selected[200:]
        elif split in ("semeval2010-dev", "semeval2010-rest"):
            dev_ids = {d.id for i, d in enumerate(sorted(selected, key=lambda d: d.id)) if i % 3 == 0}
            selected = [d for d in selected if (d.id in dev_ids) == (split == "semeval2010-dev")]
        else:
            raise InvalidArgumentError(f"unknown split {split!r}; known splits: {', '.join(NAMED_SPLITS)}")
    if ids is not None:
        wanted = {i.strip() for i in ids if i.strip()}
        unknown = wanted - {d.id for d in selected}
        if unknown:
            raise InvalidArgumentError(
                f"{len(unknown)} id(s) not in the dataset (after the split), e.g. {sorted(unknown)[:3]}"
            )
        selected = [d for d in selected if d.id in wanted]
    if offset < 0 or (limit is not None and limit < 0):
        raise InvalidArgumentError("offset and limit must be >= 0")
    end = None if limit is None else offset + limit
    return selected[offset:end]


def read_ids_file(path: str | os.PathLike) -> list[str]:
    """One id per line; blank lines and lines starting with # are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# ----------------------------------------------------------------------------------------------------------------
# Normalisation


@lru_cache(maxsize=200_000)
def _stem(token: str) -> str:
    # The runtime's Porter stemmer: nltk's default mode, stem for stem (runtime_tests/test_porter.py).
    from keyatten_lite.text.porter import stem

    return stem(token)


def english_tokens(text: str) -> list[str]:
    """Lowercased ``[a-z0-9]+`` runs, alphabetic ones Porter-stemmed."""
    return [_stem(t) if t.isalpha() else t for t in _TOKEN_RUN.findall(text.lower())]


def normalise_keyphrase(phrase: str, lang: str) -> str:
    """Comparison key of a phrase: English stemmed tokens joined by one space; Chinese lowercased, no whitespace."""
    if lang == "en":
        return " ".join(english_tokens(phrase))
    return _WHITESPACE.sub("", phrase.lower())


def unique_normalised(phrases: Iterable[str], lang: str) -> list[str]:
    """Normalised keys in order, duplicates (first kept) and empty keys dropped."""
    seen: set[str] = set()
    keys = []
    for phrase in phrases:
        key = normalise_keyphrase(phrase, lang)
        if key and key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def normalised_text(text: str, lang: str) -> str:
    """The text in the form gold keys are searched in: padded token string (en) or whitespace-free (zh)."""
    if lang == "en":
        return " " + " ".join(english_tokens(text)) + " "
    return _WHITESPACE.sub("", text.lower())


def gold_presence(document: Document) -> tuple[int, int]:
    """(gold keys found in the text, gold keys): English needs a whole-token contiguous match."""
    gold = unique_normalised(document.keywords, document.lang)
    haystack = normalised_text(document.text, document.lang)
    if document.lang == "en":
        present = sum(1 for key in gold if f" {key} " in haystack)
    else:
        present = sum(1 for key in gold if key in haystack)
    return present, len(gold)


def present_gold_share(documents: Sequence[Document]) -> float:
    """Share of all gold keys (pooled) that occur in their document's text: the extractive ceiling."""
    found = total = 0
    for document in documents:
        present, count = gold_presence(document)
        found += present
        total += count
    return found / total if total else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Scores


def match_counts(
    predictions: Sequence[Sequence[str]], documents: Sequence[Document], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Per-document counts: ``matches`` and ``predicted`` are [n_docs, len(ks)], ``gold`` is [n_docs]."""
    if len(predictions) != len(documents):
        raise InvalidArgumentError(f"{len(predictions)} prediction lists for {len(documents)} documents")
    ks = list(ks)
    matches = np.zeros((len(documents), len(ks)), dtype=np.int64)
    predicted = np.zeros((len(documents), len(ks)), dtype=np.int64)
    gold_counts = np.zeros(len(documents), dtype=np.int64)
    for row, (predicted_phrases, document) in enumerate(zip(predictions, documents)):
        gold = set(unique_normalised(document.keywords, document.lang))
        keys = unique_normalised(predicted_phrases, document.lang)
        hits = np.cumsum([key in gold for key in keys]) if keys else np.zeros(0, dtype=np.int64)
        gold_counts[row] = len(gold)
        for column, k in enumerate(ks):
            taken = min(k, len(keys))
            predicted[row, column] = taken
            matches[row, column] = hits[taken - 1] if taken else 0
    return {"matches": matches, "predicted": predicted, "gold": gold_counts, "ks": np.asarray(ks)}


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return _safe_divide(2.0 * precision * recall, precision + recall)


def per_document_scores(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-document P, R, F1 at each k, arrays [n_docs, len(ks)]. A document without gold has R = 0."""
    precision = _safe_divide(counts["matches"], counts["predicted"])
    recall = _safe_divide(counts["matches"], counts["gold"][:, None])
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall)}


def aggregate_scores(counts: dict[str, np.ndarray]) -> dict[int, dict[str, float]]:
    """{k: {macro_p, macro_r, macro_f1, micro_p, micro_r, micro_f1}} from per-document counts."""
    per_doc = per_document_scores(counts)
    result: dict[int, dict[str, float]] = {}
    for column, k in enumerate(counts["ks"].tolist()):
        matched = counts["matches"][:, column].sum()
        micro_p = float(_safe_divide(matched, counts["predicted"][:, column].sum()))
        micro_r = float(_safe_divide(matched, counts["gold"].sum()))
        n_docs = len(counts["gold"])
        result[int(k)] = {
            "macro_p": float(per_doc["precision"][:, column].mean()) if n_docs else 0.0,
            "macro_r": float(per_doc["recall"][:, column].mean()) if n_docs else 0.0,
            "macro_f1": float(per_doc["f1"][:, column].mean()) if n_docs else 0.0,
            "micro_p": micro_p,
            "micro_r": micro_r,
            "micro_f1": float(_f1(np.float64(micro_p), np.float64(micro_r))),
        }
    return result


def score_predictions(
    predictions: Sequence[Sequence[str]], documents: Sequence[Document], ks: Sequence[int] = DEFAULT_KS
) -> dict[int, dict[str, float]]:
    """Macro and micro P/R/F1 at each k."""
    return aggregate_scores(match_counts(predictions, documents, ks))


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of mean(a) - mean(b) over documents."""

    difference: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int


def paired_bootstrap(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 20261126,
) -> BootstrapResult:
    """Percentile CI of the mean per-document difference, resampling documents (the same draw for both)."""
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InvalidArgumentError("paired bootstrap needs two non-empty score vectors over the same documents")
    if not 0.0 < confidence < 1.0:
        raise InvalidArgumentError("confidence must be in (0, 1)")
    differences = a - b
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, differences.size, size=(n_resamples, differences.size))
    resampled_means = differences[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(resampled_means, [tail, 100.0 - tail])
    return BootstrapResult(float(differences.mean()), float(low), float(high), confidence, n_resamples, seed)
