"""The ``default`` profile: keyatten's attention methods with the fixes that measurably help.

Differences from the 0.3.1-compatible path (each chosen on dev data, see docs/results/quality.md):

* English candidates come from words located in the raw text (character offsets); a candidate never
  crosses punctuation or a stop word. Chinese candidates are jieba's, as in 0.3.1.
* The model reads the raw text (one tokenisation with offsets, no pre-split words: no extra ``▁``
  pieces for SentencePiece models), and words are aligned to tokens by character overlap.
* Long documents are read whole, in overlapping windows of at most ``max_length`` tokens; each token's
  score is the mean over the windows that contain it. Memory per forward pass stays bounded.
* Token scores are averaged over the read layers chosen per bundle (one pass returns every layer).
* A candidate is scored on all its occurrences, with IDF (a default for unseen words instead of 0),
  its first position, its frequency and its length, combined log-linearly; nested candidates can be
  suppressed.

Everything but :class:`DefaultProfileExtractor` is a pure function over numpy arrays and lists.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from keyatten_lite.scoring import attention as scoring
from keyatten_lite.model.align import MAX_BATCH_CELLS, length_sorted_batches
from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.normalize import joinable_word_key, normalize_phrase
from keyatten_lite.text.stopwords import ENGLISH_STOP_WORDS

__all__ = [
    "CandidateSet",
    "DefaultProfileConfig",
    "DefaultProfileExtractor",
    "TokenScores",
    "build_candidate_set",
    "chinese_words",
    "config_for",
    "english_words",
    "idf_values",
    "layer_table",
    "rank_candidate_set",
    "score_candidates",
    "token_scores_for_texts",
    "window_starts",
    "word_scores_from_token_offsets",
]

LAYERS_FILE = Path(__file__).with_name("default_profile_layers.json")


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DefaultProfileConfig:
    """Every tuned constant of the default profile (values per bundle in ``BUNDLE_CONFIGS``).

    The candidate score is ``A · I^idf_power · (1 + first_word / position_scale)^-position_power ·
    n_words^length_power``
    where ``A = mean occurrence attention · occurrences^frequency_power`` and ``I`` the mean IDF of the
    candidate's words (1 without IDF).
    """

    layers: tuple[int, ...] | None = None  # absolute layers to average; None: default_profile_layers.json
    token_to_word: str = "mean"  # how a word's overlapping token scores combine: mean | max | sum
    max_ngram: int = 4
    punctuation_boundaries: bool = True  # English: candidates never cross punctuation
    frequency_power: float = 1.0
    idf_power: float = 1.0
    position_power: float = 0.0
    # Words of text per unit of position. With a scale of a few hundred words the prior barely moves a
    # 150-word abstract and ranks a full paper's title/abstract/introduction terms above its body's.
    position_scale: float = 1.0
    length_power: float = 0.0
    nested: str = "none"  # none | substring (drop keys inside/around a taken key) | contained
    unseen_idf: str = "df0"  # df0: ln(N+1)+1 (an IdfState knows N) | max: the largest seen IDF | zero: as 0.3.1
    end_filter: str = "none"  # en: none | ly-ed (no candidate ending in -ly/-ed words); zh: none | no-v
    window: int | None = None  # tokens per pass incl. specials; None: the bundle's max_length
    stride_fraction: float = 0.75  # step between windows as a fraction of the window's content tokens
    windows_per_batch: int = 16  # at most; batches are also bounded by align.MAX_BATCH_CELLS

    def __post_init__(self) -> None:
        if self.token_to_word not in ("mean", "max", "sum"):
            raise InvalidArgumentError(f"token_to_word must be mean, max or sum, got {self.token_to_word!r}")
        if self.nested not in ("none", "substring", "contained"):
            raise InvalidArgumentError(f"nested must be none, substring or contained, got {self.nested!r}")
        if self.unseen_idf not in ("df0", "max", "zero"):
            raise InvalidArgumentError(f"unseen_idf must be df0, max or zero, got {self.unseen_idf!r}")
        if self.end_filter not in ("none", "ly-ed", "no-v"):
            raise InvalidArgumentError(f"end_filter must be none, ly-ed or no-v, got {self.end_filter!r}")
        if self.max_ngram < 1:
            raise InvalidArgumentError(f"max_ngram must be >= 1, got {self.max_ngram}")
        if not 0.0 < self.stride_fraction <= 1.0:
            raise InvalidArgumentError(f"stride_fraction must lie in (0, 1], got {self.stride_fraction}")
        if self.window is not None and self.window < 8:
            raise InvalidArgumentError(f"window must be >= 8 tokens, got {self.window}")
        if not self.position_scale > 0:
            raise InvalidArgumentError(f"position_scale must be > 0, got {self.position_scale}")
        if self.windows_per_batch < 1:
            raise InvalidArgumentError("windows_per_batch must be >= 1")


# Chosen on the dev sets (docs/results/quality.md). Layers live in default_profile_layers.json.
BUNDLE_CONFIGS: dict[str, DefaultProfileConfig] = {
    "minilm-l6-en": DefaultProfileConfig(
        token_to_word="max", frequency_power=0.5, idf_power=1.0, length_power=1.0,
        position_power=0.5, position_scale=400.0, nested="contained", end_filter="ly-ed",
    ),
    "e5-small-multi": DefaultProfileConfig(
        token_to_word="mean", frequency_power=1.0, idf_power=1.0, length_power=0.0,
        nested="none", end_filter="none",
    ),
}
LANGUAGE_FALLBACK: dict[str, str] = {"en": "minilm-l6-en", "zh": "e5-small-multi"}


def layer_table(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """``{bundle name: {"layers": [...], "method_layers": {...}}}`` from the layers file (empty if missing)."""
    target = Path(path) if path is not None else LAYERS_FILE
    if not target.is_file():
        return {}
    data = json.loads(target.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def tuned_layers(bundle_name: str, method: str | None = None) -> tuple[int, ...] | None:
    """The read layers tuned for ``bundle_name`` (and base ``method`` when it has its own), or None."""
    entry = layer_table().get(bundle_name)
    if not entry:
        return None
    per_method = entry.get("method_layers") or {}
    layers = per_method.get(method) if method is not None else None
    layers = layers or entry.get("layers")
    return tuple(int(x) for x in layers) if layers else None


def config_for(bundle_name: str, language: str, method: str | None = None) -> DefaultProfileConfig:
    """The tuned config of a bundle (falling back to the default bundle of ``language``), with the
    layers tuned for base ``method`` filled in."""
    name = bundle_name if bundle_name in BUNDLE_CONFIGS else LANGUAGE_FALLBACK.get(language, "minilm-l6-en")
    config = BUNDLE_CONFIGS[name]
    if config.layers is None:
        layers = tuned_layers(bundle_name, method)
        if layers:
            config = replace(config, layers=layers)
    return config


# ---------------------------------------------------------------------------------------------- words
# Words: letter/digit runs, inner hyphens and apostrophes kept ("state-of-the-art", "3D-models").
_EN_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
_EN_LETTER = re.compile("[A-Za-z]")


def english_words(text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words of ``text`` with ``[n, 2]`` character spans and a segment id per word.

    The segment id grows at every gap between two words that holds anything but whitespace
    (punctuation, brackets, symbols): candidates never cross a segment border. Line breaks are
    whitespace (abstracts and PDF text are hard-wrapped mid-phrase).
    """
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    segments: list[int] = []
    segment = 0
    previous_end = 0
    for match in _EN_WORD.finditer(text):
        start, end = match.span()
        if words and text[previous_end:start].strip():
            segment += 1
        words.append(match.group())
        spans.append((start, end))
        segments.append(segment)
        previous_end = end
    return words, np.asarray(spans, dtype=np.int64).reshape(-1, 2), np.asarray(segments, dtype=np.int64)


