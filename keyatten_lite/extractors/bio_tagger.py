"""BIO boundary tagging on ONNX (keyatten 0.3.1 §7), decoded with numpy.

A BIO bundle (``bundle.json`` ``"kind": "bio-tagger"``) is an ordinary attention bundle whose graph has
a second output, ``emissions`` float32 ``[batch, seq, 3]`` (tags B=0, I=1, O=2), and whose manifest
holds the CRF scores under ``"bio"``: ``start[3]``, ``end[3]``, ``transitions[3][3]`` (from -> to).
One forward pass gives both the emissions and the attention maps.

Decoding follows §7.3-§7.6, with one deliberate difference: ``extract_spans`` covers long texts with
overlapping token windows (0.3.1 truncates at max_length and loses the tail). Each window owns the
middle of its overlap with its neighbours, and keeps only the spans that start in the part it owns,
so a span cut by a window edge is taken from the window that sees it whole. A text that fits one
window decodes exactly as in 0.3.1.

numpy only; onnxruntime, tokenizers and jieba load lazily (through the bundle and the segmenter).
"""

from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from keyatten_lite.errors import BundleError, InvalidArgumentError

__all__ = [
    "TAGS",
    "TAG_B",
    "TAG_I",
    "TAG_O",
    "BIO_KIND",
    "PROFILES",
    "viterbi_decode",
    "bio_tags_to_spans",
    "span_text",
    "spans_to_text",
    "dedup_lower",
    "softmax",
    "relaxed_token_spans",
    "span_variants",
    "relaxed_window_scores",
    "profile_parameters",
    "clean_span_text",
    "clean_scored_spans",
    "mine_recall_oriented_phrases",
    "owned_span_range",
    "BIORun",
    "BIODocument",
    "BIOExtractor",
    "span_confidence",
    "window_tokenizer",
    "overflow_windows",
    "run_windows",
]

TAGS = ("B", "I", "O")
TAG_B, TAG_I, TAG_O = 0, 1, 2
BIO_KIND = "bio-tagger"
EMISSIONS_OUTPUT = "emissions"

# ---------------------------------------------------------------------------------------------
# Viterbi and spans (§7.1, §7.3)


def viterbi_decode(emissions, start, end, transitions) -> list[int]:
    """Best tag path of one sequence: ``emissions`` [T, K], ``start``/``end`` [K], ``transitions`` [K, K].

    Same arithmetic order as a torch CRF (``score_i + T[i, j] + e_t[j]``, then the max over ``i``),
    and ties go to the first index, as torch ``max`` does.
    """
    emissions = np.asarray(emissions)
    dtype = np.result_type(emissions.dtype, np.float32)
    emissions = emissions.astype(dtype, copy=False)
    start = np.asarray(start, dtype=dtype)
    end = np.asarray(end, dtype=dtype)
    transitions = np.asarray(transitions, dtype=dtype)
    if emissions.ndim != 2 or emissions.shape[0] < 1:
        raise InvalidArgumentError(f"emissions must be a non-empty [T, K] array, got shape {emissions.shape}")
    n_tags = emissions.shape[1]
    if start.shape != (n_tags,) or end.shape != (n_tags,) or transitions.shape != (n_tags, n_tags):
        raise InvalidArgumentError(
            f"CRF scores do not match {n_tags} tags: start {start.shape}, end {end.shape}, "
            f"transitions {transitions.shape}"
        )
    score = start + emissions[0]
    history = np.empty((emissions.shape[0] - 1, n_tags), dtype=np.int64)
    for t in range(1, emissions.shape[0]):
        candidates = score[:, None] + transitions + emissions[t][None, :]
        history[t - 1] = np.argmax(candidates, axis=0)  # argmax: first index on ties
        score = candidates[history[t - 1], np.arange(n_tags)]
    score = score + end
    best = int(np.argmax(score))
    path = [best]
    for back in history[::-1]:
        best = int(back[best])
        path.append(best)
    path.reverse()
    return path


