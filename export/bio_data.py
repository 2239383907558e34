"""BIO training data (build time, pure): gold keyword spans, token labels, span scores, the split.

Labels: the gold keywords found in the text (case-insensitive; whitespace inside a keyword matches any
whitespace run; an ASCII letter or digit at a keyword's edge must not continue a word), every
occurrence, longer keywords first, no overlaps; the tokens overlapping a span get B then I; specials
and padding get O (0.3.1 decodes with [CLS]/[SEP] inside the sequence).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from keyatten_lite.scoring.bio_decode import TAG_B, TAG_I, TAG_O

from . import ExportError
from . import manifest as manifest_mod

__all__ = [
    "REPO_DATA_DIR",
    "keyword_pattern",
    "keyword_char_spans",
    "token_labels",
    "span_key",
    "gold_present",
    "span_prf",
    "data_dir",
    "load_training_split",
    "numeric_id",
]

REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
_WORD_EDGE = "A-Za-z0-9"

# ---------------------------------------------------------------------------------------------
# Labels (pure)


def keyword_pattern(keyword: str) -> re.Pattern[str] | None:
    """Case-insensitive pattern of a keyword; whitespace matches any run; ASCII word edges respected."""
    parts = keyword.split()
    if not parts:
        return None
    body = r"\s+".join(re.escape(part) for part in parts)
    stripped = " ".join(parts)
    if re.match(f"[{_WORD_EDGE}]", stripped[0]):
        body = f"(?<![{_WORD_EDGE}])" + body
    if re.match(f"[{_WORD_EDGE}]", stripped[-1]):
        body += f"(?![{_WORD_EDGE}])"
    return re.compile(body, re.IGNORECASE)


def keyword_char_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int]]:
    """Non-overlapping character spans of the keywords in ``text``, longer keywords placed first."""
    found = []
    for keyword in dict.fromkeys(k for k in keywords if isinstance(k, str)):
        pattern = keyword_pattern(keyword)
        if pattern is not None:
            found.extend((m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start())
    found.sort(key=lambda span: (-(span[1] - span[0]), span[0]))
    taken: list[tuple[int, int]] = []
    for start, end in found:
        if all(end <= a or start >= b for a, b in taken):
            taken.append((start, end))
    return sorted(taken)


def token_labels(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """B/I/O per token: the tokens overlapping a character span get B then I; empty-offset tokens O."""
    labels = np.full(len(offsets), TAG_O, dtype=np.int64)
    for start, end in spans:
        inside = [
            i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start
        ]
        for rank, i in enumerate(inside):
            labels[i] = TAG_B if rank == 0 else TAG_I
    return labels


def span_key(text: str) -> str:
    return " ".join(text.lower().split())


def gold_present(text: str, keywords: Sequence[str]) -> list[str]:
    """Normalised keys of the gold keywords that occur in ``text`` (the recall denominator)."""
    keys = []
    for keyword in keywords:
        pattern = keyword_pattern(keyword) if isinstance(keyword, str) else None
        if pattern is not None and pattern.search(text):
            keys.append(span_key(keyword))
    return list(dict.fromkeys(keys))


def span_prf(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict:
    """Micro span-level precision, recall and F1 (exact match after lower-casing and whitespace folding)."""
    hits = n_pred = n_gold = 0
    for pred_spans, gold_keys in zip(predicted, gold):
        pred_keys = set(span_key(s) for s in pred_spans)
        gold_set = set(gold_keys)
        hits += len(pred_keys & gold_set)
        n_pred += len(pred_keys)
        n_gold += len(gold_set)
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "hits": hits,
        "predicted": n_pred,
        "gold_present": n_gold,
        "docs": len(gold),
    }


# ---------------------------------------------------------------------------------------------
# Data


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The evaluation data folder: ``explicit``, $KEYATTEN_LITE_DATA, or the repo's ../shared/data."""
    path = Path(explicit or os.environ.get("KEYATTEN_LITE_DATA") or REPO_DATA_DIR)
    if not path.is_dir():
        raise ExportError(
            f"BIO training data folder {path} not found; pass --data DIR or set KEYATTEN_LITE_DATA "
            "to the folder holding zh/csl_dev.jsonl and en/inspec.jsonl"
        )
    return path


def numeric_id(doc: Mapping[str, Any]) -> int:
    """The last number in a document id: how the recipes and named splits order Inspec."""
    digits = re.findall(r"\d+", str(doc.get("id", "")))
    if not digits:
        raise ExportError(f"document id {doc.get('id')!r} has no number; cannot order by numeric id")
    return int(digits[-1])


def load_training_split(spec: Mapping[str, Any], root: Path) -> tuple[list[dict], list[dict], dict]:
    """(train docs, dev docs, record) from a recipe's ``training`` block.

    ``order``: "file" or "numeric-id"; the first ``exclude_first`` documents (a test set) are never
    used; the last ``dev_docs`` of the rest are the dev split; ``max_train_docs`` caps the rest.
    """
    path = root / spec["dataset"]
    if not path.is_file():
        raise ExportError(f"BIO training set {path} is missing; check the data folder")
    with open(path, encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle if line.strip()]
    if spec.get("order", "file") == "numeric-id":
        docs.sort(key=numeric_id)
    excluded = int(spec.get("exclude_first", 0))
    usable = docs[excluded:]
    n_dev = int(spec.get("dev_docs", 100))
    if len(usable) <= n_dev:
        raise ExportError(f"{path} has {len(usable)} usable documents, not more than dev_docs={n_dev}")
    train, dev = usable[:-n_dev], usable[-n_dev:]
    if spec.get("max_train_docs"):
        train = train[: int(spec["max_train_docs"])]
    record = {
        "dataset": spec["dataset"],
        "dataset_sha256": manifest_mod.sha256_file(path),
        "order": spec.get("order", "file"),
        "excluded_first": excluded,
        "excluded_ids": [docs[0]["id"], docs[excluded - 1]["id"]] if excluded else [],
        "train_docs": len(train),
        "train_ids": [train[0]["id"], train[-1]["id"]],
        "dev_docs": len(dev),
        "dev_ids": [dev[0]["id"], dev[-1]["id"]],
    }
    return train, dev, record