def english_valid_mask(words: Sequence[str]) -> np.ndarray:
    """Candidate words: more than one character, a letter, not a stop word."""
    return np.fromiter(
        (len(w) > 1 and _EN_LETTER.search(w) is not None and w.lower() not in ENGLISH_STOP_WORDS for w in words),
        dtype=bool,
        count=len(words),
    )


def chinese_words(text: str, segmenter) -> tuple[list[str], list[str], np.ndarray]:
    """jieba words and tags (as the compatible path) with their ``[n, 2]`` spans in ``text``."""
    from keyatten_lite.text.segment import locate_word_offsets

    words, tags = segmenter.segment(text)
    spans = np.asarray(locate_word_offsets(text, words), dtype=np.int64).reshape(-1, 2)
    return words, tags, spans


# ---------------------------------------------------------------------------------------------- candidates
@dataclass
class CandidateSet:
    """Unique candidates of one document and every occurrence of each (word index ranges)."""

    texts: list[str]
    keys: list[str]
    n_words: np.ndarray  # int64 [C]
    first_word: np.ndarray  # int64 [C]: word index of the first occurrence
    occurrence_candidate: np.ndarray  # int64 [O]
    occurrence_start: np.ndarray  # int64 [O] word index
    occurrence_end: np.ndarray  # int64 [O] word index (exclusive)
    joiner: str = " "  # what joins words in a candidate's text: " " in English, "" in Chinese

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.occurrence_candidate, minlength=len(self.texts)).astype(np.int64)


