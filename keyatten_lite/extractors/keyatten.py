"""KeyAttenExtractor: keyatten 0.3.1's attention keyword extraction on an ONNX model bundle.

The pipeline of one call, each step a pure function elsewhere in the package:
segment (segment.py) → candidates (candidates.py) → tokenise pre-split words (align.py) → run the graph
(bundle.py) → token scores (scoring.py) → word scores → optional IDF product (idf.py) → candidate
scores and ranking (candidates.py).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from keyatten_lite.scoring import attention as scoring
from keyatten_lite.model.align import (
    MAX_BATCH_CELLS,
    EncodedBatch,
    configured_tokenizer,
    crop_attention,
    length_sorted_batches,
    pad_encodings,
)
from keyatten_lite.state.cache import DEFAULT_MAX_BYTES, DiskCache, DocumentEntry, cache_key
from keyatten_lite.text.candidates import (
    Candidate,
    build_candidates_with_keys,
    candidate_mean_scores,
    rank_candidates,
    token_counts,
    valid_word_mask,
)
from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.state.idf import IdfState, document_keys, lookup_fingerprint, tfidf_word_values
from keyatten_lite.text.segment import locate_word_offsets
from keyatten_lite.text.guard import (
    DEFAULT_MAX_CHARS,
    TEXT_RULES_VERSION,
    check_max_chars,
    sanitize_text,
    truncate_text,
    truncate_tokens,
)

DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX = "核心关键词、关键实体、主题："
LANGUAGES = ("zh", "en")
CANDIDATE_MODES = ("word", "token_span", "bio")
# "default": the better-ranking pipeline of default_profile.py (docs/results/quality.md);
# "compat": keyatten 0.3.1's results, identical where 0.3.1 is right (docs/results/parity.md).
PROFILES = ("default", "compat")

TextInput = Union[str, Sequence[str]]
Keywords = Union[list[str], list[tuple[str, float]]]


@dataclass(slots=True)
class WordWeight:
    """One word of a document with its raw attention weight (§11 of the behaviour write-up)."""

    word: str
    index: int
    weight: float
    pos_tag: str


@dataclass
class _Document:
    """A segmented document, ready for the model: words include the instruction prefix, if any."""

    words: list[str]  # document words only
    tags: list[str]
    prefix_words: list[str]
    prefix_tags: list[str]
    candidates: list[Candidate]
    keys: list[str]  # normalised key of each candidate
    text: str | None = None  # the raw text (None for token-list input)

    @property
    def model_words(self) -> list[str]:
        return self.prefix_words + self.words

    @property
    def model_tags(self) -> list[str]:
        return self.prefix_tags + self.tags


@dataclass
class _Input:
    """One document after validation, sanitising and truncation: a text, or tokens with tags."""

    text: str | None
    tokens: list[str] | None = None
    tags: list[str] | None = None

    @property
    def is_blank(self) -> bool:
        return not self.tokens if self.text is None else not self.text.strip()

    def key_fields(self) -> dict:
        """What identifies the input in a cache key (POS tags only matter for token input)."""
        if self.text is not None:
            return {"text": self.text}
        return {"tokens": self.tokens, "pos_tags": self.tags}


_TITLE_OPEN, _TITLE_CLOSE = "《", "》"


def recommended_layer(num_layers: int) -> int:
    """keyatten's default read layer for decoder models: about three quarters of the depth."""
    return min(num_layers - 1, max(0, int(math.floor(0.75 * num_layers))))


