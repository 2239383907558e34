"""Attention scoring methods of keyatten 0.3.1 (spec §3), vectorised with numpy.

Conventions (spec, "Conventions used below"): ``A`` is the ``n × n`` head-mean attention of one layer for
one sequence, rows are queries and columns keys, ``n`` counts every valid token (specials and any
instruction prefix included). All returned arrays are float32.

Everything here is a pure function over numpy arrays. The row loop that 0.3.1 runs in Python for
``excess_attn`` (spec §12.3) is replaced by a few matrix-vector products; the remaining per-token helpers
(word aggregation, word→token projection, span means) are vectorised too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from keyatten_lite.errors import InvalidArgumentError

BASE_METHODS: tuple[str, ...] = (
    "cls_attn",
    "received_attn",
    "samrank",
    "fusion_attn",
    "voted_attn",
    "excess_attn",
)
IDF_METHODS: tuple[str, ...] = tuple(m + "_idf" for m in BASE_METHODS)
ALL_METHODS: tuple[str, ...] = BASE_METHODS + IDF_METHODS

# The one epsilon 0.3.1 uses everywhere (spec Appendix B): samrank denominator, causal row-sum guards,
# excess mass guard, log clip and the ln(m) guard.
_EPS = 1e-10

# Largest number of float32 elements a temporary matrix may hold before the pairwise helpers and the
# causal excess computation switch to row blocks (about 16 MiB per temporary).
_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------- names
def base_method(name: object) -> tuple[str, bool]:
    """``(base method, uses_idf)`` of a method name such as ``"fusion_attn_idf"``."""
    if isinstance(name, str):
        if name in BASE_METHODS:
            return name, False
        if name in IDF_METHODS:
            return name[: -len("_idf")], True
    raise InvalidArgumentError(f"unknown method {name!r}; choose one of {', '.join(ALL_METHODS)}")


def _requested_methods(methods: Iterable[str] | None) -> tuple[str, ...]:
    if methods is None:
        return BASE_METHODS
    if isinstance(methods, str):  # a bare string would otherwise be iterated character by character
        methods = (methods,)
    wanted = []
    for name in methods:
        if not isinstance(name, str) or name not in BASE_METHODS:
            raise InvalidArgumentError(
                f"token_method_scores takes base method names only, got {name!r}; choose from "
                f"{', '.join(BASE_METHODS)} (map '_idf' names with base_method())"
            )
        if name not in wanted:
            wanted.append(name)
    return tuple(wanted)


# --------------------------------------------------------------------------------------------- minmax
def minmax(x: np.ndarray) -> np.ndarray:
    """Spec's minmax: empty → unchanged; ``math.isclose(min, max)`` → zeros; else ``(x-min)/(max-min)``.

    The arithmetic runs in float32 for float32 input and in float64 otherwise (as 0.3.1 does, so the
    ``isclose`` test sees the same values); the result is float32.
    """
    x = np.asarray(x)
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64, copy=False)
    if x.size == 0:
        return x.astype(np.float32)
    lo = x.min()
    hi = x.max()
    if math.isclose(float(lo), float(hi)):
        return np.zeros(x.shape, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


# --------------------------------------------------------------------------------------------- content masks
def encoder_word_content_mask(word_ids: np.ndarray) -> np.ndarray:
    """Encoder word path (§3.1): a token is content iff it has a word id (specials have -1)."""
    return np.asarray(word_ids) >= 0


def causal_word_content_mask(word_ids: np.ndarray, valid_word_mask: np.ndarray) -> np.ndarray:
    """Causal word path with POS tags (§3.2): a token is content iff its word is a valid word (§4.3)."""
    ids = np.asarray(word_ids, dtype=np.int64)
    valid = np.asarray(valid_word_mask, dtype=bool)
    if ids.size and ids.max() >= valid.shape[0]:
        raise InvalidArgumentError(
            f"word id {int(ids.max())} is out of range for {valid.shape[0]} words; pass one validity flag per word"
        )
    has_word = ids >= 0
    # Specials index word 0 here only to keep the gather in range; has_word masks them out.
    return has_word & valid[np.where(has_word, ids, 0)] if valid.size else np.zeros(ids.shape, dtype=bool)


# --------------------------------------------------------------------------------------------- methods
def _check_attention(A: np.ndarray, content_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A = np.asarray(A, dtype=np.float32)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise InvalidArgumentError(f"attention must be a square [n, n] matrix, got shape {A.shape}")
    mask = np.asarray(content_mask)
    if mask.shape != (A.shape[0],):
        raise InvalidArgumentError(
            f"content_mask must have one flag per token ({A.shape[0]}), got shape {mask.shape}"
        )
    return A, mask.astype(bool, copy=False)


def _row_blocks(n_rows: int, n_cols: int) -> Iterable[tuple[int, int]]:
    step = max(1, _BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _excess_rows(masked: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Certainty-weighted excess of one block of rows.

    ``masked`` holds each row's attention restricted to its content set M_i (zeros elsewhere) and
    ``counts`` is m_i = |M_i|. Since mass·(p_j − 1/m) = A[i,j] − mass/m, the spec's row loop
    ``excess_j += mass·certainty·(p_j − 1/m) for j ∈ M_i`` equals
    ``Σ_i w_i·A[i,j] − Σ_i w_i·mass_i/m_i·[j ∈ M_i]`` with w_i = certainty_i (0 for skipped rows).
    Returns ``(Σ_i w_i·A[i,:] over the block, w_i·mass_i/m_i per row)``.
    """
    mass = masked.sum(axis=1)
    keep = (counts > 1) & (mass > _EPS)  # rows 0.3.1 skips contribute nothing
    p = masked / np.where(keep, mass, np.float32(1.0))[:, None]
    # p·ln(max(p, 1e-10)), in place on one temporary. Entries outside M_i have p = 0 and add
    # 0·ln(1e-10) = 0, exactly like content entries with zero attention in the spec's loop.
    plogp = np.maximum(p, np.float32(_EPS))
    np.log(plogp, out=plogp)
    plogp *= p
    entropy = -plogp.sum(axis=1).astype(np.float64)
    log_m = np.log(np.maximum(counts, 1).astype(np.float64))
    safe_log_m = np.where(log_m > _EPS, log_m, 1.0)
    certainty = np.where(log_m > _EPS, np.maximum(0.0, 1.0 - entropy / safe_log_m), 0.0)
    weight = np.where(keep, certainty, 0.0)
    gain = weight.astype(np.float32) @ masked
    share = weight * mass.astype(np.float64) / np.maximum(counts, 1)
    return gain, share