_LY_ED = re.compile(r"(?:ly|ed)$", re.IGNORECASE)


def _allowed_end(word: str, tag: str | None, end_filter: str) -> bool:
    if end_filter == "ly-ed":
        return _LY_ED.search(word) is None
    if end_filter == "no-v":
        return tag is None or tag != "v"
    return True


def _candidate_text(words: Sequence[str], start: int, end: int, joiner: str, language: str) -> str:
    phrase = joiner.join(words[start:end]).strip()
    return phrase.strip("- ") if language == "en" else phrase


def build_candidate_set(
    words: Sequence[str],
    valid: np.ndarray,
    segments: np.ndarray | None,
    language: str,
    *,
    max_ngram: int = 4,
    tags: Sequence[str] | None = None,
    end_filter: str = "none",
) -> CandidateSet:
    """Every run of 1..``max_ngram`` consecutive valid words inside one segment, grouped by key.

    The text of a candidate is its first occurrence (words joined by a space in English, nothing in
    Chinese, as 0.3.1 joins them).
    """
    n = len(words)
    valid_list = np.asarray(valid, dtype=bool).tolist()
    segment_list = [0] * n if segments is None else np.asarray(segments).tolist()
    joiner = "" if language == "zh" else " "
    # Keys of space-joined phrases are their words' keys joined (normalize.joinable_word_key): each
    # distinct word is normalised once, not every n-gram occurrence. None: key the phrase whole.
    memo: dict[str, str | None] = {}
    word_keys: list[str | None] = [None] * n
    if joiner == " ":
        for i, w in enumerate(words):
            if w not in memo:
                memo[w] = joinable_word_key(w)
            word_keys[i] = memo[w]
    ends_ok = [_allowed_end(w, tags[i] if tags is not None else None, end_filter) for i, w in enumerate(words)]
    index: dict[str, int] = {}
    texts: list[str] = []
    keys: list[str] = []
    lengths: list[int] = []
    firsts: list[int] = []
    occ_c: list[int] = []
    occ_s: list[int] = []
    occ_e: list[int] = []
    for start in range(n):
        if not valid_list[start]:
            continue
        joined: str | None = ""  # the word keys of words[start:end] joined, while every one is joinable
        for end in range(start + 1, min(n, start + max_ngram) + 1):
            last = end - 1
            if not valid_list[last] or segment_list[last] != segment_list[start]:
                break
            part = word_keys[last]
            joined = joined + part if joined is not None and part is not None else None
            if not ends_ok[last]:
                continue
            phrase = None
            if joined is not None:
                key = joined
            else:
                phrase = _candidate_text(words, start, end, joiner, language)
                key = normalize_phrase(phrase)
                if not key:
                    continue
            c = index.get(key)
            if c is None:
                c = index[key] = len(texts)
                texts.append(phrase if phrase is not None else _candidate_text(words, start, end, joiner, language))
                keys.append(key)
                lengths.append(end - start)
                firsts.append(start)
            occ_c.append(c)
            occ_s.append(start)
            occ_e.append(end)
    as_int = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return CandidateSet(
        texts, keys, as_int(lengths), as_int(firsts), as_int(occ_c), as_int(occ_s), as_int(occ_e), joiner
    )