class KeyAttenExtractor:
    """Extract keywords from the attention of a small transformer, on onnxruntime.

    ``model`` is a bundle directory or a default bundle name (``"minilm-l6-en"``,
    ``"e5-small-multi"``); ``None`` picks the default bundle for ``language``. The arguments follow
    keyatten 0.3.1; the differences are listed in the README. Added keyword arguments:
    ``max_chars`` (only the first ``max_chars`` characters of a text are segmented) and
    ``cache_max_bytes`` (size bound of the ``cache_enabled`` disk cache); see docs/cache.md.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        language: str = "zh",
        device: str = "cpu",
        backend: str = "auto",
        onnx_path: str | os.PathLike | None = None,
        user_dict: Any = None,
        layer_index: int | None = None,
        layer_indices: Sequence[int] | None = None,
        layer_weights: Sequence[float] | None = None,
        instruction_prefix: str | None = None,
        is_causal_override: bool | None = None,
        dedup_nested_for_topk5: bool = False,
        dedup_nested: bool = False,
        candidate_scoring: str = "word",
        dtype: Any = "auto",
        bio_model_path: Any = None,
        cache_enabled: bool = False,
        cache_dir: str | os.PathLike = "cache",
        *,
        variant: str = "fp32",
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        tie_break: str = "earlier",
        max_chars: int = DEFAULT_MAX_CHARS,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        profile: str = "default",
    ) -> None:
        if profile not in PROFILES:
            raise InvalidArgumentError(f"profile must be one of {PROFILES}, got {profile!r}")
        if not isinstance(language, str) or language not in LANGUAGES:
            raise InvalidArgumentError(f"language must be one of {LANGUAGES}, got {language!r}")
        if layer_indices is not None:
            layer_indices = list(layer_indices)
            if not layer_indices:
                raise InvalidArgumentError("layer_indices must not be empty")
            for i in layer_indices:
                _check_int("layer_indices entry", i)
        if layer_index is not None:
            _check_int("layer_index", layer_index)
        if layer_weights is not None:
            if layer_indices is None:
                raise InvalidArgumentError("layer_weights needs layer_indices")
            layer_weights = [float(w) for w in layer_weights]
            if len(layer_weights) != len(layer_indices):
                raise InvalidArgumentError(
                    f"layer_weights has {len(layer_weights)} entries but layer_indices has {len(layer_indices)}"
                )
            if any(not math.isfinite(w) or w < 0 for w in layer_weights) or sum(layer_weights) <= 0:
                raise InvalidArgumentError("layer_weights must be finite, non-negative and sum to more than 0")
        if backend not in ("auto", "onnx", "torch"):
            raise InvalidArgumentError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
        if backend == "torch":
            raise InvalidArgumentError(
                "keyatten-lite runs on onnxruntime only: backend='torch' is not available "
                "(use backend='auto' or 'onnx'; export a torch model with `keyatten-lite-export`)"
            )
        if candidate_scoring not in CANDIDATE_MODES:
            raise InvalidArgumentError(f"candidate_scoring must be one of {CANDIDATE_MODES}, got {candidate_scoring!r}")
        if candidate_scoring == "bio":
            bio_model_path = _check_bio_model_path(bio_model_path)
        if dtype not in ("auto", "float32", None):
            raise InvalidArgumentError(
                f"dtype={dtype!r} is a torch option; ONNX bundles run in float32 "
                "(pass variant='int8' for the smaller, faster quantised graph)"
            )
        if not isinstance(cache_enabled, bool):
            raise InvalidArgumentError(f"cache_enabled must be True or False, got {cache_enabled!r}")
        # DiskCache validates cache_dir and cache_max_bytes; nothing touches the disk before a write.
        cache = DiskCache(cache_dir, cache_max_bytes) if cache_enabled else None
        max_chars = check_max_chars(max_chars)
        if is_causal_override not in (None, True, False):
            raise InvalidArgumentError("is_causal_override must be None, True or False")
        if tie_break not in ("earlier", "later"):
            raise InvalidArgumentError("tie_break must be 'earlier' or 'later'")
        if variant not in ("fp32", "int8"):
            raise InvalidArgumentError("variant must be 'fp32' or 'int8'")
        if intra_op_threads is not None:
            _check_int("intra_op_threads", intra_op_threads)
            if intra_op_threads < 1:
                raise InvalidArgumentError("intra_op_threads must be >= 1")
        self.providers = _providers_for_device(device, providers)

        if model is None and onnx_path is not None:
            model = onnx_path
        # bio mode: with no model given, the BIO bundle's own attention may serve (see _bio_attention_source).
        self._model_defaulted = model is None
        if model is None:
            from keyatten_lite.model.registry import default_bundle_for

            model = default_bundle_for(language)
        if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
            # 0.3.1 accepted a .onnx file; a bundle is the directory around it.
            model = os.path.dirname(os.path.abspath(os.fspath(model)))
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise InvalidArgumentError("model is required: a bundle directory or a default bundle name")

        self.model = model
        self.language = language
        self.user_dict = user_dict
        self.layer_index = layer_index
        self.layer_indices = layer_indices
        self.layer_weights = layer_weights
        self.instruction_prefix = instruction_prefix
        self.is_causal_override = is_causal_override
        self.dedup_nested_for_topk5 = bool(dedup_nested_for_topk5)
        self.dedup_nested = bool(dedup_nested)
        self.candidate_scoring = candidate_scoring
        self.bio_model_path = bio_model_path if candidate_scoring == "bio" else None
        self.variant = variant
        self.intra_op_threads = intra_op_threads
        self.tie_break = tie_break
        self.max_chars = max_chars
        self.profile = profile
        self._default = None
        self.cache: DiskCache | None = cache
        self.idf: IdfState | None = None

        self._lock = threading.Lock()
        # Held across "dictionary fingerprint, then segment" so that, with 《》 titles registered by
        # other threads, a cache key always describes the dictionary the document was segmented with.
        self._segment_lock = threading.RLock()
        self._bundle = None
        self._tokenizer = None
        self._segmenter = None
        self._prefix_cache: tuple[list[str], list[str]] | None = None
        # bio mode (bio_mode.py): the BIO extractor, whether its graph also serves the attention
        # (same backbone: one forward pass), the attention bundle's name (tuned layers), and an
        # optional in-memory store of analyses that the evaluation harness turns on.
        self._bio_lock = threading.Lock()
        self._bio_extractor = None
        self._bio_shared = False
        self._bio_attention_name: str | None = None
        self._bio_window_tokenizer = None
        self._bio_memo: dict | None = None

    # ------------------------------------------------------------------ lazy state
    @property
    def bundle(self):
        """The opened model bundle (loaded on first use; in bio mode the BIO bundle when it shares the backbone)."""
        if self._bundle is None and self.candidate_scoring == "bio":
            self._bio()
        if self._bundle is None:
            with self._lock:
                if self._bundle is None:
                    from keyatten_lite.model.bundle import open_bundle

                    bundle = open_bundle(
                        self.model,
                        variant=self.variant,
                        intra_op_threads=self.intra_op_threads,
                        providers=self.providers,
                    )
                    self._tokenizer = configured_tokenizer(bundle.tokenizer(), bundle.max_length)
                    self._bundle = bundle
        return self._bundle

    @property
    def is_causal(self) -> bool:
        if self.is_causal_override is not None:
            return bool(self.is_causal_override)
        return bool(self.bundle.is_causal)

    def _segmenter_for_zh(self):
        if self._segmenter is None:
            with self._lock:
                if self._segmenter is None:
                    from keyatten_lite.text.guard import BoundedChineseSegmenter

                    self._segmenter = BoundedChineseSegmenter(user_dict=self.user_dict)
        return self._segmenter

    def segment(self, text: str) -> tuple[list[str], list[str]]:
        """Words and POS tags of ``text`` as the extractor sees them (sanitised and truncated)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        return self._segment_clean(self._clean_text(text))

    def _clean_text(self, text: str) -> str:
        """Lone surrogates to U+FFFD, then the first ``max_chars`` characters (docs/cache.md)."""
        return truncate_text(sanitize_text(text), self.max_chars)

    def _segment_clean(self, text: str) -> tuple[list[str], list[str]]:
        if self.language == "zh":
            segmenter = self._segmenter_for_zh()
            with self._segment_lock:
                return segmenter.segment(text)
        from keyatten_lite.text.segment import segment_english

        return segment_english(text)

    def _dictionary_state(self) -> str | None:
        """Fingerprint of the segmentation dictionary (user dict content + 《》 titles so far)."""
        if self.language != "zh":
            return None
        return self._segmenter_for_zh().dictionary_fingerprint()

    @property
    def idf_lookup(self) -> dict[str, float] | None:
        """The fitted IDF lookup (0.3.1 kept it in this attribute)."""
        return None if self.idf is None else self.idf.lookup()

    # ------------------------------------------------------------------ layers and prefix
    def _read_layers(self) -> tuple[list[int], list[float]]:
        """Positions in the bundle's exported layers to read, and their fusion weights."""
        bundle = self.bundle
        if self.layer_indices is not None:
            wanted = list(self.layer_indices)
            weights = list(self.layer_weights) if self.layer_weights is not None else [1.0] * len(wanted)
        else:
            if self.layer_index is not None:
                layer = self.layer_index
            elif self.is_causal:
                layer = _causal_default_layer(bundle)
            else:
                layer = -1
            wanted, weights = [layer], [1.0]
        return [bundle.layer_position(i) for i in wanted], weights

    def _resolved_prefix(self) -> str | None:
        if self.instruction_prefix is not None:
            stripped = str(self.instruction_prefix).strip()
            return stripped or None
        if self.is_causal and self.language.startswith("zh"):
            return DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX
        return None

    def _prefix_words(self) -> tuple[list[str], list[str]]:
        if self._prefix_cache is None:
            prefix = self._resolved_prefix()
            self._prefix_cache = ([], []) if prefix is None else self._segment_clean(sanitize_text(prefix))
        return self._prefix_cache

    # ------------------------------------------------------------------ preparation
    def _normalise_input(self, text: TextInput, pos_tags: Sequence[str] | None) -> _Input:
        """Validate one document; sanitise and truncate it (docs/cache.md, "Awkward input")."""
        if isinstance(text, str):
            return _Input(self._clean_text(text))
        if not isinstance(text, Sequence) or isinstance(text, (bytes, bytearray)):
            raise InvalidArgumentError(
                f"text must be a str or a sequence of str tokens, got {type(text).__name__}"
            )
        tokens = list(text)
        for t in tokens:
            if not isinstance(t, str):
                raise InvalidArgumentError(f"token input must hold str tokens, got {type(t).__name__}: {t!r}")
        if any(not t.strip() for t in tokens):
            raise InvalidArgumentError("token input must not contain blank tokens")
        if pos_tags is None:
            tags = ["n" if self.language == "zh" else "eng"] * len(tokens)
        else:
            if isinstance(pos_tags, (str, bytes)) or not isinstance(pos_tags, Sequence) or len(pos_tags) != len(tokens):
                raise InvalidArgumentError(f"pos_tags must be a list with one tag per token ({len(tokens)} tokens)")
            if not all(isinstance(t, str) for t in pos_tags):
                raise InvalidArgumentError("pos_tags must be str tags such as 'n' or 'eng'")
            tags = list(pos_tags)
        tokens, tags = truncate_tokens([sanitize_text(t) for t in tokens], tags, self.max_chars)
        return _Input(None, tokens, tags)

    def _segment_input(self, inp: _Input) -> tuple[list[str], list[str]]:
        if inp.text is not None:
            return self._segment_clean(inp.text)
        return list(inp.tokens), list(inp.tags)

    def _document(self, words: list[str], tags: list[str], text: str | None, *, with_prefix: bool = True) -> _Document:
        """A segmented document with its candidates (and the instruction prefix for the word path)."""
        # The word path prepends the instruction prefix as words (§2.7); the token path and IDF
        # counting never need it, and asking would open the bundle just to learn if it is causal.
        want_prefix = with_prefix and bool(words) and self.candidate_scoring == "word"
        prefix_words, prefix_tags = self._prefix_words() if want_prefix else ([], [])
        candidates, keys = build_candidates_with_keys(words, tags, self.language)
        return _Document(list(words), list(tags), list(prefix_words), list(prefix_tags), candidates, keys, text)

    def _prepare_input(self, inp: _Input, *, with_prefix: bool = True) -> _Document:
        """Segment (or take the tokens of) one document and build its candidates."""
        words, tags = self._segment_input(inp)
        return self._document(words, tags, inp.text, with_prefix=with_prefix)

    def _prepare(self, text: TextInput, pos_tags: Sequence[str] | None, *, with_prefix: bool = True) -> _Document:
        return self._prepare_input(self._normalise_input(text, pos_tags), with_prefix=with_prefix)

    # ------------------------------------------------------------------ model → word scores
    def _word_scores(
        self, docs: Sequence[_Document], methods: Sequence[str] | None, batch_size: int
    ) -> list[dict[str, np.ndarray]]:
        """Raw word scores (document words only) of each base method in ``methods`` (None: all six,
        from the same forward pass) for each document, run in length-sorted batches."""
        names = tuple(scoring.BASE_METHODS if methods is None else methods)
        out: list[dict[str, np.ndarray] | None] = [None] * len(docs)
        todo = [i for i, d in enumerate(docs) if d.words]
        for i, d in enumerate(docs):
            if not d.words:
                out[i] = {name: np.zeros(0, dtype=np.float32) for name in names}
        if not todo:
            return out  # type: ignore[return-value]
        bundle = self.bundle
        positions, weights = self._read_layers()
        causal = self.is_causal
        pad_id = bundle.pad_token_id if bundle.pad_token_id is not None else 0
        # Encoded once: the lengths group the batches, and each group is padded from these encodings.
        encodings = self._tokenizer.encode_batch([docs[i].model_words for i in todo], is_pretokenized=True)
        lengths = [len(e.ids) for e in encodings]
        for group in length_sorted_batches(lengths, batch_size, MAX_BATCH_CELLS):
            doc_idx = [todo[g] for g in group]
            batch = pad_encodings([encodings[g] for g in group], pad_id=pad_id, padding_side=bundle.padding_side)
            attentions = bundle.run_attention(batch.input_ids, batch.attention_mask)
            for b, i in enumerate(doc_idx):
                out[i] = self._doc_word_scores(attentions, batch, b, docs[i], positions, weights, names, causal)
        return out  # type: ignore[return-value]

    def _doc_word_scores(
        self,
        attentions: np.ndarray,
        batch: EncodedBatch,
        b: int,
        doc: _Document,
        positions: list[int],
        weights: list[float],
        methods: Sequence[str],
        causal: bool,
    ) -> dict[str, np.ndarray]:
        layers = crop_attention(attentions, batch, b)
        keep = batch.token_slice(b)
        word_ids = batch.word_ids[b, keep]
        if causal:
            valid = valid_word_mask(doc.model_words, doc.model_tags, self.language)
            content = scoring.causal_word_content_mask(word_ids, valid)
        else:
            content = scoring.encoder_word_content_mask(word_ids)
        n_words = len(doc.model_words)
        per_layer = []
        for p in positions:
            A = np.ascontiguousarray(layers[p], dtype=np.float32)
            token_scores = scoring.token_method_scores(A, causal=causal, content_mask=content, methods=methods)
            per_layer.append(
                {m: scoring.word_scores_from_tokens(token_scores[m], word_ids, n_words) for m in methods}
            )
        fused = per_layer[0] if len(per_layer) == 1 else scoring.fuse_layers(per_layer, weights)
        skip = len(doc.prefix_words)
        return {m: np.asarray(fused[m], dtype=np.float32)[skip:] for m in methods}

    # ------------------------------------------------------------------ model → token-span scores
    def _token_prefix(self) -> str | None:
        """The token path uses the prefix only for causal models on Chinese (§2.7)."""
        prefix = self._resolved_prefix()
        return prefix if prefix and self.is_causal and self.language.startswith("zh") else None

    def _token_span_scores(
        self, docs: Sequence[_Document], base: str, lookup: Mapping[str, float] | None, batch_size: int
    ) -> list[np.ndarray]:
        """Candidate scores from token scores over each candidate's character span (§4.7)."""
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in docs]
        todo = [i for i, d in enumerate(docs) if d.candidates]
        if not todo:
            return out
        bundle = self.bundle
        positions, weights = self._read_layers()
        causal = self.is_causal
        prefix = self._token_prefix()
        prefix_chars = len(prefix) + 1 if prefix else 0
        model_texts = {i: (prefix + "\n" + docs[i].text) if prefix else docs[i].text for i in todo}
        pad_id = bundle.pad_token_id if bundle.pad_token_id is not None else 0
        encodings = self._tokenizer.encode_batch([model_texts[i] for i in todo])
        lengths = [len(e.ids) for e in encodings]
        for group in length_sorted_batches(lengths, batch_size, MAX_BATCH_CELLS):
            doc_idx = [todo[g] for g in group]
            group_encodings = [encodings[g] for g in group]
            batch = pad_encodings(group_encodings, pad_id=pad_id, padding_side=bundle.padding_side)
            offsets = [np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) for e in group_encodings]
            attentions = bundle.run_attention(batch.input_ids, batch.attention_mask)
            for b, i in enumerate(doc_idx):
                doc = docs[i]
                kept = kept_text_tokens(model_texts[i], offsets[b], prefix_chars)
                layers = crop_attention(attentions, batch, b)
                per_layer = []
                for p in positions:
                    A = np.ascontiguousarray(layers[p], dtype=np.float32)
                    scores = scoring.token_method_scores(A, causal=causal, content_mask=kept, methods=[base])
                    per_layer.append({base: scores[base][kept]})
                fused = per_layer[0] if len(per_layer) == 1 else scoring.fuse_layers(per_layer, weights)
                token_scores = np.asarray(fused[base], dtype=np.float32)
                token_offsets = offsets[b][kept] - prefix_chars
                word_spans = np.asarray(locate_word_offsets(doc.text, doc.words), dtype=np.int64).reshape(-1, 2)
                if lookup is not None:
                    tfidf = tfidf_word_values(doc.words, doc.tags, self.language, lookup)
                    token_tfidf = scoring.project_word_values_to_tokens(word_spans, token_offsets, tfidf)
                    token_scores = scoring.idf_hybrid(token_scores, token_tfidf)
                spans = np.array(
                    [(word_spans[c.word_start][0], word_spans[c.word_end - 1][1]) for c in doc.candidates],
                    dtype=np.int64,
                )
                out[i] = scoring.span_mean_scores(token_offsets, token_scores, spans)
        return out

    # ------------------------------------------------------------------ public API
    def extract_keywords(
        self,
        text: TextInput,
        method: str = "received_attn",
        top_k: int = 10,
        idf_lookup: Mapping[str, float] | IdfState | None = None,
        pos_tags: Sequence[str] | None = None,
        *,
        with_scores: bool = False,
    ) -> Keywords:
        """Top ``top_k`` keywords of one document (``(phrase, score)`` pairs with ``with_scores``)."""
        return self.extract_keywords_batch(
            [text],
            method=method,
            top_k=top_k,
            idf_lookup=idf_lookup,
            pos_tags_batch=None if pos_tags is None else [pos_tags],
            batch_size=1,
            with_scores=with_scores,
        )[0]

    def extract_keywords_batch(
        self,
        texts: Sequence[TextInput],
        method: str = "received_attn",
        top_k: int = 10,
        idf_lookup: Mapping[str, float] | IdfState | None = None,
        pos_tags_batch: Sequence[Sequence[str] | None] | None = None,
        *,
        batch_size: int = 16,
        with_scores: bool = False,
    ) -> list[Keywords]:
        """Keywords of many documents, run through the model in padded, length-sorted batches.

        With the cache on, each document is looked up first and only the misses go to the model.
        """
        base, uses_idf = self._method_parts(method)
        top_k = _check_top_k(top_k)
        _check_int("batch_size", batch_size)
        if batch_size < 1:
            raise InvalidArgumentError("batch_size must be >= 1")
        texts = _check_texts(texts)
        tags_batch = _check_pos_tags_batch(pos_tags_batch, len(texts))
        lookup = self._lookup_for(idf_lookup) if uses_idf else None  # fail before any forward pass
        if self.candidate_scoring == "bio":
            if not all(isinstance(t, str) for t in texts):
                raise InvalidArgumentError("candidate_scoring='bio' needs raw str input, not token lists")
            ranked = self._extract_bio(texts, method, base, idf_lookup, lookup, top_k, batch_size)
            return [r if with_scores else [p for p, _ in r] for r in ranked]
        if self.candidate_scoring == "token_span" and not all(isinstance(t, str) for t in texts):
            raise InvalidArgumentError("candidate_scoring='token_span' needs raw str input, not token lists")
        if self._routes_to_default_profile(texts):
            ranked = self._extract_default_profile(texts, method, uses_idf, idf_lookup, top_k)
            return [r if with_scores else [p for p, _ in r] for r in ranked]
        inputs = [self._normalise_input(t, p) for t, p in zip(texts, tags_batch)]
        if self.cache is not None:
            ranked = self._extract_cached(inputs, method, base, uses_idf, idf_lookup, lookup, top_k, batch_size)
        else:
            docs = [self._prepare_input(inp) for inp in inputs]
            if self.candidate_scoring == "token_span":
                candidate_scores = self._token_span_scores(docs, base, lookup, batch_size)
            else:
                word_scores = self._word_scores(docs, [base], batch_size)
                candidate_scores = [
                    self._word_candidate_scores(doc, scores[base], lookup) for doc, scores in zip(docs, word_scores)
                ]
            ranked = [self._rank(doc, scores, top_k) for doc, scores in zip(docs, candidate_scores)]
        return [r if with_scores else [p for p, _ in r] for r in ranked]

    # ------------------------------------------------------------------ default profile
    def _routes_to_default_profile(self, texts: Sequence[TextInput]) -> bool:
        """The default profile serves raw-text word-mode calls on encoder bundles; token lists,
        token_span, explicit layer weights and decoder bundles keep 0.3.1's pipeline."""
        if self.profile != "default" or self.candidate_scoring != "word" or self.layer_weights is not None:
            return False
        if not all(isinstance(t, str) for t in texts):
            return False
        if all(not t.strip() for t in texts):
            return True  # all blank: answered without opening the bundle
        return not self.is_causal

    def _default_profile(self):
        if self._default is None:
            # Resolved before taking the lock: both take self._lock themselves.
            bundle = self.bundle
            segmenter = self._segmenter_for_zh() if self.language == "zh" else None
            with self._lock:
                if self._default is None:
                    from keyatten_lite.profiles.default import DefaultProfileExtractor

                    layers = self.layer_indices if self.layer_indices is not None else (
                        [self.layer_index] if self.layer_index is not None else None
                    )
                    default = DefaultProfileExtractor(bundle, self.language, layers=layers, user_dict=self.user_dict)
                    if segmenter is not None:
                        default._segmenter = segmenter  # one jieba state per extractor
                    self._default = default
        return self._default

    def _extract_default_profile(
        self,
        texts: Sequence[str],
        method: str,
        uses_idf: bool,
        idf_lookup: Mapping[str, float] | IdfState | None,
        top_k: int,
    ) -> list[list[tuple[str, float]]]:
        # The default profile reads the raw text: control characters become spaces, so they neither
        # split phrases as punctuation would nor reach the tokenizer.
        cleaned = [_CONTROL_CHARS.sub(" ", self._clean_text(t)) for t in texts]
        results: list[list[tuple[str, float]] | None] = [[] if not t.strip() else None for t in cleaned]
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            return [[] for _ in texts]
        idf = None
        if uses_idf:
            idf = idf_lookup if idf_lookup is not None else self.idf
        default = self._default_profile()
        keys: dict[int, str] = {}
        if self.cache is not None:
            from keyatten_lite import __version__

            config = {
                "schema": "keyatten-lite-default-profile/1",
                "package": __version__,
                "bundle": self.bundle.content_hash,
                "variant": self.variant,
                "language": self.language,
                "layers": default.layer_positions(scoring.base_method(method)[0]),
                "config": repr(default.config),
                "libraries": _library_versions(self.language),
                "dictionary": self._dictionary_state(),
                "method": method,
                "top_k": top_k,
                "idf": self._idf_fingerprint(idf_lookup) if uses_idf else None,
            }
            for i in todo:
                keys[i] = cache_key({**config, "text": cleaned[i]})
                results[i] = self.cache.get_keywords(keys[i])
            todo = [i for i in todo if results[i] is None]
        if todo:
            computed = default.extract_keywords_batch([cleaned[i] for i in todo], method, top_k, idf, with_scores=True)
            for i, ranked in zip(todo, computed):
                results[i] = [(p, float(s)) for p, s in ranked]
                if i in keys:
                    self.cache.put_keywords(keys[i], results[i])
        return results  # type: ignore[return-value]

    def _word_candidate_scores(
        self,
        doc: _Document,
        word_scores: np.ndarray,
        lookup: Mapping[str, float] | None,
        counts: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """Word mode: optional IDF product on the word scores, then each candidate's mean (§4.6)."""
        if lookup is not None and doc.candidates:
            tfidf = tfidf_word_values(doc.words, doc.tags, self.language, lookup, counts=counts)
            word_scores = scoring.idf_hybrid(word_scores, tfidf)
        return candidate_mean_scores(word_scores, doc.candidates)

    def _rank(self, doc: _Document, candidate_scores: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        if not doc.candidates:
            return []
        dedup = self.dedup_nested or (self.dedup_nested_for_topk5 and top_k <= 5)
        return rank_candidates(
            [c.text for c in doc.candidates],
            doc.keys,
            candidate_scores,
            top_k,
            dedup_nested=dedup,
            tie_break=self.tie_break,
        )

    # ------------------------------------------------------------------ bio candidates (bio_mode.py)
    def _method_parts(self, method: Any) -> tuple[str | None, bool]:
        """``(base method, uses_idf)``; the BIO-alone methods (bio mode only) have no base method."""
        from keyatten_lite.scoring.bio import BIO_ALONE_METHODS

        if isinstance(method, str) and method in BIO_ALONE_METHODS:
            if self.candidate_scoring != "bio":
                raise InvalidArgumentError(f"method {method!r} ranks BIO spans: it needs candidate_scoring='bio'")
            return None, False
        return scoring.base_method(method)

    def _bio(self):
        """The BIO extractor (opened on first use); decides whether its graph also gives the attention."""
        if self._bio_extractor is None:
            with self._bio_lock:
                if self._bio_extractor is None:
                    from keyatten_lite.extractors.bio_tagger import BIOExtractor

                    bio = BIOExtractor(
                        self.bio_model_path,
                        intra_op_threads=self.intra_op_threads,
                        providers=self.providers,
                        variant=BIO_VARIANT,
                    )
                    shared, name = self._bio_attention_source(bio)
                    if shared:
                        with self._lock:
                            if self._bundle is None:
                                self._tokenizer = configured_tokenizer(bio.bundle.tokenizer(), bio.bundle.max_length)
                                self._bundle = bio.bundle
                    self._bio_shared, self._bio_attention_name = shared, name
                    self._bio_extractor = bio
        return self._bio_extractor

    def _bio_attention_source(self, bio) -> tuple[bool, str]:
        """(the BIO graph's attention is the attention bundle's, the attention bundle's name).

        Shared when both bundles come from the same source files with the same tokenizer and window
        length, and the requested variant is the one the BIO graph runs: one forward pass then gives
        the spans and the attention. With no ``model`` given and the default attention bundle not
        built, the BIO bundle's own attention serves (it exports every layer).
        """
        from keyatten_lite.model.bundle import read_manifest, resolve_bundle_path
        from keyatten_lite.errors import BundleNotFoundError

        bio_manifest = bio.bundle.manifest
        try:
            path = resolve_bundle_path(self.model)
        except BundleNotFoundError:
            if not self._model_defaulted:
                raise
            return True, str(bio_manifest.get("backbone") or bio.bundle.name)
        manifest = read_manifest(path)
        name = str(manifest.get("backbone") or manifest.get("name") or path.name)
        if manifest.get("architecture") != "encoder" and self.is_causal_override is not False:
            raise InvalidArgumentError(
                f"candidate_scoring='bio' needs an encoder attention bundle; {name!r} is "
                f"{manifest.get('architecture')!r} (use the BIO bundle's own backbone, e.g. leave model unset)"
            )

        def backbone(m: dict) -> tuple:
            source = m.get("source") or {}
            tokenizer = (m.get("files") or {}).get((m.get("tokenizer") or {}).get("file", "tokenizer.json")) or {}
            return (source.get("model_id"), source.get("files_sha256"), tokenizer.get("sha256"), m.get("max_length"))

        shared = self.variant == BIO_VARIANT and None not in backbone(manifest)[:1] and backbone(manifest) == backbone(bio_manifest)
        return shared, name

    def _bio_layers(self, base: str | None) -> tuple[list[int], list[float]]:
        """Layer positions (in ``self.bundle``) and fusion weights for bio scoring: compat and explicit
        layers as the token path reads them; otherwise the default profile's tuned layers."""
        if base is None:
            return [], []
        if self.profile == "compat" or self.layer_indices is not None or self.layer_index is not None:
            return self._read_layers()
        from keyatten_lite.profiles.default import tuned_layers

        self._bio()
        layers = list(tuned_layers(self._bio_attention_name or "", base) or [-1])
        return [self.bundle.layer_position(x) for x in layers], [1.0] * len(layers)

    def _bio_words(self, text: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Default bio profile: (keys, valid, character spans) of the words IDF applies to (the default
        profile's words: English regex words with offsets, Chinese jieba words)."""
        from keyatten_lite.profiles.default import chinese_words, english_valid_mask, english_words
        from keyatten_lite.text.normalize import normalize_phrase

        if self.language == "en":
            words, spans, _ = english_words(text)
            valid = english_valid_mask(words)
        else:
            with self._segment_lock:
                words, tags, spans = chinese_words(text, self._segmenter_for_zh())
            valid = valid_word_mask(words, tags, "zh")
        return [normalize_phrase(w) for w in words], np.asarray(valid, dtype=bool), spans

    def _bio_word_values(
        self, text: str, doc: _Document | None, lookup: Mapping[str, float], idf_state: IdfState | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(word character spans, tf·idf word values) for the §3.6 product on the token path."""
        if self.profile == "compat":
            assert doc is not None
            spans = np.asarray(locate_word_offsets(text, doc.words), dtype=np.int64).reshape(-1, 2)
            return spans, tfidf_word_values(doc.words, doc.tags, self.language, lookup)
        from keyatten_lite.scoring.bio import word_tfidf_values
        from keyatten_lite.profiles.default import unseen_idf_value

        keys, valid, spans = self._bio_words(text)
        count = idf_state.doc_count if idf_state is not None and idf_state.has_counts else None
        unseen = unseen_idf_value(lookup, count, "df0")
        return np.asarray(spans, dtype=np.int64).reshape(-1, 2), word_tfidf_values(keys, valid, lookup, unseen)

    def _bio_attention_windows(self, texts: Sequence[str], first_only: bool, batch_size: int, reduce) -> list[list]:
        """Attention bundle windows (not shared with the BIO graph): per text, ``reduce(text, window,
        attention)`` of each window read."""
        from keyatten_lite.extractors.bio_tagger import overflow_windows, run_windows, window_tokenizer

        bundle = self.bundle
        if self._bio_window_tokenizer is None:
            stride = min(self._bio().window_stride, bundle.max_length - 3)
            self._bio_window_tokenizer = window_tokenizer(bundle, bundle.max_length, stride)
        windows = overflow_windows(self._bio_window_tokenizer, texts)
        if first_only:
            windows = [w for w in windows if w.window_index == 0]
        reduced = run_windows(
            bundle, windows, [bundle.output_name], batch_size,
            lambda i, out: reduce(texts[windows[i].text_index], windows[i], out[bundle.output_name]),
        )
        grouped: list[list] = [[] for _ in texts]
        for window, value in zip(windows, reduced):
            grouped[window.text_index].append(value)
        return grouped

    def _bio_analyses(
        self, texts: Sequence[str], bases: Sequence[str], positions: Sequence[int], compat: bool, batch_size: int
    ):
        """BIO spans and per-window token scores (``bases`` at ``positions``) of each text."""
        from keyatten_lite.scoring.bio import BIOAnalysis, WindowTokens

        def window_tokens(text: str, window, attention: np.ndarray):
            if compat and window.window_index > 0:  # 0.3.1 reads the first (truncated) window only
                return None
            offsets = np.asarray(window.offsets, dtype=np.int64).reshape(-1, 2)
            kept = kept_text_tokens(text, offsets, 0)
            scores = {b: np.zeros((len(positions), int(kept.sum())), dtype=np.float32) for b in bases}
            if kept.any():
                for row, p in enumerate(positions):
                    A = np.ascontiguousarray(attention[p], dtype=np.float32)
                    per_method = scoring.token_method_scores(A, causal=False, content_mask=kept, methods=bases)
                    for b in bases:
                        scores[b][row] = per_method[b][kept]
            return WindowTokens(offsets[kept], scores)

        bio = self._bio()
        with_attention = bool(bases)
        shared = with_attention and self._bio_shared
        docs = bio.analyse_batch(
            texts, with_attention=shared, reduce=window_tokens if shared else None, batch_size=batch_size
        )
        if not with_attention:
            return [BIOAnalysis(t, d.spans, [], []) for t, d in zip(texts, docs)]
        if shared:
            per_text = [d.attentions for d in docs]
        else:
            per_text = self._bio_attention_windows(texts, compat, batch_size, window_tokens)
        return [
            BIOAnalysis(text, doc.spans, [w for w in tokens if w is not None], list(positions))
            for text, doc, tokens in zip(texts, docs, per_text)
        ]

    def _extract_bio(
        self,
        texts: Sequence[str],
        method: str,
        base: str | None,
        idf_lookup: Mapping[str, float] | IdfState | None,
        lookup: Mapping[str, float] | None,
        top_k: int,
        batch_size: int,
    ) -> list[list[tuple[str, float]]]:
        """§4.8 (profile compat) or its fixed form (default); BIO-alone methods rank spans without attention."""
        from keyatten_lite.scoring.bio import bio_span_scores, window_token_values
        from keyatten_lite.text.normalize import normalize_phrase

        compat = self.profile == "compat"
        cleaned = [self._clean_text(t) for t in texts]
        results: list[list[tuple[str, float]]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(cleaned) if t.strip()]
        docs: dict[int, _Document] = {}
        if compat and base is not None:
            # 0.3.1 builds the word candidates first and answers [] when there are none (§4.8 step 1).
            for i in todo:
                docs[i] = self._prepare_input(_Input(cleaned[i]), with_prefix=False)
            todo = [i for i in todo if docs[i].candidates]
        if not todo:
            return results
        positions, weights = self._bio_layers(base)
        idf_state = idf_lookup if isinstance(idf_lookup, IdfState) else (self.idf if idf_lookup is None else None)
        memo = self._bio_memo
        # Windows are sorted by length across a whole chunk before batching (padding costs quadratic
        # attention time); each window's attention is reduced as its batch completes, so chunks can be large.
        chunk_docs = max(batch_size, BIO_CHUNK_DOCS)
        if memo is not None:
            # The evaluation harness: every base method at every layer, computed once per document.
            all_positions = list(range(len(self.bundle.exported_layers)))
            missing = [i for i in dict.fromkeys(todo) if (cleaned[i], compat) not in memo]
            for first in range(0, len(missing), chunk_docs):
                chunk = missing[first : first + chunk_docs]
                for i, analysis in zip(
                    chunk, self._bio_analyses([cleaned[i] for i in chunk], scoring.BASE_METHODS, all_positions, compat, batch_size)
                ):
                    memo[(cleaned[i], compat)] = analysis
            analyses = {i: memo[(cleaned[i], compat)] for i in todo}
        else:
            analyses = {}
            for first in range(0, len(todo), chunk_docs):
                chunk = todo[first : first + chunk_docs]
                bases = [base] if base is not None else []
                analyses.update(zip(chunk, self._bio_analyses([cleaned[i] for i in chunk], bases, positions, compat, batch_size)))
        dedup = not compat and (self.dedup_nested or (self.dedup_nested_for_topk5 and top_k <= 5))
        for i in todo:
            analysis = analyses[i]
            if not analysis.spans:
                continue
            span_texts = [piece for piece, _ in analysis.spans]
            if method == "bio_confidence":
                scores = np.asarray([conf for _, conf in analysis.spans], dtype=np.float64)
            elif method == "bio_order":
                scores = -np.arange(len(span_texts), dtype=np.float64)
            else:
                rows = [analysis.layer_positions.index(p) for p in positions]
                word_spans = word_values = None
                if lookup is not None:
                    word_spans, word_values = self._bio_word_values(analysis.text, docs.get(i), lookup, idf_state)
                values = window_token_values(analysis, base, rows, weights, word_spans, word_values)
                scores = bio_span_scores(analysis, values, compat=compat)
            # Stable: ties keep the BIO order (§4.8 step 5), whatever tie_break says.
            results[i] = rank_candidates(
                span_texts, [normalize_phrase(t) for t in span_texts], scores, top_k, dedup_nested=dedup, tie_break="earlier"
            )
        return results

    # ------------------------------------------------------------------ cache
    def _cache_config(self) -> dict:
        """Everything that changes a document's analysis, except the document and the dictionary."""
        from keyatten_lite import __version__

        bundle = self.bundle
        positions, weights = self._read_layers()
        word_mode = self.candidate_scoring == "word"
        return {
            "schema": "keyatten-lite-cache-key/1",
            "package": __version__,
            "text_rules": TEXT_RULES_VERSION,
            "bundle": bundle.content_hash,
            "variant": self.variant,
            "language": self.language,
            "candidate_scoring": self.candidate_scoring,
            # Resolved values: layer_index=-1 and 5 on a 6-layer model share entries.
            "layers": [bundle.exported_layers[p] for p in positions],
            "layer_weights": [float(w) for w in weights],
            "causal": self.is_causal,
            "prefix": self._resolved_prefix() if word_mode else self._token_prefix(),
            "libraries": _library_versions(self.language),
        }

    def _idf_fingerprint(self, idf_lookup: Mapping[str, float] | IdfState | None) -> str | None:
        """§5.5 fingerprint; an IdfState (including the fitted one) computes it once and keeps it."""
        if isinstance(idf_lookup, IdfState):
            return idf_lookup.fingerprint()
        if idf_lookup is not None:
            # A plain mapping may have changed since the last call, so it is hashed once per call.
            return lookup_fingerprint(idf_lookup)
        return self.idf.fingerprint() if self.idf is not None else None

    def _replay_segmentation_side_effects(self, inp: _Input) -> None:
        """On a cache hit, register the document's 《》 titles as segmenting it would have, so that
        later documents see the same dictionary (and keys) with or without the cache."""
        if self.language == "zh" and inp.text is not None and _TITLE_OPEN in inp.text and _TITLE_CLOSE in inp.text:
            self._segment_clean(inp.text)

    def _extract_cached(
        self,
        inputs: list[_Input],
        method: str,
        base: str,
        uses_idf: bool,
        idf_lookup: Mapping[str, float] | IdfState | None,
        lookup: Mapping[str, float] | None,
        top_k: int,
        batch_size: int,
    ) -> list[list[tuple[str, float]]]:
        """Look every document up, run only the misses through the model (docs/cache.md).

        Per document: (1) keyword layer by text + dictionary fingerprint (no segmentation); on a miss,
        segment, then (2) keyword layer by the segmentation, (3) document layer by the segmentation
        (no forward pass), (4) compute. Keys from the segmentation stay valid however the dictionary
        changed since (Chinese 《》 titles), so a later call needs at most a jieba pass.
        """
        cache = self.cache
        assert cache is not None
        n = len(inputs)
        results: list[list[tuple[str, float]] | None] = [None] * n
        if all(inp.is_blank for inp in inputs):
            return [[] for _ in inputs]
        word_mode = self.candidate_scoring == "word"
        config = self._cache_config()
        if word_mode:
            # Resolve the prefix before any document, so hits and misses segment it at the same point.
            self._prefix_words()
        keyword_fields = {
            "method": method,
            "top_k": top_k,
            "dedup_nested": self.dedup_nested,
            "dedup_nested_for_topk5": self.dedup_nested_for_topk5,
            "tie_break": self.tie_break,
            # Only the _idf methods depend on the IDF (0.3.1 keyed every method on it).
            "idf": self._idf_fingerprint(idf_lookup) if uses_idf else None,
        }
        docs: list[_Document | None] = [None] * n
        scores: list[dict[str, np.ndarray] | None] = [None] * n
        counts: list[Mapping[str, float] | None] = [None] * n
        write_keys: list[list[str]] = [[] for _ in range(n)]  # keyword keys to store the result under
        document_keys_: list[str | None] = [None] * n
        misses: list[int] = []
        for i, inp in enumerate(inputs):
            if inp.is_blank:
                results[i] = []
                continue
            if inp.text is not None:
                with self._segment_lock:
                    # Fingerprint taken before this document is segmented: the dictionary state its
                    # segmentation depends on (segmenting it registers its own 《》 titles).
                    text_key = cache_key(
                        {**config, "dictionary": self._dictionary_state(), "text": inp.text, **keyword_fields}
                    )
                    hit = cache.get_keywords(text_key)
                    if hit is not None:
                        results[i] = hit
                        self._replay_segmentation_side_effects(inp)
                        continue
                    words, tags = self._segment_input(inp)
                write_keys[i].append(text_key)
            else:
                words, tags = inp.tokens, inp.tags
            doc_key = cache_key(
                {
                    **config,
                    "words": words,
                    "tags": tags,
                    # token_span scores character spans of the text itself.
                    "text": None if word_mode else inp.text,
                }
            )
            keyword_key = cache_key({"document": doc_key, **keyword_fields})
            write_keys[i].append(keyword_key)
            hit = cache.get_keywords(keyword_key)
            if hit is not None:
                results[i] = hit
                continue
            entry = cache.get_document(doc_key) if word_mode else None
            if entry is not None and entry.words == list(words) and entry.tags == list(tags):
                docs[i] = _Document(entry.words, entry.tags, [], [], entry.candidates, entry.keys, inp.text)
                scores[i] = entry.scores
                counts[i] = entry.token_counts
                continue
            docs[i] = self._document(words, tags, inp.text)
            document_keys_[i] = doc_key
            misses.append(i)

        token_span_scores: dict[int, np.ndarray] = {}
        if misses and word_mode:
            computed = self._word_scores([docs[i] for i in misses], None, batch_size)
            for i, doc_scores in zip(misses, computed):
                doc = docs[i]
                scores[i] = doc_scores
                entry = DocumentEntry(
                    doc.words, doc.tags, doc.candidates, doc.keys,
                    dict(token_counts(doc.words, doc.tags, self.language)), doc_scores,
                )
                counts[i] = entry.token_counts
                cache.put_document(document_keys_[i], entry)
        elif misses:
            computed = self._token_span_scores([docs[i] for i in misses], base, lookup, batch_size)
            token_span_scores = dict(zip(misses, computed))

        for i in range(n):
            if results[i] is None:
                if word_mode:
                    candidate_scores = self._word_candidate_scores(docs[i], scores[i][base], lookup, counts[i])
                else:
                    candidate_scores = token_span_scores[i]
                results[i] = self._rank(docs[i], candidate_scores, top_k)
                for key in write_keys[i]:
                    cache.put_keywords(key, results[i])
            elif len(write_keys[i]) == 2:  # found by segmentation: add the fast text entry
                cache.put_keywords(write_keys[i][0], results[i])
        return results  # type: ignore[return-value]

    def extract_word_weights(
        self, text: TextInput, method: str = "received_attn", pos_tags: Sequence[str] | None = None
    ) -> list[WordWeight]:
        """Every word of the document, in order, with its raw attention weight (no IDF)."""
        base, uses_idf = scoring.base_method(method)
        if uses_idf:
            raise InvalidArgumentError(
                f"{method!r} is not supported for word-weight extraction: word weights are raw attention "
                f"scores; use one of {scoring.BASE_METHODS}"
            )
        doc = self._prepare(text, pos_tags)
        scores = self._word_scores([doc], [base], 1)[0][base]
        return [WordWeight(w, i, float(s), t) for i, (w, t, s) in enumerate(zip(doc.words, doc.tags, scores))]

    def candidate_phrases(self, text: str) -> list[str]:
        """The word-mode candidate phrases of ``text``, in document order."""
        return [c.text for c in self._prepare(text, None, with_prefix=False).candidates]

    # ------------------------------------------------------------------ IDF
    def _document_keys(self, texts, pos_tags_batch) -> list[set[str]]:
        texts = _check_texts(texts)
        tags_batch = _check_pos_tags_batch(pos_tags_batch, len(texts))
        key_sets = []
        if self.candidate_scoring == "bio" and self.profile == "default" and all(isinstance(t, str) for t in texts):
            # The words whose IDF the default bio scoring looks up (_bio_word_values).
            return [set(k for k, ok in zip(*self._bio_words(self._clean_text(t))[:2]) if ok) for t in texts]
        if self._routes_to_default_profile(texts):
            # Count the words the default profile reads, so every key it looks up can be found.
            default = self._default_profile()
            return [default.document_keys(self._clean_text(t)) for t in texts]
        for text, tags in zip(texts, tags_batch):
            doc = self._prepare(text, tags, with_prefix=False)
            key_sets.append(document_keys(doc.words, doc.tags, self.language))
        return key_sets

    def fit_idf(self, texts, pos_tags_batch=None) -> dict[str, float]:
        """Count document frequencies over ``texts`` (replacing any earlier state); returns the lookup."""
        state = IdfState()
        state.fit_keys(self._document_keys(texts, pos_tags_batch))
        self.idf = state
        return dict(state.lookup())

    def update_idf(self, texts, pos_tags_batch=None) -> dict[str, float]:
        """Add ``texts`` to the document frequencies (a first call works like ``fit_idf``)."""
        key_sets = self._document_keys(texts, pos_tags_batch)
        state = self.idf if self.idf is not None else IdfState()
        state.update_keys(key_sets)
        self.idf = state
        return dict(state.lookup())

    def save_idf(self, path: str | os.PathLike) -> None:
        if self.idf is None:
            raise InvalidArgumentError("no IDF state to save: call fit_idf or load_idf first")
        self.idf.save(path)

    def load_idf(self, path: str | os.PathLike) -> IdfState:
        self.idf = IdfState.load(path)
        return self.idf

    def _lookup_for(self, idf_lookup) -> Mapping[str, float]:
        if idf_lookup is not None:
            if isinstance(idf_lookup, IdfState):
                return idf_lookup.lookup()
            if isinstance(idf_lookup, Mapping):
                return idf_lookup
            raise InvalidArgumentError(
                f"idf_lookup must be a mapping of keys to IDF values or an IdfState, got {type(idf_lookup).__name__}"
            )
        if self.idf is None:
            raise InvalidArgumentError(
                "an _idf method needs IDF statistics: call fit_idf/update_idf/load_idf first or pass idf_lookup"
            )
        return self.idf.lookup()


_ALL_NON_WORD = re.compile(r"[\W_]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def kept_text_tokens(model_text: str, offsets: np.ndarray, prefix_chars: int) -> np.ndarray:
    """Tokens the token path scores: real text after the prefix, not whitespace or punctuation only (§3.2)."""
    kept = np.zeros(len(offsets), dtype=bool)
    for t, (start, end) in enumerate(offsets.tolist()):
        if end > start and start >= prefix_chars:
            piece = model_text[start:end].strip()
            kept[t] = bool(piece) and _ALL_NON_WORD.fullmatch(piece) is None
    return kept


def extract_keywords(
    text: TextInput,
    model: str | os.PathLike | None = None,
    language: str = "zh",
    method: str = "received_attn",
    top_k: int = 10,
    idf_lookup: Mapping[str, float] | IdfState | None = None,
    pos_tags: Sequence[str] | None = None,
    *,
    with_scores: bool = False,
    **options: Any,
) -> Keywords:
    """One-call convenience: the extractor is cached per configuration, not rebuilt every call
    (0.3.1 reloaded the model on every call)."""
    key = (str(model), language, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _CONVENIENCE_LOCK:
        extractor = _CONVENIENCE_CACHE.get(key)
        if extractor is None:
            extractor = KeyAttenExtractor(model=model, language=language, **options)
            _CONVENIENCE_CACHE.clear()  # keep one model in memory, not one per configuration
            _CONVENIENCE_CACHE[key] = extractor
    return extractor.extract_keywords(
        text, method=method, top_k=top_k, idf_lookup=idf_lookup, pos_tags=pos_tags, with_scores=with_scores
    )


_CONVENIENCE_CACHE: dict = {}
_CONVENIENCE_LOCK = threading.Lock()


# ---------------------------------------------------------------------- argument checks
@functools.lru_cache(maxsize=None)
def _library_versions(language: str) -> dict:
    """Versions of the libraries whose behaviour is part of the answer (cache keys)."""
    from importlib.metadata import PackageNotFoundError, version

    def get(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    # nltk's Porter stemmer makes the phrase keys (dedup, counts, IDF); jieba segments Chinese.
    return {"nltk": get("nltk"), "jieba": get("jieba") if language == "zh" else None}


# The BIO graph runs fp32: its int8 graph changes Viterbi paths too often (docs/bio.md).
BIO_VARIANT = "fp32"
# Documents whose windows are sorted and batched together in bio mode.
BIO_CHUNK_DOCS = 256
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def _check_bio_model_path(path: Any) -> str | os.PathLike:
    """A BIO bundle name or directory (checked to exist now, opened on first use)."""
    if path is None:
        raise InvalidArgumentError(
            "candidate_scoring='bio' needs bio_model_path: a BIO bundle name (e.g. 'bio-minilm-en', "
            "'bio-e5-small-zh') or directory"
        )
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidArgumentError(f"bio_model_path must be a BIO bundle name or directory, got {path!r}")
    if os.fspath(path).lower().endswith(_PICKLE_SUFFIXES):
        raise InvalidArgumentError(
            f"bio_model_path {os.fspath(path)!r} looks like a torch checkpoint; keyatten-lite loads no pickles. "
            "Use a BIO bundle (`keyatten-lite models build` makes bio-minilm-en and bio-e5-small-zh)"
        )
    from keyatten_lite.model.bundle import resolve_bundle_path

    resolve_bundle_path(path)  # BundleNotFoundError with the build command when it is missing
    return path


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an int, got {value!r}")


def _check_top_k(top_k: Any) -> int:
    _check_int("top_k", top_k)
    if top_k < 1:
        # 0.3.1 sliced with it (negative values returned almost everything); we refuse.
        raise InvalidArgumentError(f"top_k must be >= 1, got {top_k}")
    return int(top_k)


def _check_texts(texts: Any) -> list:
    if isinstance(texts, (str, bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise InvalidArgumentError("texts must be a list of documents (str or token lists)")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str) and not (isinstance(t, Sequence) and not isinstance(t, (bytes, bytearray))):
            raise InvalidArgumentError(f"each document must be a str or a list of tokens, got {type(t).__name__}")
    return texts


def _check_pos_tags_batch(pos_tags_batch: Any, n: int) -> list:
    if pos_tags_batch is None:
        return [None] * n
    pos_tags_batch = list(pos_tags_batch)
    if len(pos_tags_batch) != n:
        raise InvalidArgumentError(f"pos_tags_batch has {len(pos_tags_batch)} entries for {n} texts")
    return pos_tags_batch


def _causal_default_layer(bundle) -> int:
    """The manifest's default layer: always one the graph exports (floor(0.75 L) unless the bundle
    was exported at other layers), so automatic layer choice never fails (0.3.1 §12.1 item 1)."""
    if getattr(bundle, "default_layer", None) is not None:
        return int(bundle.default_layer)
    return recommended_layer(int(bundle.num_layers))


def _providers_for_device(device: Any, providers: Sequence[str] | None) -> list[str] | None:
    if providers is not None:
        return list(providers)
    if not isinstance(device, str):
        raise InvalidArgumentError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return None
    if device.startswith("cuda"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InvalidArgumentError(
                f"device={device!r} needs onnxruntime's CUDAExecutionProvider, which this onnxruntime build "
                "lacks (install onnxruntime-gpu, or use device='cpu')"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InvalidArgumentError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
