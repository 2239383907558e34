"""Trimmed vocabularies: keep the pieces a language pair uses, remap tokenizer and embedding together.

multilingual-e5-small's 250k × 384 embedding matrix is most of its weights, yet Chinese and English
text reaches a small part of it. A *keep list* (models/vocab/*.keep: sorted ids of the full
vocabulary, written by scripts/trim_vocabulary.py) names the pieces kept. Trimming keeps them in their
original order, so new id = rank in the keep list, and

- the Unigram model keeps every kept piece with its score. The lowest-scored piece must be kept: the
  Unigram model scores an unknown character relative to the minimum score, so dropping it would change
  how unknown characters compete;
- special tokens (added tokens, the post-processor's ids, ``unk_id``) get their new ids;
- the word-embedding rows are gathered in the same order, and ``vocab_size`` in config.json follows.

For any text whose full-vocabulary segmentation uses only kept pieces, the trimmed Viterbi search
finds the same segmentation (the best path is still there and nothing better was added), so ids map
one to one and the model computes exactly the same numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from keyatten_lite.state.atomic import atomic_write_bytes

from . import ExportError

__all__ = [
    "read_keep_list",
    "format_keep_list",
    "trim_unigram_tokenizer",
    "trim_model_dir",
]


def format_keep_list(ids: Iterable[int], header: Sequence[str] = ()) -> str:
    """Sorted ids as ``start-end`` ranges, one per line, after ``#`` comment lines (plain text)."""
    ordered = sorted(set(int(i) for i in ids))
    lines = [f"# {line}" for line in header]
    start = prev = None
    for i in ordered:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            lines.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = i
    if start is not None:
        lines.append(f"{start}-{prev}" if prev != start else str(start))
    return "\n".join(lines) + "\n"


def read_keep_list(path: str | os.PathLike) -> list[int]:
    """The ids of a keep list, sorted; a clear error on any malformed line."""
    ids: list[int] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            start, _, end = line.partition("-")
            first, last = int(start), int(end) if end else int(start)
        except ValueError:
            raise ExportError(f"{path}:{number}: expected an id or a range 'start-end', got {line!r}") from None
        if last < first or (ids and first <= ids[-1]):
            raise ExportError(f"{path}:{number}: ranges must be increasing and disjoint ({line!r})")
        ids.extend(range(first, last + 1))
    if not ids:
        raise ExportError(f"{path}: the keep list is empty")
    return ids


def trim_unigram_tokenizer(tokenizer: dict, keep: Sequence[int]) -> dict:
    """A copy of a Unigram ``tokenizer.json`` document with only the ``keep`` pieces, ids remapped."""
    model = tokenizer.get("model", {})
    if model.get("type") != "Unigram":
        raise ExportError(f"vocabulary trimming supports Unigram tokenizers, not {model.get('type')!r}")
    vocab = model["vocab"]
    if keep[-1] >= len(vocab) or keep[0] < 0:
        raise ExportError(f"keep list names id {keep[-1]}, the vocabulary has {len(vocab)} pieces")
    new_id = {old: new for new, old in enumerate(keep)}
    lowest = min(range(len(vocab)), key=lambda i: vocab[i][1])
    specials = [t["id"] for t in tokenizer.get("added_tokens", [])]
    if model.get("unk_id") is not None:
        specials.append(model["unk_id"])
    missing = sorted({i for i in specials + [lowest] if i not in new_id})
    if missing:
        raise ExportError(f"the keep list must hold the special tokens and the lowest-scored piece; missing ids {missing}")

    trimmed = json.loads(json.dumps(tokenizer))
    trimmed["model"]["vocab"] = [vocab[i] for i in keep]
    if model.get("unk_id") is not None:
        trimmed["model"]["unk_id"] = new_id[model["unk_id"]]
    for token in trimmed.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    _remap_post_processor(trimmed.get("post_processor"), new_id)
    return trimmed


def _remap_post_processor(processor: dict | None, new_id: dict[int, int]) -> None:
    if not processor:
        return
    if processor.get("type") == "Sequence":
        for inner in processor.get("processors", []):
            _remap_post_processor(inner, new_id)
        return
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
        if isinstance(processor.get(key), list) and len(processor[key]) == 2:
            processor[key][1] = new_id[processor[key][1]]


def trim_model_dir(model_dir: str | os.PathLike, keep: Sequence[int], *, embedding_key: str | None = None) -> dict:
    """Trim a prepared HF encoder directory in place: tokenizer.json, model.safetensors, config.json.

    Returns what was done (pieces before/after, embedding rows before/after).
    """
    from safetensors.numpy import load_file, save_file

    model_dir = Path(model_dir)
    tokenizer_path = model_dir / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    pieces_before = len(tokenizer["model"]["vocab"])
    trimmed = trim_unigram_tokenizer(tokenizer, keep)

    weights_path = model_dir / "model.safetensors"
    state = load_file(str(weights_path))
    keys = [embedding_key] if embedding_key else [k for k in state if k.endswith("embeddings.word_embeddings.weight")]
    if len(keys) != 1 or keys[0] not in state:
        raise ExportError(f"{weights_path}: expected one word-embedding matrix, found {keys}")
    embedding = state[keys[0]]
    rows_before = int(embedding.shape[0])
    if rows_before < pieces_before:
        raise ExportError(f"{weights_path}: {rows_before} embedding rows for {pieces_before} pieces")
    state[keys[0]] = np.ascontiguousarray(embedding[np.asarray(keep, dtype=np.int64)])

    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["vocab_size"] = len(keep)
    if config.get("pad_token_id") is not None:
        config["pad_token_id"] = {old: new for new, old in enumerate(keep)}[config["pad_token_id"]]

    tmp = weights_path.with_name(weights_path.name + ".trim")
    save_file(state, str(tmp))
    os.replace(tmp, weights_path)
    atomic_write_bytes(tokenizer_path, json.dumps(trimmed, ensure_ascii=False).encode("utf-8"))
    atomic_write_bytes(config_path, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    return {
        "pieces_before": pieces_before,
        "pieces_after": len(keep),
        "embedding_rows_before": rows_before,
        "embedding_rows_after": len(keep),
    }