def _excess_attention(A: np.ndarray, mask: np.ndarray, causal: bool) -> np.ndarray:
    """§3.1 excess attention; causal (§3.2) rows see only columns 0..i."""
    n = A.shape[0]
    excess = np.zeros(n, dtype=np.float64)
    mask_values = mask.astype(np.float32)
    if not causal:
        # Every row sees every column, so M is the same content set (m tokens) for all rows.
        m = int(mask.sum())
        if m <= 1:
            return np.zeros(n, dtype=np.float32)
        counts = np.full(n, m, dtype=np.int64)
        for r0, r1 in _row_blocks(n, n):
            gain, share = _excess_rows(A[r0:r1] * mask_values, counts[r0:r1])
            excess += gain
            excess -= share.sum() * mask_values
        return excess.astype(np.float32)
    # Causal: M_i = mask ∩ [0, i], so m_i is the running count of content tokens.
    counts_all = np.cumsum(mask, dtype=np.int64)
    col_index = np.arange(n)
    for r0, r1 in _row_blocks(n, n):
        visible = (col_index[None, :] <= np.arange(r0, r1)[:, None]) & mask
        gain, share = _excess_rows(A[r0:r1] * visible, counts_all[r0:r1])
        excess += gain
        # Column j ∈ M belongs to M_i for every row i >= j: subtract the block's shares of rows i >= j.
        suffix = np.concatenate([np.cumsum(share[::-1])[::-1], [0.0]])  # suffix[t] = Σ_{t' >= t} share
        excess -= np.where(mask, suffix[np.clip(col_index - r0, 0, r1 - r0)], 0.0)
    return excess.astype(np.float32)