def bio_tags_to_spans(tags: Sequence[int]) -> list[tuple[int, int]]:
    """Token spans ``[start, end)``: B opens (closing any open span), I continues or opens, O closes."""
    spans: list[tuple[int, int]] = []
    open_start: int | None = None
    for index, tag in enumerate(tags):
        tag = int(tag)
        if tag == TAG_B:
            if open_start is not None:
                spans.append((open_start, index))
            open_start = index
        elif tag == TAG_I:
            if open_start is None:
                open_start = index
        else:
            if open_start is not None:
                spans.append((open_start, index))
            open_start = None
    if open_start is not None:
        spans.append((open_start, len(tags)))
    return spans


def span_text(text: str, offsets: Sequence[tuple[int, int]], start: int, end: int) -> str | None:
    """``text[off[start].start : off[end-1].end].strip()``, or None when §7.3 skips the span.

    Skipped: a start past the last token, an end offset not after the start offset (a span ending on
    [SEP], whose offsets are (0, 0)), and a text that is empty after stripping. A span starting on
    [CLS] starts at character 0 (its offsets are (0, 0)).
    """
    if start >= len(offsets) or end <= start:
        return None
    char_start = int(offsets[start][0])
    char_end = int(offsets[min(end, len(offsets)) - 1][1])
    if char_end <= char_start:
        return None
    piece = text[char_start:char_end].strip()
    return piece or None


def spans_to_text(
    text: str, offsets: Sequence[tuple[int, int]], spans: Iterable[tuple[int, int]]
) -> list[str]:
    """The texts of ``spans`` in order (skipped spans left out, duplicates kept)."""
    texts = []
    for start, end in spans:
        piece = span_text(text, offsets, start, end)
        if piece is not None:
            texts.append(piece)
    return texts


def dedup_lower(texts: Iterable[str]) -> list[str]:
    """First occurrence of each text, compared in lower case."""
    seen: set[str] = set()
    kept = []
    for piece in texts:
        key = piece.lower()
        if key not in seen:
            seen.add(key)
            kept.append(piece)
    return kept


# ---------------------------------------------------------------------------------------------
# Relaxed decoding (§7.4)


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def relaxed_token_spans(
    probs: np.ndarray, threshold: float, viterbi_spans: Iterable[tuple[int, int]] = ()
) -> list[tuple[int, int, float]]:
    """Threshold spans ``(start, end, conf)`` from per-token tag probabilities ``probs`` [T, 3].

    Scan i: if P_B(i) > threshold, extend over j > i while P_I(j) > P_O(j); conf is the mean of P_B(i)
    and the extension's P_I, plus 1.0 when the span equals a Viterbi span; resume after the span.
    """
    probs = np.asarray(probs, dtype=np.float64)
    exact = set((int(a), int(b)) for a, b in viterbi_spans)
    spans = []
    i, n = 0, probs.shape[0]
    while i < n:
        if probs[i, TAG_B] > threshold:
            j = i + 1
            while j < n and probs[j, TAG_I] > probs[j, TAG_O]:
                j += 1
            conf = float(np.mean(np.concatenate(([probs[i, TAG_B]], probs[i + 1 : j, TAG_I]))))
            if (i, j) in exact:
                conf += 1.0
            spans.append((i, j, conf))
            i = j
        else:
            i += 1
    return spans


def span_variants(
    start: int, end: int, n_tokens: int, max_expand_steps: int = 1, max_subspan_width: int = 0
) -> list[tuple[float, int, int]]:
    """``(penalty, start, end)`` variants of a span, kept inside ``[0, n_tokens)``.

    The span itself (0); extended left or right by e <= max_expand_steps tokens (0.08 e); on both
    sides (0.12 e); with ``max_subspan_width > 0``, each proper sub-span of at most that width (0.04
    per trimmed token). Duplicates keep the lowest penalty; ordered by (penalty, start, end).
    """
    best: dict[tuple[int, int], float] = {}

    def offer(a: int, b: int, penalty: float) -> None:
        if 0 <= a < b <= n_tokens and penalty < best.get((a, b), float("inf")):
            best[(a, b)] = penalty

    offer(start, end, 0.0)
    for e in range(1, max_expand_steps + 1):
        offer(start - e, end, 0.08 * e)
        offer(start, end + e, 0.08 * e)
        offer(start - e, end + e, 0.12 * e)
    if max_subspan_width > 0:
        for a in range(start, end):
            for b in range(a + 1, min(end, a + max_subspan_width) + 1):
                if (a, b) != (start, end):
                    offer(a, b, 0.04 * ((a - start) + (end - b)))
    return sorted(((penalty, a, b) for (a, b), penalty in best.items()))


