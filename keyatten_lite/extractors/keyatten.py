"""KeyAttenExtractor: keyatten 0.3.1's keyword extraction on an ONNX model bundle, as a thin facade.

The extractor validates its arguments once (``pipeline/settings.py``), keeps what it opens lazily
(``pipeline/resources.py``: bundle, tokenizer, jieba, BIO tagger) and the IDF state, and hands every call
to its pipeline (``pipeline/run.py``): prepare → read → score → rank, with the stages its profile
names, through the disk cache when it is on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.pipeline import compat
from keyatten_lite.pipeline.inputs import (
    TextInput,
    check_batch_size,
    check_pos_tags_batch,
    check_texts,
    check_top_k,
    normalise_input,
)
from keyatten_lite.pipeline.resources import DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX, Resources, recommended_layer
from keyatten_lite.pipeline.run import Pipeline
from keyatten_lite.pipeline.settings import CANDIDATE_MODES, LANGUAGES, PROFILES, Settings
from keyatten_lite.scoring import attention
from keyatten_lite.state.cache import DEFAULT_MAX_BYTES, DiskCache
from keyatten_lite.state.idf import IdfState
from keyatten_lite.text.guard import DEFAULT_MAX_CHARS

__all__ = [
    "CANDIDATE_MODES",
    "DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX",
    "KeyAttenExtractor",
    "LANGUAGES",
    "PROFILES",
    "WordWeight",
    "extract_keywords",
    "recommended_layer",
]

Keywords = Union[list[str], list[tuple[str, float]]]


@dataclass(slots=True)
class WordWeight:
    """One word of a document with its raw attention weight (§11 of the behaviour write-up)."""

    word: str
    index: int
    weight: float
    pos_tag: str


class KeyAttenExtractor:
    """Extract keywords from the attention of a small transformer, on onnxruntime.

    ``model`` is a bundle directory or a default bundle name (``"minilm-l6-en"``,
    ``"e5-small-zh"``); ``None`` picks the default bundle for ``language``. The arguments follow
    keyatten 0.3.1; the differences are listed in the README. Added keyword arguments:
    ``max_chars`` (only the first ``max_chars`` characters of a text are segmented),
    ``cache_max_bytes`` (size bound of the ``cache_enabled`` disk cache; docs/cache.md), ``variant``
    (``"fp32"``, ``"int8"``, or None: the bundle's default variant, fp32 for ``profile="compat"`` and
    bio mode), ``intra_op_threads``, ``providers``, ``tie_break`` and ``profile`` (``"default"``, ``"compat"``
    or a ``keyatten_lite.profiles.Profile`` value).
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
        variant: str | None = None,
        intra_op_threads: int | None = None,
        providers: Sequence[str] | None = None,
        tie_break: str = "earlier",
        max_chars: int = DEFAULT_MAX_CHARS,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
        profile: Any = "default",
    ) -> None:
        settings = Settings.from_arguments(
            model=model,
            language=language,
            device=device,
            backend=backend,
            onnx_path=onnx_path,
            user_dict=user_dict,
            layer_index=layer_index,
            layer_indices=layer_indices,
            layer_weights=layer_weights,
            instruction_prefix=instruction_prefix,
            is_causal_override=is_causal_override,
            dedup_nested_for_topk5=dedup_nested_for_topk5,
            dedup_nested=dedup_nested,
            candidate_scoring=candidate_scoring,
            dtype=dtype,
            bio_model_path=bio_model_path,
            cache_enabled=cache_enabled,
            cache_dir=cache_dir,
            variant=variant,
            intra_op_threads=intra_op_threads,
            providers=providers,
            tie_break=tie_break,
            max_chars=max_chars,
            cache_max_bytes=cache_max_bytes,
            profile=profile,
        )
        self.settings = settings
        # 0.3.1's attributes, read-only in spirit: the settings are what the pipeline reads.
        self.model = settings.model
        self.language = settings.language
        self.providers = settings.providers
        self.user_dict = settings.user_dict
        self.layer_index = settings.layer_index
        self.layer_indices = settings.layer_indices
        self.layer_weights = settings.layer_weights
        self.instruction_prefix = settings.instruction_prefix
        self.is_causal_override = settings.is_causal_override
        self.dedup_nested_for_topk5 = settings.dedup_nested_for_topk5
        self.dedup_nested = settings.dedup_nested
        self.candidate_scoring = settings.candidate_scoring
        self.bio_model_path = settings.bio_model_path
        self.variant = settings.variant
        self.intra_op_threads = settings.intra_op_threads
        self.tie_break = settings.tie_break
        self.max_chars = settings.max_chars
        self.profile = settings.profile.name
        self.cache: DiskCache | None = settings.open_cache()
        self.idf: IdfState | None = None
        self.resources = Resources(settings)
        self.pipeline = Pipeline(self.resources, self.cache)
        self._idf_lock = threading.Lock()

    # ------------------------------------------------------------------ lazy state
    @property
    def bundle(self):
        """The opened model bundle (loaded on first use; in bio mode the BIO bundle when it shares the backbone)."""
        return self.resources.bundle

    @property
    def is_causal(self) -> bool:
        return self.resources.is_causal

    @property
    def idf_lookup(self) -> dict[str, float] | None:
        """The fitted IDF lookup (0.3.1 kept it in this attribute)."""
        return None if self.idf is None else self.idf.lookup()

    def segment(self, text: str) -> tuple[list[str], list[str]]:
        """Words and POS tags of ``text`` as the extractor sees them (sanitised and truncated)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        return self.resources.segment_clean(self.resources.clean(text))

    # ------------------------------------------------------------------ keywords
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
        ranked = self.extract_keywords_methods(
            texts, [method], top_k, idf_lookup, pos_tags_batch, batch_size=batch_size
        )[method]
        return [r if with_scores else [p for p, _ in r] for r in ranked]

    def extract_keywords_methods(
        self,
        texts: Sequence[TextInput],
        methods: Sequence[str],
        top_k: int = 10,
        idf_lookup: Mapping[str, float] | IdfState | None = None,
        pos_tags_batch: Sequence[Sequence[str] | None] | None = None,
        *,
        batch_size: int = 16,
    ) -> dict[str, list[list[tuple[str, float]]]]:
        """``{method: [(phrase, score), ...] per document}`` for several methods from one forward pass
        per document (what comparing methods on a corpus needs); each list is what
        ``extract_keywords_batch(..., with_scores=True)`` gives for that method."""
        if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
            raise InvalidArgumentError("methods must be a non-empty list of method names")
        methods = list(dict.fromkeys(methods))
        from keyatten_lite.pipeline.bio import check_method

        for method in methods:
            check_method(method, self.candidate_scoring)
        top_k = check_top_k(top_k)
        batch_size = check_batch_size(batch_size)
        texts = check_texts(texts)
        tags_batch = check_pos_tags_batch(pos_tags_batch, len(texts))
        return self.pipeline.extract(texts, tags_batch, methods, top_k, idf_lookup, self.idf, batch_size)

    def extract_word_weights(
        self, text: TextInput, method: str = "received_attn", pos_tags: Sequence[str] | None = None
    ) -> list[WordWeight]:
        """Every word of the document, in order, with its raw attention weight (no IDF)."""
        base, uses_idf = attention.base_method(method)
        if uses_idf:
            raise InvalidArgumentError(
                f"{method!r} is not supported for word-weight extraction: word weights are raw attention "
                f"scores; use one of {attention.BASE_METHODS}"
            )
        doc = compat.prepare_input(self.resources, self._input(text, pos_tags))
        scores = compat.read_words(self.resources, [doc], [base], 1)[0][base]
        return [WordWeight(w, i, float(s), t) for i, (w, t, s) in enumerate(zip(doc.words, doc.tags, scores))]

    def candidate_phrases(self, text: str) -> list[str]:
        """The word-mode candidate phrases of ``text``, in document order (0.3.1's candidates)."""
        doc = compat.prepare_input(self.resources, self._input(text, None), with_prefix=False)
        return [c.text for c in doc.candidates]

    def _input(self, text: TextInput, pos_tags: Sequence[str] | None):
        return normalise_input(text, pos_tags, self.language, self.max_chars)

    # ------------------------------------------------------------------ IDF
    def _document_keys(self, texts, pos_tags_batch) -> list[set[str]]:
        texts = check_texts(texts)
        tags_batch = check_pos_tags_batch(pos_tags_batch, len(texts))
        return self.pipeline.document_keys(texts, tags_batch)

    def fit_idf(self, texts, pos_tags_batch=None) -> dict[str, float]:
        """Count document frequencies over ``texts`` (replacing any earlier state); returns the lookup."""
        state = IdfState()
        state.fit_keys(self._document_keys(texts, pos_tags_batch))
        self.idf = state
        return dict(state.lookup())

    def update_idf(self, texts, pos_tags_batch=None) -> dict[str, float]:
        """Add ``texts`` to the document frequencies (a first call works like ``fit_idf``)."""
        key_sets = self._document_keys(texts, pos_tags_batch)
        with self._idf_lock:
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