def token_method_scores(
    A: np.ndarray,
    *,
    causal: bool,
    content_mask: np.ndarray,
    methods: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """Token-level scores of the base methods (§3.1 encoder, §3.2 causal), keyed by base method name.

    ``methods=None`` computes all six; a subset computes only what those need (0.3.1 always computed
    all six). ``content_mask`` is the §3.1/§3.2 content mask over the ``n`` tokens of ``A``.
    """
    A, mask = _check_attention(A, content_mask)
    wanted = _requested_methods(methods)
    n = A.shape[0]
    out: dict[str, np.ndarray] = {}
    if n == 0:
        return {name: np.zeros(0, dtype=np.float32) for name in wanted}

    need_received = any(m in wanted for m in ("received_attn", "samrank", "fusion_attn")) or (
        "voted_attn" in wanted and not causal
    )
    need_cls = "cls_attn" in wanted or "fusion_attn" in wanted
    positions_after = np.arange(n, 0, -1, dtype=np.float32)  # n − j: tokens at or after position j

    received = A.sum(axis=0) if need_received else None
    if "received_attn" in wanted:
        out["received_attn"] = received
    if need_cls:
        if causal:
            cls = A[n - 1].copy()
            cls[~mask] = 0.0
            total = cls.sum()
            if total > _EPS:
                cls = cls / total
        else:
            cls = A[0].copy()
        if "cls_attn" in wanted:
            out["cls_attn"] = cls
    if "samrank" in wanted:
        # Σ_j A[i,j]·r_j / (Σ_k A[k,j]·r_j + ε) with Σ_k A[k,j] = r_j: one matrix-vector product.
        r64 = received.astype(np.float64)
        column_weight = (r64 / (r64 * r64 + _EPS)).astype(np.float32)
        out["samrank"] = (received + A @ column_weight).astype(np.float32)
    if "fusion_attn" in wanted:
        out["fusion_attn"] = minmax(cls) * minmax(received)
    if "voted_attn" in wanted:
        if causal:
            # Zeroing non-content columns then renormalising rows: row sums are A @ mask, and the column
            # sums of the renormalised matrix are mask_j · Σ_i A[i,j] / rowsum_i (two matrix-vector products).
            content = mask.astype(np.float32)
            row_sums = A @ content
            row_sums = np.where(row_sums <= _EPS, np.float32(1.0), row_sums)
            column_sums = ((np.float32(1.0) / row_sums) @ A) * content
            out["voted_attn"] = (column_sums / positions_after).astype(np.float32)
        else:
            out["voted_attn"] = (received / positions_after).astype(np.float32)
    if "excess_attn" in wanted:
        out["excess_attn"] = _excess_attention(A, mask, causal)
    return {name: np.asarray(out[name], dtype=np.float32) for name in wanted}


# --------------------------------------------------------------------------------------------- layers
def fuse_layers(
    per_layer: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float] | None
) -> dict[str, np.ndarray]:
    """§3.5: per-method weighted average of per-layer score vectors (weights w/Σw; default equal).

    Unlike 0.3.1 (which accepted negative weights and raised ValueError or ZeroDivisionError for a zero
    sum depending on the path), every bad weight list raises InvalidArgumentError here.
    """
    layers = list(per_layer)
    if not layers:
        raise InvalidArgumentError("fuse_layers needs at least one layer's scores")
    if weights is None:
        w = np.ones(len(layers), dtype=np.float64)
    else:
        try:
            w = np.asarray([float(x) for x in weights], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"layer_weights must be numbers, got {weights!r}") from exc
        if w.shape[0] != len(layers):
            raise InvalidArgumentError(
                f"layer_weights has {w.shape[0]} entries for {len(layers)} layers; give one weight per layer"
            )
        if not np.all(np.isfinite(w)):
            raise InvalidArgumentError(f"layer_weights must be finite, got {list(weights)}")
        if np.any(w < 0):
            raise InvalidArgumentError(f"layer_weights must be >= 0, got {list(weights)}")
        if w.sum() <= 0:
            raise InvalidArgumentError(
                f"layer_weights sum to zero ({list(weights)}); give at least one positive weight"
            )
    w = w / w.sum()
    keys = list(layers[0].keys())
    for layer in layers[1:]:
        if set(layer.keys()) != set(keys):
            raise InvalidArgumentError(
                f"every layer must score the same methods, got {sorted(keys)} and {sorted(layer.keys())}"
            )
    fused: dict[str, np.ndarray] = {}
    for key in keys:
        try:
            stacked = np.stack([np.asarray(layer[key], dtype=np.float32) for layer in layers])
        except ValueError as exc:
            raise InvalidArgumentError(f"layers disagree on the shape of {key!r} scores") from exc
        fused[key] = np.average(stacked, axis=0, weights=w).astype(np.float32)
    return fused


