"""Windows over long texts: how a text longer than the graph's max_length is read.

Two readers share this module. The default profile tokenises the raw text once and slides windows of
content tokens over it (``token_scores_for_texts``: every window is scored, a token read twice gets the
mean). The BIO tagger uses the tokenizer's overflow windows (``overflow_windows`` / ``run_windows``),
whose outputs are cropped per window and may be reduced as each batch completes, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.model.align import MAX_BATCH_CELLS, length_sorted_batches
from keyatten_lite.scoring import attention

# The BIO graph's second output (tags B, I, O per token).
EMISSIONS_OUTPUT = "emissions"


def window_starts(n_tokens: int, content_window: int, stride: int) -> list[int]:
    """Start positions of windows of ``content_window`` tokens covering ``n_tokens`` (the last one ends
    at the last token, so every window but a short document's only one is full)."""
    if content_window < 1 or stride < 1:
        raise InvalidArgumentError("content_window and stride must be >= 1")
    if n_tokens <= content_window:
        return [0]
    starts = list(range(0, n_tokens - content_window, stride))
    starts.append(n_tokens - content_window)
    return starts


@dataclass
class TokenScores:
    """Per-token scores of one document: ``scores[method]`` is ``[n_layers_read, n_tokens]``."""

    offsets: np.ndarray  # int64 [n_tokens, 2] character offsets into the raw text
    alignable: np.ndarray  # bool [n_tokens]: tokens that may be aligned to words (not a bare "▁")
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    n_windows: int = 1
    max_pass_tokens: int = 0  # the longest sequence sent to the model for this document


def token_scores_for_texts(
    bundle,
    texts: Sequence[str],
    methods: Sequence[str],
    layer_positions: Sequence[int],
    *,
    window: int | None = None,
    stride_fraction: float = 0.75,
    windows_per_batch: int = 16,
    max_batch_cells: int | None = None,
    tokenizer=None,
) -> list[TokenScores]:
    """Run the graph on the raw texts in windows and score every token with each base method.

    Windows of different documents are batched together (sorted by length); a token read by several
    windows gets the mean of its scores. Specials are added per window and never scored.
    """
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in attention.BASE_METHODS:
            raise InvalidArgumentError(f"unknown base method {m!r}; choose from {', '.join(attention.BASE_METHODS)}")
    tok = tokenizer if tokenizer is not None else bundle.tokenizer()
    width = int(window or bundle.max_length)
    if width > bundle.max_length:
        raise InvalidArgumentError(f"window {width} exceeds the bundle's max_length {bundle.max_length}")
    special = bundle.special_token_ids
    cls_id = special.get("cls") if special.get("cls") is not None else special.get("bos")
    sep_id = special.get("sep") if special.get("sep") is not None else special.get("eos")
    if cls_id is None or sep_id is None or bundle.is_causal:
        raise InvalidArgumentError("the default profile needs an encoder bundle with cls/sep (or bos/eos) tokens")
    pad_id = bundle.pad_token_id if bundle.pad_token_id is not None else 0
    content_window = width - 2
    stride = max(1, int(content_window * stride_fraction))

    encodings = tok.encode_batch(list(texts), add_special_tokens=False)
    results: list[TokenScores] = []
    jobs: list[tuple[int, int, int]] = []  # (document, start, stop) in content tokens
    sums: list[dict[str, np.ndarray]] = []
    counts: list[np.ndarray] = []
    for d, enc in enumerate(encodings):
        n = len(enc.ids)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        alignable = np.fromiter((t.replace("▁", "") != "" for t in enc.tokens), dtype=bool, count=n)
        starts = window_starts(n, content_window, stride) if n else []
        results.append(TokenScores(offsets, alignable, {}, len(starts), (min(n, content_window) + 2) if n else 0))
        sums.append({m: np.zeros((len(layer_positions), n), dtype=np.float64) for m in methods})
        counts.append(np.zeros(n, dtype=np.float64))
        jobs.extend((d, s, min(n, s + content_window)) for s in starts)

    jobs.sort(key=lambda j: (j[2] - j[1], j[0], j[1]))
    groups = length_sorted_batches(
        [stop - start + 2 for _, start, stop in jobs], windows_per_batch, max_batch_cells or MAX_BATCH_CELLS
    )
    for group_indices in groups:
        group = [jobs[i] for i in group_indices]
        seq = max(stop - start for _, start, stop in group) + 2
        input_ids = np.full((len(group), seq), pad_id, dtype=np.int64)
        mask = np.zeros((len(group), seq), dtype=np.int64)
        for b, (d, start, stop) in enumerate(group):
            ids = encodings[d].ids[start:stop]
            input_ids[b, : len(ids) + 2] = [cls_id, *ids, sep_id]
            mask[b, : len(ids) + 2] = 1
        attentions = bundle.run_attention(input_ids, mask)
        for b, (d, start, stop) in enumerate(group):
            n = stop - start + 2
            content = np.ones(n, dtype=bool)
            content[0] = content[-1] = False
            for li, p in enumerate(layer_positions):
                A = np.ascontiguousarray(attentions[p, b, :n, :n], dtype=np.float32)
                per_method = attention.token_method_scores(A, causal=False, content_mask=content, methods=methods)
                for m in methods:
                    sums[d][m][li, start:stop] += per_method[m][1:-1]
            counts[d][start:stop] += 1.0
        del attentions
    for d, result in enumerate(results):
        c = np.maximum(counts[d], 1.0)
        result.scores = {m: (sums[d][m] / c).astype(np.float32) for m in methods}
    return results




@dataclass
class Window:
    text_index: int
    window_index: int
    n_windows: int
    ids: list[int]
    offsets: list[tuple[int, int]]
    leading_specials: int  # special tokens before the first content token ([CLS]: 1)
    n_content: int




def window_tokenizer(bundle, max_length: int, stride: int):
    """A private copy of ``bundle``'s tokenizer: truncation at ``max_length`` with overflow windows
    sharing ``stride`` tokens, no padding (the bundle's own tokenizer object is never changed)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(bundle.tokenizer().to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(max_length), stride=int(stride))
    return tokenizer


def overflow_windows(tokenizer, texts: Sequence[str]) -> list[Window]:
    """Every overflow window of every text (``tokenizer`` from :func:`window_tokenizer`), in text order."""
    encodings = tokenizer.encode_batch(list(texts))
    windows = []
    for text_index, encoding in enumerate(encodings):
        parts = [encoding] + list(encoding.overflowing)
        for window_index, part in enumerate(parts):
            special = list(part.special_tokens_mask)
            leading = next((i for i, flag in enumerate(special) if not flag), len(special))
            windows.append(
                Window(
                    text_index,
                    window_index,
                    len(parts),
                    list(part.ids),
                    list(part.offsets),
                    leading,
                    len(special) - sum(special),
                )
            )
    return windows


def run_windows(
    bundle,
    windows: Sequence[Window],
    names: Sequence[str],
    batch_size: int,
    on_output: Callable[[int, dict[str, np.ndarray]], Any] | None = None,
) -> list:
    """Graph outputs ``names`` for each window, cropped to its valid tokens; one session call per batch
    of ``batch_size`` windows of similar length (attention ``[n_layers, n, n]``, emissions ``[n, 3]``).

    ``on_output(window index, cropped outputs)``, when given, is called as each batch completes and its
    return value is kept instead of the outputs: a long document's attention maps need not all be held
    in memory at once (the crops are views of the batch's arrays).
    """
    results: list = [None] * len(windows)
    pad_id = bundle.pad_token_id if bundle.pad_token_id is not None else 0
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))  # less padding
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        width = max(len(windows[i].ids) for i in chunk)
        input_ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, i in enumerate(chunk):
            input_ids[row, : len(windows[i].ids)] = windows[i].ids
            attention_mask[row, : len(windows[i].ids)] = 1
        outputs = bundle.run_outputs(input_ids, attention_mask, list(names))
        for row, i in enumerate(chunk):
            n = len(windows[i].ids)
            cropped = {}
            if EMISSIONS_OUTPUT in outputs:
                cropped[EMISSIONS_OUTPUT] = outputs[EMISSIONS_OUTPUT][row, :n]
            if bundle.output_name in outputs:
                cropped[bundle.output_name] = outputs[bundle.output_name][:, row, :n, :n]
            results[i] = cropped if on_output is None else on_output(i, cropped)
        del outputs
    return results