def _merge_max(merged: dict[str, tuple[str, float]], piece: str, score: float) -> None:
    """Keep the highest score per lower-case key (the first text wins ties)."""
    key = piece.lower()
    if key not in merged or score > merged[key][1]:
        merged[key] = (piece, score)


def relaxed_window_scores(
    text: str,
    offsets: Sequence[tuple[int, int]],
    emissions: np.ndarray,
    crf: tuple[np.ndarray, np.ndarray, np.ndarray],
    thresholds: Sequence[float],
    *,
    stride_index: int = 0,
    max_spans: int = 20,
    max_expand_steps: int = 1,
    max_subspan_width: int = 0,
    merged: dict[str, tuple[str, float]] | None = None,
) -> dict[str, tuple[str, float]]:
    """§7.4 for one window (valid tokens only): merge its scored texts into ``merged`` (lower -> (text, score))."""
    merged = {} if merged is None else merged
    emissions = np.asarray(emissions)
    n_tokens = emissions.shape[0]
    viterbi_spans = bio_tags_to_spans(viterbi_decode(emissions, *crf))
    for piece in spans_to_text(text, offsets, viterbi_spans):
        _merge_max(merged, piece, 2.0 - stride_index * 1e-4)
    probs = softmax(emissions)
    for k, threshold in enumerate(thresholds):
        spans = relaxed_token_spans(probs, threshold, viterbi_spans)
        spans.sort(key=lambda s: -s[2])  # stable: equal confidences keep scan order
        seen: set[str] = set()
        for start, end, conf in spans:
            if len(seen) >= max_spans:
                break
            for penalty, a, b in span_variants(start, end, n_tokens, max_expand_steps, max_subspan_width):
                if len(seen) >= max_spans:
                    break
                piece = span_text(text, offsets, a, b)
                if piece is None or piece.lower() in seen:
                    continue
                seen.add(piece.lower())
                _merge_max(merged, piece, conf - penalty - k * 1e-3 - stride_index * 1e-4)
    return merged


# ---------------------------------------------------------------------------------------------
# Profiles and cleaning (§7.5, §7.6)

PROFILES: dict[str, dict] = {
    "clean": {
        "max_spans": 80,
        "window_strides": (64, 128),
        "threshold_schedule": (0.15, 0.10, 0.05),
        "max_expand_steps": 1,
        "max_subspan_width": 0,
        "clean": True,
    },
    "balanced": {
        "max_spans": 120,
        "window_strides": (64, 128),
        "threshold_schedule": (0.15, 0.10, 0.05),
        "max_expand_steps": 1,
        "max_subspan_width": 2,
        "clean": False,
    },
    "high_recall": {
        "max_spans": 200,
        "window_strides": (64, 128, 192),
        "threshold_schedule": (0.15, 0.10, 0.05, 0.0),
        "max_expand_steps": 1,
        "max_subspan_width": 6,
        "clean": False,
    },
}
CLEAN_MAX_RECALL_PHRASES = 80


def profile_parameters(profile: str) -> dict:
    """Parameters of a profile (name stripped, lower-cased); any unknown name means ``balanced``."""
    if not isinstance(profile, str):
        raise InvalidArgumentError(f"profile must be a str ('clean', 'balanced', 'high_recall'), got {profile!r}")
    return dict(PROFILES.get(profile.strip().lower(), PROFILES["balanced"]))


_EDGE_CHARS = "，。！？；：、（）()《》“”\"'‘’[]【】<>\n\r\t "
_FUNCTION_CHARS = frozenset("的了和与及并而或是在对把将被让给向从由于中上下里外")
_LEADING_VERB_CHARS = frozenset("聊说讲谈论看听做搞用把将让给到向为从就来去要想能会该可被使令谓")
_TRAILING_FRAGMENT_CHARS = frozenset("题分逐出下这的了着")