# --------------------------------------------------------------------------------------------- words
def word_scores_from_tokens(token_values: np.ndarray, word_ids: np.ndarray, n_words: int) -> np.ndarray:
    """§3.3: mean token score per word (float32 sums and counts); words without tokens score 0."""
    values = np.asarray(token_values, dtype=np.float32)
    ids = np.asarray(word_ids, dtype=np.int64)
    if values.shape != ids.shape or values.ndim != 1:
        raise InvalidArgumentError(
            f"token_values and word_ids must be 1-D and the same length, got {values.shape} and {ids.shape}"
        )
    if n_words < 0:
        raise InvalidArgumentError(f"n_words must be >= 0, got {n_words}")
    if ids.size and (ids.min() < -1 or ids.max() >= n_words):
        raise InvalidArgumentError(f"word ids must lie in [-1, {n_words}); -1 marks tokens without a word")
    has_word = ids >= 0
    sums = np.zeros(n_words, dtype=np.float32)
    # np.add.at accumulates sequentially in float32, in token order, like 0.3.1's loop.
    np.add.at(sums, ids[has_word], values[has_word])
    counts = np.bincount(ids[has_word], minlength=n_words).astype(np.float32)
    out = np.zeros(n_words, dtype=np.float32)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def idf_hybrid(attn_scores: np.ndarray, tfidf_values: np.ndarray) -> np.ndarray:
    """§3.6 product hybrid: ``minmax(attention) · minmax(tfidf)`` over the same words or tokens."""
    a = np.asarray(attn_scores, dtype=np.float32)
    b = np.asarray(tfidf_values, dtype=np.float32)
    if a.shape != b.shape:
        raise InvalidArgumentError(
            f"attention scores {a.shape} and tfidf values {b.shape} must have the same shape"
        )
    return (minmax(a) * minmax(b)).astype(np.float32)


def _spans(name: str, x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.int64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidArgumentError(f"{name} must be [count, 2] (start, end) character offsets, got shape {arr.shape}")
    return arr


def project_word_values_to_tokens(
    word_spans: np.ndarray, token_offsets: np.ndarray, word_values: np.ndarray
) -> np.ndarray:
    """§3.6 token path: each token takes the value of the word it overlaps most (earlier word on ties, 0 if none)."""
    words = _spans("word_spans", word_spans)
    tokens = _spans("token_offsets", token_offsets)
    values = np.asarray(word_values, dtype=np.float32)
    if values.shape != (words.shape[0],):
        raise InvalidArgumentError(
            f"word_values must have one value per word span ({words.shape[0]}), got {values.shape}"
        )
    out = np.zeros(tokens.shape[0], dtype=np.float32)
    if words.shape[0] == 0 or tokens.shape[0] == 0:
        return out
    for t0, t1 in _row_blocks(tokens.shape[0], words.shape[0]):
        tok = tokens[t0:t1]
        overlap = np.minimum(tok[:, 1:2], words[None, :, 1]) - np.maximum(tok[:, 0:1], words[None, :, 0])
        best = overlap.argmax(axis=1)  # argmax returns the first maximum: the earlier word wins ties
        has_overlap = overlap[np.arange(tok.shape[0]), best] > 0
        out[t0:t1] = np.where(has_overlap, values[best], np.float32(0.0))
    return out


def span_mean_scores(token_offsets: np.ndarray, token_scores: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """§4.7 step 4: mean score of tokens with ``tok_end > span_start and tok_start < span_end`` (0.0 if none)."""
    tokens = _spans("token_offsets", token_offsets)
    scores = np.asarray(token_scores, dtype=np.float32)
    targets = _spans("spans", spans)
    if scores.shape != (tokens.shape[0],):
        raise InvalidArgumentError(
            f"token_scores must have one score per token ({tokens.shape[0]}), got {scores.shape}"
        )
    out = np.zeros(targets.shape[0], dtype=np.float32)
    if targets.shape[0] == 0 or tokens.shape[0] == 0:
        return out
    scores64 = scores.astype(np.float64)
    for s0, s1 in _row_blocks(targets.shape[0], tokens.shape[0]):
        span = targets[s0:s1]
        hits = (tokens[None, :, 1] > span[:, 0:1]) & (tokens[None, :, 0] < span[:, 1:2])
        counts = hits.sum(axis=1)
        sums = hits.astype(np.float64) @ scores64
        out[s0:s1] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return out
