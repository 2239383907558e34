"""Tokenisation and alignment: word lists in, padded id arrays and token→word maps out.

The word path feeds the model *pre-split* words (as keyatten 0.3.1 does with
``is_split_into_words=True``), so sub-word tokens never cross a word boundary and every token maps to
at most one word. Truncation keeps the closing special token, like the torch original (0.3.1's own ONNX
path sliced it off, §12.1 item 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np



@dataclass(frozen=True)
class EncodedBatch:
    """Right- or left-padded model inputs for several documents.

    ``word_ids[b, t]`` is the index of the word token ``t`` belongs to, or -1 for special and padding
    tokens. ``lengths[b]`` is the number of real tokens of document ``b``.
    """

    input_ids: np.ndarray  # int64 [B, S]
    attention_mask: np.ndarray  # int64 [B, S]
    word_ids: np.ndarray  # int64 [B, S]
    lengths: np.ndarray  # int64 [B]
    padding_side: str

    def token_slice(self, b: int) -> np.ndarray:
        """Positions of the real tokens of document ``b`` inside the padded row (in order)."""
        return np.flatnonzero(self.attention_mask[b])


def configured_tokenizer(tokenizer, max_length: int):
    """A private copy of ``tokenizer`` that truncates to ``max_length`` and never pads.

    A copy, because truncation is state on the tokenizer object and the bundle's instance may be shared
    between extractors and threads.
    """
    from tokenizers import Tokenizer

    own = Tokenizer.from_str(tokenizer.to_str())
    own.no_padding()
    own.enable_truncation(max_length=int(max_length))
    return own


def pad_encodings(encodings, *, pad_id: int, padding_side: str) -> EncodedBatch:
    """One padded batch from ``tokenizers`` encodings (already truncated)."""
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    batch = len(encodings)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((batch, width), dtype=np.int64)
    word_ids = np.full((batch, width), -1, dtype=np.int64)
    for b, enc in enumerate(encodings):
        n = int(lengths[b])
        start = 0 if padding_side == "right" else width - n
        input_ids[b, start : start + n] = enc.ids
        attention_mask[b, start : start + n] = 1
        word_ids[b, start : start + n] = [-1 if w is None else w for w in enc.word_ids]
    return EncodedBatch(input_ids, attention_mask, word_ids, lengths, padding_side)


# Upper bound on batch × seq² per forward pass (one 512-token document, or 16 of 128 tokens). The graph's
# working memory grows with it (about 600 bytes per cell for e5-small: 12 layers of maps plus the
# softmax intermediates), and small batches of long inputs run no slower: on 80 CSL documents with
# e5-small fp32, 2 threads, a cap of 8 × 512² gave 6.1–6.8 docs/s at 3.0 GB peak RSS, 512² gave
# 8.5–8.6 docs/s at 1.7 GB.
MAX_BATCH_CELLS = 512 * 512


def length_sorted_batches(lengths: Sequence[int], batch_size: int, max_cells: int) -> list[list[int]]:
    """Group document indices into batches of similar token length.

    Sorting by length keeps padding small; ``max_cells`` bounds ``batch × seq²`` (the size of one
    layer's attention output), so a batch of long documents is split before it exhausts memory.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], 1)
        if current and (len(current) >= batch_size or (len(current) + 1) * longest * longest > max_cells):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def crop_attention(attentions: np.ndarray, batch: EncodedBatch, b: int) -> np.ndarray:
    """The ``[n_layers, n, n]`` attention of document ``b`` with padding removed.

    Cropping uses the attention mask, never ``[:n]``, so left-padded batches are handled too
    (0.3.1's batch path assumed right padding, §12.1 item 7).
    """
    n = int(batch.lengths[b])
    if batch.padding_side == "right":
        return attentions[:, b, :n, :n]
    keep = batch.token_slice(b)
    return attentions[:, b][:, keep][:, :, keep]