# ---------------------------------------------------------------------------------------------- model
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
        if m not in scoring.BASE_METHODS:
            raise InvalidArgumentError(f"unknown base method {m!r}; choose from {', '.join(scoring.BASE_METHODS)}")
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
                per_method = scoring.token_method_scores(A, causal=False, content_mask=content, methods=methods)
                for m in methods:
                    sums[d][m][li, start:stop] += per_method[m][1:-1]
            counts[d][start:stop] += 1.0
        del attentions
    for d, result in enumerate(results):
        c = np.maximum(counts[d], 1.0)
        result.scores = {m: (sums[d][m] / c).astype(np.float32) for m in methods}
    return results


# ---------------------------------------------------------------------------------------------- scoring
def word_scores_from_token_offsets(
    word_spans: np.ndarray,
    token_offsets: np.ndarray,
    token_scores: np.ndarray,
    how: str = "mean",
    alignable: np.ndarray | None = None,
) -> np.ndarray:
    """Each word's score from the tokens whose character span overlaps it (mean, max or sum).

    Tokens are in text order, so the overlapping tokens of a word form a contiguous range found with
    two binary searches. Words without a token (none: every character is tokenised) score 0.
    """
    spans = np.asarray(word_spans, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(token_offsets, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(token_scores, dtype=np.float64).reshape(-1)
    if values.shape[0] != offsets.shape[0]:
        raise InvalidArgumentError(f"{values.shape[0]} token scores for {offsets.shape[0]} token offsets")
    keep = (offsets[:, 1] > offsets[:, 0]) if alignable is None else (alignable & (offsets[:, 1] > offsets[:, 0]))
    offsets, values = offsets[keep], values[keep]
    out = np.zeros(spans.shape[0], dtype=np.float64)
    if spans.shape[0] == 0 or offsets.shape[0] == 0:
        return out
    # Tokens are ordered; the running max of ends makes the overlap range search safe.
    ends = np.maximum.accumulate(offsets[:, 1])
    lo = np.searchsorted(ends, spans[:, 0], side="right")  # first token ending after the word starts
    hi = np.searchsorted(offsets[:, 0], spans[:, 1], side="left")  # tokens starting before the word ends
    has = hi > lo
    if how == "max":
        for w in np.flatnonzero(has):
            out[w] = values[lo[w] : hi[w]].max()
        return out
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    total = prefix[hi] - prefix[lo]
    if how == "sum":
        return np.where(has, total, 0.0)
    if how != "mean":
        raise InvalidArgumentError(f"how must be mean, max or sum, got {how!r}")
    return np.where(has, total / np.maximum(hi - lo, 1), 0.0)


def idf_values(
    words: Sequence[str], valid: np.ndarray, lookup: Mapping[str, float], unseen: float
) -> np.ndarray:
    """IDF of each word's key (``unseen`` for a valid word missing from the lookup; 0 for invalid words)."""
    valid = np.asarray(valid, dtype=bool)
    return np.fromiter(
        (lookup.get(normalize_phrase(w), unseen) if ok else 0.0 for w, ok in zip(words, valid)),
        dtype=np.float64,
        count=len(words),
    )


def unseen_idf_value(lookup: Mapping[str, float], document_count: int | None, rule: str) -> float:
    """The IDF given to words the lookup lacks: ``ln(N+1)+1`` (df = 0), the largest seen IDF, or 0."""
    if rule == "zero":
        return 0.0
    if rule == "df0" and document_count is not None:
        return math.log(max(document_count, 1) + 1) + 1.0
    return max(lookup.values(), default=1.0)


def score_candidates(
    cands: CandidateSet,
    word_scores: np.ndarray,
    word_idf: np.ndarray | None,
    config: DefaultProfileConfig,
) -> np.ndarray:
    """Log-linear candidate score (see :class:`DefaultProfileConfig`); float64 [C]."""
    C = len(cands)
    if C == 0:
        return np.zeros(0, dtype=np.float64)
    ws = np.maximum(np.asarray(word_scores, dtype=np.float64), 0.0)
    prefix = np.concatenate([[0.0], np.cumsum(ws)])
    length = (cands.occurrence_end - cands.occurrence_start).astype(np.float64)
    occurrence = (prefix[cands.occurrence_end] - prefix[cands.occurrence_start]) / length
    counts = cands.counts.astype(np.float64)
    mean_attention = np.bincount(cands.occurrence_candidate, weights=occurrence, minlength=C) / counts
    tiny = 1e-12
    log_score = np.log(mean_attention + tiny) + config.frequency_power * np.log(counts)
    if word_idf is not None:
        idf_prefix = np.concatenate([[0.0], np.cumsum(np.asarray(word_idf, dtype=np.float64))])
        starts = cands.first_word
        ends = starts + cands.n_words
        mean_idf = (idf_prefix[ends] - idf_prefix[starts]) / cands.n_words
        log_score += config.idf_power * np.log(mean_idf + tiny)
    log_score -= config.position_power * np.log1p(cands.first_word.astype(np.float64) / config.position_scale)
    log_score += config.length_power * np.log(cands.n_words.astype(np.float64))
    return log_score


def rank_candidate_set(
    cands: CandidateSet, scores: np.ndarray, top_k: int, nested: str = "none"
) -> list[tuple[str, float]]:
    """Best ``top_k`` (text, score); ties keep the earlier candidate. ``nested``: ``substring`` skips a
    key inside or around a taken key; ``contained`` skips a candidate whose every occurrence may lie
    inside a taken longer candidate (its count is not above the taken one's)."""
    values = np.asarray(scores, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(-values[finite], kind="stable")].tolist()
    if nested == "none":
        return [(cands.texts[i], float(values[i])) for i in order[:top_k]]
    counts = cands.counts
    taken: list[int] = []
    out: list[tuple[str, float]] = []
    for i in order:
        key = cands.keys[i]
        if nested == "substring":
            if any(key in cands.keys[j] or cands.keys[j] in key for j in taken):
                continue
        else:  # contained; English pads with spaces so that the test is word-aligned
            pad = " " if cands.joiner else ""
            inner = pad + cands.texts[i].lower() + pad
            if any(
                cands.n_words[j] > cands.n_words[i]
                and inner in pad + cands.texts[j].lower() + pad
                and counts[i] <= counts[j]
                for j in taken
            ):
                continue
        taken.append(i)
        out.append((cands.texts[i], float(values[i])))
        if len(out) >= top_k:
            break
    return out


# ---------------------------------------------------------------------------------------------- extractor
@dataclass
class _Prepared:
    words: list[str]
    spans: np.ndarray
    valid: np.ndarray
    candidates: CandidateSet


class DefaultProfileExtractor:
    """The default profile on a bundle (``"minilm-l6-en"``, ``"e5-small-multi"`` or a directory).

    ``layers`` overrides the bundle's tuned read layers (absolute or negative indices);
    ``config`` overrides the tuned constants.
    """

    def __init__(
        self,
        bundle_or_name: Any = None,
        language: str = "en",
        *,
        layers: Sequence[int] | None = None,
        intra_op_threads: int | None = None,
        variant: str = "fp32",
        config: DefaultProfileConfig | None = None,
        user_dict: Any = None,
    ) -> None:
        if language not in ("en", "zh"):
            raise InvalidArgumentError(f"language must be 'en' or 'zh', got {language!r}")
        if bundle_or_name is None:
            from keyatten_lite.model.registry import default_bundle_for

            bundle_or_name = default_bundle_for(language)
        self.language = language
        self._bundle_arg = bundle_or_name
        self._variant = variant
        self._threads = intra_op_threads
        self._user_dict = user_dict
        self._config_override = config
        self._config: DefaultProfileConfig | None = None
        self._layers_override = None if layers is None else [int(x) for x in layers]
        self._lock = threading.Lock()
        self._bundle = None
        self._segmenter = None

    # ------------------------------------------------------------------ lazy state
    @property
    def bundle(self):
        if self._bundle is None:
            with self._lock:
                if self._bundle is None:
                    if hasattr(self._bundle_arg, "run_attention"):
                        self._bundle = self._bundle_arg
                    else:
                        from keyatten_lite.model.bundle import open_bundle

                        self._bundle = open_bundle(
                            self._bundle_arg, variant=self._variant, intra_op_threads=self._threads
                        )
        return self._bundle

    @property
    def config(self) -> DefaultProfileConfig:
        if self._config_override is not None:
            return self._config_override
        if self._config is None:  # read once: config_for parses the layers file, prepare() runs per document
            self._config = config_for(self.bundle.name, self.language)
        return self._config

    def layer_positions(self, method: str | None = None) -> list[int]:
        """Indices into the bundle's exported layers of the layers to average for base ``method``."""
        bundle = self.bundle
        wanted = self._layers_override
        if wanted is None and self._config_override is not None and self._config_override.layers:
            wanted = list(self._config_override.layers)
        if wanted is None:
            layers = config_for(bundle.name, self.language, method).layers
            wanted = list(layers) if layers else [-1]
        return [bundle.layer_position(i) for i in wanted]

    def _segment(self, text: str):
        if self.language == "en":
            words, spans, segments = english_words(text)
            return words, None, spans, segments, english_valid_mask(words)
        if self._segmenter is None:
            from keyatten_lite.text.segment import ChineseSegmenter

            self._segmenter = ChineseSegmenter(user_dict=self._user_dict)
        from keyatten_lite.text.candidates import valid_word_mask

        words, tags, spans = chinese_words(text, self._segmenter)
        return words, tags, spans, None, valid_word_mask(words, tags, "zh")

    def prepare(self, text: str) -> _Prepared:
        """Words, spans, validity and candidates of one document (no model)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"the default profile takes raw str documents, got {type(text).__name__}")
        cfg = self.config
        words, tags, spans, segments, valid = self._segment(text)
        if not cfg.punctuation_boundaries:
            segments = None
        cands = build_candidate_set(
            words, valid, segments, self.language, max_ngram=cfg.max_ngram, tags=tags, end_filter=cfg.end_filter
        )
        return _Prepared(words, spans, valid, cands)

    # ------------------------------------------------------------------ IDF
    def document_keys(self, text: str) -> set[str]:
        words, _tags, _spans, _segments, valid = self._segment(text)
        return {normalize_phrase(w) for w, ok in zip(words, valid) if ok}

    def fit_idf(self, texts: Sequence[str]):
        """An ``IdfState`` counted over ``texts`` with this profile's words (§5.2 formula)."""
        from keyatten_lite.state.idf import IdfState

        state = IdfState()
        state.fit_keys(self.document_keys(t) for t in texts)
        return state

    def _idf(self, idf) -> tuple[Mapping[str, float], float]:
        from keyatten_lite.state.idf import IdfState

        if isinstance(idf, IdfState):
            lookup = idf.lookup()
            n = idf.doc_count if idf.has_counts else None
        elif isinstance(idf, Mapping):
            lookup, n = idf, None
        else:
            raise InvalidArgumentError(f"idf must be an IdfState or a mapping of keys to IDF values, got {type(idf).__name__}")
        return lookup, unseen_idf_value(lookup, n, self.config.unseen_idf)

    # ------------------------------------------------------------------ extraction
    def extract_keywords_batch(
        self,
        texts: Sequence[str],
        method: str = "samrank_idf",
        top_k: int = 10,
        idf=None,
        *,
        with_scores: bool = True,
    ) -> list[list]:
        """Top ``top_k`` keywords per document; ``_idf`` methods need ``idf`` (IdfState or lookup)."""
        return self.extract_keywords_methods(texts, [method], top_k, idf, with_scores=with_scores)[method]

    def extract_keywords_methods(
        self,
        texts: Sequence[str],
        methods: Sequence[str],
        top_k: int = 10,
        idf=None,
        *,
        with_scores: bool = True,
    ) -> dict[str, list[list]]:
        """``{method: top keywords per document}`` for several methods from one pass over the documents.

        The graph runs once per window for all methods (each base method's token scores over the union
        of the layers they read); only scoring and ranking run per method.
        """
        if isinstance(methods, str) or not methods:
            raise InvalidArgumentError("methods must be a non-empty list of method names")
        bases = {m: scoring.base_method(m) for m in methods}
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise InvalidArgumentError(f"top_k must be an int >= 1, got {top_k!r}")
        if isinstance(texts, str):
            raise InvalidArgumentError("texts must be a list of documents")
        texts = list(texts)
        needs_idf = [m for m, (_, uses_idf) in bases.items() if uses_idf]
        if needs_idf and idf is None:
            raise InvalidArgumentError(f"{needs_idf[0]!r} needs IDF statistics: pass idf= (an IdfState or a lookup)")
        lookup, unseen = self._idf(idf) if needs_idf else (None, 0.0)
        cfg = self.config
        prepared = [self.prepare(t) for t in texts]
        todo = [i for i, p in enumerate(prepared) if len(p.candidates)]
        base_names = list(dict.fromkeys(base for base, _ in bases.values()))
        positions = {base: self.layer_positions(base) for base in base_names}
        union = sorted({p for ps in positions.values() for p in ps})
        rows = {base: [union.index(p) for p in ps] for base, ps in positions.items()}
        token_scores = token_scores_for_texts(
            self.bundle,
            [texts[i] for i in todo],
            base_names,
            union,
            window=cfg.window,
            stride_fraction=cfg.stride_fraction,
            windows_per_batch=cfg.windows_per_batch,
        ) if todo else []
        word_idf = {i: idf_values(prepared[i].words, prepared[i].valid, lookup, unseen) for i in todo} if lookup is not None else {}
        out: dict[str, list[list]] = {}
        for method, (base, uses_idf) in bases.items():
            results: list[list] = [[] for _ in texts]
            for i, ts in zip(todo, token_scores):
                p = prepared[i]
                per_token = ts.scores[base][rows[base]].mean(axis=0)
                words = word_scores_from_token_offsets(p.spans, ts.offsets, per_token, cfg.token_to_word, ts.alignable)
                scores = score_candidates(p.candidates, words, word_idf[i] if uses_idf else None, cfg)
                ranked = rank_candidate_set(p.candidates, scores, int(top_k), cfg.nested)
                results[i] = ranked if with_scores else [t for t, _ in ranked]
            out[method] = results
        return out

    def extract_keywords(self, text: str, method: str = "samrank_idf", top_k: int = 10, idf=None, *, with_scores: bool = True):
        return self.extract_keywords_batch([text], method, top_k, idf, with_scores=with_scores)[0]