def _strip_function_chars(piece: str) -> str:
    piece = piece.strip(_EDGE_CHARS)
    while len(piece) > 1:
        if piece[0] in _FUNCTION_CHARS:
            piece = piece[1:].strip(_EDGE_CHARS)
        elif piece[-1] in _FUNCTION_CHARS:
            piece = piece[:-1].strip(_EDGE_CHARS)
        else:
            break
    return piece


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"


def clean_span_text(piece: str) -> str:
    """§7.5 ``clean``: edge punctuation, function characters, leading verbs and trailing fragments."""
    piece = _strip_function_chars(piece)
    while len(piece) > 2 and (piece[0] in _LEADING_VERB_CHARS or piece[-1] in _TRAILING_FRAGMENT_CHARS):
        piece = piece[1:] if piece[0] in _LEADING_VERB_CHARS else piece[:-1]
    return _strip_function_chars(piece)


def _acceptable(piece: str) -> bool:
    if not piece:
        return False
    if len(piece) == 1:
        return piece.isascii() and piece.isalnum() and not _is_cjk(piece)
    return True


def clean_scored_spans(items: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Clean each text, drop rejected ones, de-duplicate on the exact text (max score), sort descending."""
    best: dict[str, float] = {}
    for piece, score in items:
        cleaned = clean_span_text(piece)
        if _acceptable(cleaned) and score > best.get(cleaned, float("-inf")):
            best[cleaned] = score
    return sorted(best.items(), key=lambda item: -item[1])


_CORE_PREFIXES = ("n", "eng", "vn")
_ALLOWED_PREFIXES = ("n", "eng", "a", "b", "v", "vn", "j", "l", "i")
_MODIFIER_PREFIXES = _CORE_PREFIXES + ("a", "b", "v")


def mine_recall_oriented_phrases(
    text: str, language: str = "zh", max_phrases: int = 50, max_ngram: int = 6, segmenter=None
) -> list[str]:
    """§7.6: noun-headed jieba word n-grams (2-16 characters), de-duplicated on the normalised key.

    Chinese only (other languages give ``[]``). ``segmenter`` defaults to the shared plain
    :class:`keyatten_lite.text.segment.ChineseSegmenter` (no user dictionary).
    """
    if language != "zh" or not isinstance(text, str) or not text.strip():
        return []
    from keyatten_lite.text.normalize import normalize_phrase
    from keyatten_lite.text.segment import segment_text

    words, tags = segment_text(text, "zh", segmenter)
    phrases: list[str] = []
    seen: set[str] = set()
    for i in range(len(words)):
        for j in range(i, min(len(words), i + max_ngram)):
            span_tags = tags[i : j + 1]
            if not span_tags[-1].startswith(_CORE_PREFIXES):
                continue
            if not all(tag.startswith(_ALLOWED_PREFIXES) for tag in span_tags):
                break
            if not all(tag.startswith(_MODIFIER_PREFIXES) for tag in span_tags[:-1]):
                break
            phrase = "".join(words[i : j + 1])
            if not 2 <= len(phrase) <= 16:
                continue
            key = normalize_phrase(phrase)
            if key in seen:
                continue
            seen.add(key)
            phrases.append(phrase)
            if len(phrases) >= max_phrases:
                return phrases
    return phrases


# ---------------------------------------------------------------------------------------------
# Windows


def owned_span_range(window_index: int, n_windows: int, n_content: int, stride: int) -> tuple[int, int]:
    """Content positions ``[lo, hi)`` a window owns (its spans must start there).

    Consecutive overflow windows share ``stride`` content tokens; the first half of the shared part
    belongs to the earlier window, the second half to the later one, so ownership partitions the
    text. Position -1 is [CLS], owned by the first window only.
    """
    lo = stride // 2 if window_index > 0 else -1
    hi = n_content - (stride - stride // 2) if window_index < n_windows - 1 else n_content + 1
    return lo, hi


@dataclass
class _Window:
    text_index: int
    window_index: int
    n_windows: int
    ids: list[int]
    offsets: list[tuple[int, int]]
    leading_specials: int  # special tokens before the first content token ([CLS]: 1)
    n_content: int


@dataclass
class BIORun:
    """One document through the BIO bundle (see :meth:`BIOExtractor.run`).

    ``spans``: Viterbi spans over all windows (as ``extract_spans``). ``attentions``: float32
    ``[n_exported_layers, n, n]`` head-mean attention of the first window, cropped to its ``n`` valid
    tokens ([CLS] ... [SEP], truncated at max_length like the attention bundles' token path).
    ``input_ids`` and ``token_offsets`` (character ``(start, end)``, (0, 0) for specials) describe
    those ``n`` tokens; ``emissions`` [n, 3] too.
    """

    spans: list[str]
    attentions: np.ndarray
    input_ids: np.ndarray
    token_offsets: list[tuple[int, int]]
    emissions: np.ndarray
    n_windows: int


def _check_positive_int(value, label: str, minimum: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise InvalidArgumentError(f"{label} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_number(value, label: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(float(value)):
        raise InvalidArgumentError(f"{label} must be a finite number, got {value!r}")
    return float(value)


def window_tokenizer(bundle, max_length: int, stride: int):
    """A private copy of ``bundle``'s tokenizer: truncation at ``max_length`` with overflow windows
    sharing ``stride`` tokens, no padding (the bundle's own tokenizer object is never changed)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(bundle.tokenizer().to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(max_length), stride=int(stride))
    return tokenizer


def overflow_windows(tokenizer, texts: Sequence[str]) -> list[_Window]:
    """Every overflow window of every text (``tokenizer`` from :func:`window_tokenizer`), in text order."""
    encodings = tokenizer.encode_batch(list(texts))
    windows = []
    for text_index, encoding in enumerate(encodings):
        parts = [encoding] + list(encoding.overflowing)
        for window_index, part in enumerate(parts):
            special = list(part.special_tokens_mask)
            leading = next((i for i, flag in enumerate(special) if not flag), len(special))
            windows.append(
                _Window(
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
    windows: Sequence[_Window],
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


def span_confidence(emissions: np.ndarray, start: int, end: int) -> float:
    """Tagger confidence of the token span ``[start, end)``: the mean of P(B) at its first token and
    P(I) at the others, from the softmax of the emissions (the confidence §7.4 gives threshold spans)."""
    probs = softmax(np.asarray(emissions)[start:end])
    return float(np.concatenate(([probs[0, TAG_B]], probs[1:, TAG_I])).mean())


@dataclass
class BIODocument:
    """One document through a BIO bundle (see :meth:`BIOExtractor.analyse_batch`).

    ``spans``: ``(text, confidence)`` of the Viterbi spans over all windows, de-duplicated in lower case
    in first-occurrence order (the texts are ``extract_spans``'s), confidence the maximum of
    :func:`span_confidence` over the decoded occurrences. ``windows``: the overflow windows;
    ``attentions``: per window, its head-mean attention ``[n_layers, n, n]``, or what ``reduce`` made
    of it (None when the attention was not asked for).
    """

    spans: list[tuple[str, float]]
    windows: list[_Window]
    attentions: list[Any]


class BIOExtractor:
    """Keyword spans from a BIO bundle (keyatten 0.3.1 ``BIOExtractor``, torch-free).

    ``model``: a bundle directory or an installed bundle name (``"bio-e5-small-zh"``,
    ``"bio-minilm-en"``). ``window_stride``: token overlap of the windows ``extract_spans`` uses on
    texts longer than the bundle's max_length (default 128, or half a window for small models).
    ``batch_size``: windows per onnxruntime call. ``max_length`` lowers the bundle's window length.
    """

    def __init__(
        self,
        model: str | os.PathLike = "bio-e5-small-zh",
        *,
        intra_op_threads: int | None = None,
        variant: str = "fp32",
        window_stride: int | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        providers: Sequence[str] | None = None,
    ):
        from keyatten_lite.model.bundle import open_bundle

        self.bundle = open_bundle(
            model, variant=variant, intra_op_threads=intra_op_threads, providers=list(providers) if providers else None
        )
        manifest = self.bundle.manifest
        where = f"bundle {self.bundle.name!r} ({self.bundle.path})"
        if manifest.get("kind") != BIO_KIND or EMISSIONS_OUTPUT not in self.bundle.output_names:
            raise BundleError(
                f"{where} is not a BIO bundle (kind {manifest.get('kind')!r}, outputs "
                f"{self.bundle.output_names}); build one with `python -m keyatten_lite_export.bio build`"
            )
        self.crf = _read_crf(manifest.get("bio"), where)
        self.language: str = str(manifest.get("language") or "zh")
        self.max_length = self.bundle.max_length
        if max_length is not None:
            self.max_length = min(self.max_length, _check_positive_int(max_length, "max_length", 4))
        if window_stride is None:
            window_stride = min(128, (self.max_length - 2) // 2)
        self.window_stride = self._check_stride(window_stride)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self._window_tokenizers: dict[int, object] = {}
        self._lock = threading.Lock()

    # -- tokenisation ---------------------------------------------------------------------------

    def _check_stride(self, stride, clamp: bool = False) -> int:
        stride = _check_positive_int(stride, "window stride", 0)
        # tokenizers needs the stride below the content length of a window (max_length minus specials).
        if clamp:
            return min(stride, self.max_length - 3)
        if stride >= self.max_length - 2:
            raise InvalidArgumentError(
                f"window stride {stride} must be smaller than max_length - 2 = {self.max_length - 2}"
            )
        return stride

    def _tokenizer_for(self, stride: int):
        """A private copy of the bundle tokenizer that truncates with overflow windows of ``stride``."""
        with self._lock:
            tokenizer = self._window_tokenizers.get(stride)
            if tokenizer is None:
                tokenizer = window_tokenizer(self.bundle, self.max_length, stride)
                self._window_tokenizers[stride] = tokenizer
            return tokenizer

    def _windows(self, texts: Sequence[str], stride: int) -> list[_Window]:
        return overflow_windows(self._tokenizer_for(stride), texts)

    def _run_windows(self, windows: Sequence[_Window], names: Sequence[str], on_output=None) -> list:
        return run_windows(self.bundle, windows, names, self.batch_size, on_output)

    # -- Viterbi spans --------------------------------------------------------------------------

    def _window_spans(self, text: str, window: _Window, emissions: np.ndarray) -> list[tuple[int, str, float]]:
        """(character start, text, confidence) of the Viterbi spans this window owns."""
        spans = bio_tags_to_spans(viterbi_decode(emissions, *self.crf))
        lo, hi = owned_span_range(window.window_index, window.n_windows, window.n_content, self.window_stride)
        found = []
        for start, end in spans:
            # Content position: [CLS] (and any other leading special) sits before position 0.
            if not lo <= max(start - window.leading_specials, -1) < hi:
                continue
            piece = span_text(text, window.offsets, start, end)
            if piece is not None:
                found.append((int(window.offsets[start][0]), piece, span_confidence(emissions, start, end)))
        return found

    def _scored_spans_from_windows(self, text: str, windows, outputs) -> list[tuple[str, float]]:
        found: list[tuple[int, str, float]] = []
        for window, output in zip(windows, outputs):
            found.extend(self._window_spans(text, window, output[EMISSIONS_OUTPUT]))
        found.sort(key=lambda item: item[0])  # stable: a single window keeps tag order
        merged: dict[str, list] = {}
        for _, piece, confidence in found:
            entry = merged.setdefault(piece.lower(), [piece, confidence])
            entry[1] = max(entry[1], confidence)
        return [(piece, confidence) for piece, confidence in merged.values()]

    def _spans_from_windows(self, text: str, windows, outputs) -> list[str]:
        return [piece for piece, _ in self._scored_spans_from_windows(text, windows, outputs)]

    def extract_spans(self, text: str) -> list[str]:
        """Viterbi spans, de-duplicated case-insensitively in first-occurrence order (§7.3, windowed)."""
        return self.extract_spans_batch([text])[0]

    def extract_spans_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """``extract_spans`` for many texts: all their windows go through the graph in batches."""
        texts = _check_texts(texts)
        live = [i for i, text in enumerate(texts) if text.strip()]
        results: list[list[str]] = [[] for _ in texts]
        if not live:
            return results
        windows = self._windows([texts[i] for i in live], self.window_stride)
        outputs = self._run_windows(windows, [EMISSIONS_OUTPUT])
        for slot, text_index in enumerate(live):
            mine = [(w, o) for w, o in zip(windows, outputs) if w.text_index == slot]
            results[text_index] = self._spans_from_windows(
                texts[text_index], [w for w, _ in mine], [o for _, o in mine]
            )
        return results

    def run(self, text: str) -> BIORun:
        """Spans and the attention of the first window from the same forward passes (for bio mode)."""
        (text,) = _check_texts([text])
        windows = self._windows([text], self.window_stride)
        outputs = self._run_windows(windows, [self.bundle.output_name, EMISSIONS_OUTPUT])
        spans = self._spans_from_windows(text, windows, outputs) if text.strip() else []
        first = windows[0]
        return BIORun(
            spans=spans,
            attentions=outputs[0][self.bundle.output_name],
            input_ids=np.asarray(first.ids, dtype=np.int64),
            token_offsets=[(int(a), int(b)) for a, b in first.offsets],
            emissions=outputs[0][EMISSIONS_OUTPUT],
            n_windows=len(windows),
        )

    def analyse_batch(
        self,
        texts: Sequence[str],
        *,
        with_attention: bool = True,
        reduce: Callable[[str, _Window, np.ndarray], Any] | None = None,
        batch_size: int | None = None,
    ) -> list[BIODocument]:
        """Scored Viterbi spans and (``with_attention``) every window's attention from the same forward
        passes, for the bio candidate mode of :class:`keyatten_lite.KeyAttenExtractor`. ``reduce(text,
        window, attention)`` replaces each window's attention by what it returns, as soon as its batch
        is done (memory stays bounded on long texts). The windows of all texts are sorted by length into
        batches of ``batch_size`` (default: the extractor's). Blank texts give an empty document."""
        texts = _check_texts(texts)
        results = [BIODocument([], [], []) for _ in texts]
        live = [i for i, text in enumerate(texts) if text.strip()]
        if not live:
            return results
        names = [EMISSIONS_OUTPUT] + ([self.bundle.output_name] if with_attention else [])
        windows = self._windows([texts[i] for i in live], self.window_stride)

        def keep(index: int, cropped: dict[str, np.ndarray]) -> dict[str, Any]:
            kept: dict[str, Any] = {EMISSIONS_OUTPUT: np.array(cropped[EMISSIONS_OUTPUT])}
            attention = cropped.get(self.bundle.output_name)
            if attention is not None:
                window = windows[index]
                kept[self.bundle.output_name] = (
                    reduce(texts[live[window.text_index]], window, attention) if reduce is not None else np.array(attention)
                )
            return kept

        outputs = run_windows(self.bundle, windows, names, batch_size or self.batch_size, keep)
        for slot, text_index in enumerate(live):
            mine = [(w, o) for w, o in zip(windows, outputs) if w.text_index == slot]
            own_windows = [w for w, _ in mine]
            own_outputs = [o for _, o in mine]
            results[text_index] = BIODocument(
                spans=self._scored_spans_from_windows(texts[text_index], own_windows, own_outputs),
                windows=own_windows,
                attentions=[o.get(self.bundle.output_name) for o in own_outputs],
            )
        return results

    # -- relaxed decoding and profiles ----------------------------------------------------------

    def extract_spans_relaxed(
        self,
        text: str,
        max_spans: int = 20,
        b_threshold: float = 0.15,
        window_stride: int = 128,
        window_strides: Sequence[int] | None = None,
        threshold_schedule: Sequence[float] | None = None,
        max_expand_steps: int = 1,
        max_subspan_width: int = 0,
    ) -> list[tuple[str, float]]:
        """§7.4: ``(text, confidence)`` pairs, best first, at most ``max_spans``.

        A stride must leave room in a window (tokenizers refuses an overlap as long as the window's
        content): strides of max_length - 2 or more are lowered to max_length - 3 (no effect on the
        512-token default bundles, where the profiles' strides go up to 192).
        """
        (text,) = _check_texts([text])
        max_spans = _check_positive_int(max_spans, "max_spans")
        max_expand_steps = _check_positive_int(max_expand_steps, "max_expand_steps", 0)
        max_subspan_width = _check_positive_int(max_subspan_width, "max_subspan_width", 0)
        if threshold_schedule is not None:
            thresholds = [max(0.0, _check_number(t, "threshold")) for t in threshold_schedule]
        else:
            b = _check_number(b_threshold, "b_threshold")
            thresholds = [max(0.0, t) for t in (b, b / 2, 0.0)]
        if window_strides is not None:
            strides = list(dict.fromkeys(self._check_stride(s, clamp=True) for s in window_strides))
        else:
            strides = [self._check_stride(window_stride, clamp=True)]
        if not text.strip() or not thresholds or not strides:
            return []
        merged: dict[str, tuple[str, float]] = {}
        for stride_index, stride in enumerate(strides):
            windows = self._windows([text], stride)
            outputs = self._run_windows(windows, [EMISSIONS_OUTPUT])
            for window, output in zip(windows, outputs):
                relaxed_window_scores(
                    text,
                    window.offsets,
                    output[EMISSIONS_OUTPUT],
                    self.crf,
                    thresholds,
                    stride_index=stride_index,
                    max_spans=max_spans,
                    max_expand_steps=max_expand_steps,
                    max_subspan_width=max_subspan_width,
                    merged=merged,
                )
        ranked = sorted(merged.values(), key=lambda item: -item[1])
        return ranked[:max_spans]

    def extract_spans_profile(self, text: str, *, profile: str = "balanced") -> list[tuple[str, float]]:
        """§7.5 profiles ``clean``, ``balanced`` (default, and any unknown name), ``high_recall``."""
        params = profile_parameters(profile)
        spans = self.extract_spans_relaxed(
            text,
            max_spans=params["max_spans"],
            window_strides=params["window_strides"],
            threshold_schedule=params["threshold_schedule"],
            max_expand_steps=params["max_expand_steps"],
            max_subspan_width=params["max_subspan_width"],
        )
        if not params["clean"]:
            return spans
        cleaned = clean_scored_spans(spans)
        merged: dict[str, tuple[str, float]] = {}
        for piece, score in cleaned:
            _merge_max(merged, piece, score)
        mined = mine_recall_oriented_phrases(text, self.language, max_phrases=CLEAN_MAX_RECALL_PHRASES)
        for rank, phrase in enumerate(mined):
            piece = clean_span_text(phrase)
            if _acceptable(piece) and piece in text:
                _merge_max(merged, piece, 0.95 - rank * 1e-4)
        ranked = sorted(merged.values(), key=lambda item: -item[1])
        return ranked[: params["max_spans"]]


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidArgumentError("texts must be a list of str")
    for text in texts:
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
    return list(texts)


def _read_crf(bio: object, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start [3], end [3], transitions [3, 3]) float32 from the manifest's ``bio`` object."""
    try:
        if not isinstance(bio, dict) or list(bio.get("tags", [])) != list(TAGS):
            raise ValueError(f"tags must be {list(TAGS)}")
        start = np.asarray(bio["start"], dtype=np.float32)
        end = np.asarray(bio["end"], dtype=np.float32)
        transitions = np.asarray(bio["transitions"], dtype=np.float32)
        if start.shape != (3,) or end.shape != (3,) or transitions.shape != (3, 3):
            raise ValueError("start and end need 3 values, transitions 3x3")
        if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end)) and np.all(np.isfinite(transitions))):
            raise ValueError("scores must be finite")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: bundle.json has a malformed 'bio' entry ({exc}); rebuild the bundle") from None
    return start, end, transitions
