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

from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from keyatten_lite.errors import BundleError, InvalidArgumentError
from keyatten_lite.model.windows import EMISSIONS_OUTPUT, Window, overflow_windows, run_windows, window_tokenizer
from keyatten_lite.scoring.bio_decode import (
    CLEAN_MAX_RECALL_PHRASES,
    TAGS,
    acceptable_span,
    merge_max,
    bio_tags_to_spans,
    clean_scored_spans,
    clean_span_text,
    mine_recall_oriented_phrases,
    owned_span_range,
    profile_parameters,
    relaxed_window_scores,
    span_confidence,
    span_text,
    viterbi_decode,
)

BIO_KIND = "bio-tagger"


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
    windows: list[Window]
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

    def _windows(self, texts: Sequence[str], stride: int) -> list[Window]:
        return overflow_windows(self._tokenizer_for(stride), texts)

    def _run_windows(self, windows: Sequence[Window], names: Sequence[str], on_output=None) -> list:
        return run_windows(self.bundle, windows, names, self.batch_size, on_output)

    # -- Viterbi spans --------------------------------------------------------------------------

    def _window_spans(self, text: str, window: Window, emissions: np.ndarray) -> list[tuple[int, str, float]]:
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
        reduce: Callable[[str, Window, np.ndarray], Any] | None = None,
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
            merge_max(merged, piece, score)
        mined = mine_recall_oriented_phrases(text, self.language, max_phrases=CLEAN_MAX_RECALL_PHRASES)
        for rank, phrase in enumerate(mined):
            piece = clean_span_text(phrase)
            if acceptable_span(piece) and piece in text:
                merge_max(merged, piece, 0.95 - rank * 1e-4)
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
