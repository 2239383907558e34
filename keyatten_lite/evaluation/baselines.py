"""Systems compared by ``keyatten-lite eval``: classic baselines, keyatten-lite, and keyatten 0.3.1.

A system is built from a spec string (see ``SYSTEM_SPECS``), ``prepare``d once with the evaluated
documents and an optional IDF corpus, then asked for ranked phrases per document. Heavy dependencies
(yake, jieba, keyatten, torch) are imported inside the systems that need them, so that the module itself
imports nothing heavy; keyatten_lite never imports torch itself, only the ``keyatten`` system does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.evaluation.metrics import Document
from keyatten_lite.evaluation.tfidf_peer import english_ngram_candidates, english_stop_words, rank_by_tfidf, smooth_idf

DEFAULT_TOP_N = 15

SYSTEM_SPECS: dict[str, str] = {
    "lite:<bundle>:<method>[:int8]": "keyatten-lite with a bundle name or directory and a method "
    "(e.g. lite:minilm-l6-en:samrank_idf); _idf methods fit IDF on --idf-corpus or on the evaluated docs",
    "lite-default:<bundle>:<method>[:int8]": "keyatten-lite's default profile (raw-text reading, windows, "
    "punctuation-bounded candidates, tuned layers and candidate scoring; keyatten_lite.profiles.default); "
    "_idf methods fit IDF with the profile's own words on --idf-corpus or on the evaluated docs",
    "lite-bio:<bio_bundle>:<method>[:compat]": "keyatten-lite candidate_scoring='bio': the BIO bundle's spans "
    "(e.g. bio-minilm-en) ranked by an attention method of the default bundle of the language (one forward "
    "pass when they share the backbone), or alone with bio_confidence / bio_order; default profile unless "
    ":compat. Systems of one run share the forward passes (the first one's seconds include them)",
    "yake": "YAKE 0.7.3, n=3, top 15, on the raw text (lan en/zh)",
    "yake-jieba": "YAKE on jieba-segmented text (Chinese; words joined by spaces)",
    "tfidf": "English: TF-IDF over 1-3-grams inside punctuation- and stop-word-free runs; "
    "Chinese: jieba.analyse.extract_tags",
    "tfidf-cands[:<bundle>]": "keyatten-lite's own word candidates ranked by the mean TF-IDF of their words",
    "jieba-textrank": "jieba.analyse.textrank (Chinese)",
    "keyatten:<hf_model_dir>:<method>": "keyatten 0.3.1 on torch with the same checkpoint",
    "keybert": "KeyBERT 0.9.0 with all-MiniLM-L6-v2 (evaluation/keybert_peer.py)",
    "lite-csa[:<bundle>[:<order>[:<seeds>[:<words>[:<bio>[:<ranking>[:<spans>]]]]]]]": "keyatten-lite CandidateSegmentAttentionExtractor: BIO candidates "
    "listed after the document, ranked by received attention (evaluation/csa_peer.py)",
    "lite-qk[:<bundle>[:<profile>]]": "keyatten-lite QKLoRAExtractor: word candidates scored by the last token's "
    "query against their keys; the language's trained QK bundle and the default profile unless named",
}


class SystemUnavailable(RuntimeError):
    """A system cannot run here (a missing optional package); the evaluation skips it with this message."""


@dataclass
class RunContext:
    """What every system may use: the IDF corpus, threads, batch size, an extractor factory (tests)."""

    idf_texts: list[str] | None = None
    idf_source: str | None = None
    threads: int | None = None
    batch_size: int = 16
    top_n: int = DEFAULT_TOP_N
    extractor_factory: Callable[..., Any] | None = None
    notes: list[str] = field(default_factory=list)
    # Work that several systems of one run share (e.g. one forward pass for every default-profile method
    # on a bundle), keyed by the systems that fill it.
    shared: dict[Any, Any] = field(default_factory=dict)


class System:
    """Base class: ``label`` is what tables show; ``uses_idf`` marks systems whose IDF source matters."""

    spec: str = ""
    uses_idf = False

    def __init__(self, spec: str, context: RunContext) -> None:
        self.spec = spec
        self.context = context
        self.transductive = False

    @property
    def label(self) -> str:
        if self.uses_idf and self.transductive:
            return f"{self.spec} (transductive idf)"
        if self.uses_idf and self.context.idf_source:
            return f"{self.spec} (idf: {Path(self.context.idf_source).name})"
        return self.spec

    def idf_texts(self, documents: Sequence[Document]) -> list[str]:
        """The IDF corpus: --idf-corpus if given, else the evaluated documents themselves (transductive)."""
        if self.context.idf_texts is not None:
            self.transductive = False
            return self.context.idf_texts
        self.transductive = True
        return [d.text for d in documents]

    def check_available(self) -> None:
        """Raise SystemUnavailable when an optional dependency is missing (called before any work)."""

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "label": self.label}


def _single_language(documents: Sequence[Document]) -> str:
    languages = {d.lang for d in documents}
    if len(languages) > 1:
        raise InvalidArgumentError(
            f"the evaluated documents mix languages {sorted(languages)}; evaluate one language per run"
        )
    return languages.pop() if languages else "en"


def _require(module: str, hint: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SystemUnavailable(f"{module} is not installed ({hint})") from error


# ----------------------------------------------------------------------------------------------------------------
# YAKE


class YakeSystem(System):
    """YAKE 0.7.3 (n=3, top 15); ``segment_zh`` feeds jieba-segmented Chinese text, since YAKE splits on spaces."""

    def __init__(self, spec: str, context: RunContext, segment_zh: bool = False) -> None:
        super().__init__(spec, context)
        self.segment_zh = segment_zh

    def check_available(self) -> None:
        _require("yake", "pip install yake==0.7.3")

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        import yake

        extractors: dict[str, Any] = {}
        predictions = []
        for document in documents:
            if document.lang not in extractors:
                extractors[document.lang] = yake.KeywordExtractor(lan=document.lang, n=3, top=self.context.top_n)
            text = document.text
            if self.segment_zh and document.lang == "zh":
                import jieba

                text = " ".join(w for w in jieba.cut(text) if w.strip())
            # YAKE returns (phrase, score) pairs, lowest score first.
            pairs = extractors[document.lang].extract_keywords(text) if text.strip() else []
            predictions.append([phrase for phrase, _ in pairs])
        return predictions


# ----------------------------------------------------------------------------------------------------------------
# TF-IDF


# Phrase boundaries for the English TF-IDF baseline: sentence and clause punctuation, brackets, quotes.
class TfidfSystem(System):
    """English: n-gram TF-IDF with IDF from the IDF corpus; Chinese: jieba.analyse.extract_tags (jieba's IDF)."""

    def __init__(self, spec: str, context: RunContext) -> None:
        super().__init__(spec, context)
        self.uses_idf = True
        self.language = "en"

    @property
    def label(self) -> str:
        if self.language == "zh":
            return f"{self.spec} (jieba extract_tags)"
        return super().label

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        self.language = _single_language(documents)
        if self.language == "zh":
            self.uses_idf = False
            _require("jieba", "pip install jieba")
            import jieba.analyse

            return [jieba.analyse.extract_tags(d.text, topK=self.context.top_n) for d in documents]
        stop_words = english_stop_words()
        idf_corpus = self.idf_texts(documents)
        document_frequency: Counter = Counter()
        for text in idf_corpus:
            document_frequency.update(set(english_ngram_candidates(text, stop_words)))
        return [
            rank_by_tfidf(
                Counter(english_ngram_candidates(d.text, stop_words)),
                document_frequency,
                len(idf_corpus),
                self.context.top_n,
            )
            for d in documents
        ]


class JiebaTextRankSystem(System):
    """jieba.analyse.textrank with its defaults (nouns and verbs), top 15."""

    def check_available(self) -> None:
        _require("jieba", "pip install jieba")

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        import jieba.analyse

        return [jieba.analyse.textrank(d.text, topK=self.context.top_n) for d in documents]


# ----------------------------------------------------------------------------------------------------------------
# keyatten-lite


def _make_lite_extractor(context: RunContext, bundle: str, language: str, variant: str):
    if context.extractor_factory is not None:
        return context.extractor_factory(model=bundle, language=language, variant=variant,
                                         intra_op_threads=context.threads)
    from keyatten_lite.extractors.keyatten import KeyAttenExtractor

    return KeyAttenExtractor(profile="compat", model=bundle, language=language, intra_op_threads=context.threads, variant=variant)


class LiteSystem(System):
    """keyatten-lite: ``lite:<bundle>:<method>[:int8]``; one extractor per language."""

    def __init__(self, spec: str, context: RunContext, bundle: str, method: str, variant: str = "fp32") -> None:
        super().__init__(spec, context)
        self.bundle, self.method, self.variant = bundle, method, variant
        self.uses_idf = method.endswith("_idf")

    def check_available(self) -> None:
        if self.context.extractor_factory is None:  # a missing bundle is an error, raised before any work
            from keyatten_lite.model.bundle import resolve_bundle_path

            resolve_bundle_path(self.bundle)

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        language = _single_language(documents)
        extractor = _make_lite_extractor(self.context, self.bundle, language, self.variant)
        if self.uses_idf:
            extractor.fit_idf(self.idf_texts(documents))
        return extractor.extract_keywords_batch(
            [d.text for d in documents],
            method=self.method,
            top_k=self.context.top_n,
            batch_size=self.context.batch_size,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bundle": self.bundle, "method": self.method, "variant": self.variant}


class _SharedPassSystem(System):
    """Systems of one configuration share a single pass over the documents: the first one to run asks
    ``KeyAttenExtractor.extract_keywords_methods`` for the methods of all of them, so its ``seconds``
    hold the model time of all of them and the others' only a lookup."""

    def __init__(self, spec: str, context: RunContext, method: str) -> None:
        super().__init__(spec, context)
        self.method = method
        self.uses_idf = method.endswith("_idf")
        context.shared.setdefault(self._siblings_key, []).append(method)

    @property
    def _siblings_key(self) -> tuple:
        raise NotImplementedError

    def _extractor(self, language: str):
        raise NotImplementedError

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        idf_texts = self.idf_texts(documents)  # also marks the label transductive or not
        key = (self._siblings_key, "rankings", tuple(d.id for d in documents), self.context.top_n,
               id(self.context.idf_texts))
        rankings = self.context.shared.get(key)
        if rankings is None or self.method not in rankings:
            extractor = self._extractor(_single_language(documents))
            methods = list(dict.fromkeys(self.context.shared.get(self._siblings_key, [self.method])))
            if any(m.endswith("_idf") for m in methods):
                extractor.fit_idf(idf_texts)
            ranked = extractor.extract_keywords_methods(
                [d.text for d in documents], methods, self.context.top_n, batch_size=self.context.batch_size
            )
            rankings = {m: [[p for p, _ in doc] for doc in docs] for m, docs in ranked.items()}
            self.context.shared[key] = rankings
        return rankings[self.method]


class LiteDefaultSystem(_SharedPassSystem):
    """keyatten-lite's default profile: ``lite-default:<bundle>:<method>[:int8]``; every ``lite-default``
    system on the same bundle and variant in one run shares a single pass over the documents."""

    def __init__(self, spec: str, context: RunContext, bundle: str, method: str, variant: str = "fp32") -> None:
        self.bundle, self.variant = bundle, variant
        super().__init__(spec, context, method)

    @property
    def _siblings_key(self) -> tuple:
        return ("lite-default methods", self.bundle, self.variant)

    def check_available(self) -> None:
        from keyatten_lite.model.bundle import resolve_bundle_path
        from keyatten_lite.scoring.attention import base_method

        base_method(self.method)  # an unknown method fails before any work
        resolve_bundle_path(self.bundle)

    def _extractor(self, language: str):
        from keyatten_lite.extractors.keyatten import KeyAttenExtractor

        return KeyAttenExtractor(
            model=self.bundle, language=language, intra_op_threads=self.context.threads, variant=self.variant
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bundle": self.bundle, "method": self.method, "variant": self.variant,
                "profile": "default"}


class LiteBioSystem(_SharedPassSystem):
    """keyatten-lite with BIO candidates: ``lite-bio:<bio_bundle>:<method>[:compat]``; the lite-bio systems
    of one configuration run the BIO graph once per document."""

    def __init__(self, spec: str, context: RunContext, bio_bundle: str, method: str, profile: str = "default") -> None:
        self.bio_bundle, self.profile = bio_bundle, profile
        super().__init__(spec, context, method)

    @property
    def _siblings_key(self) -> tuple:
        return ("lite-bio methods", self.bio_bundle, self.profile)

    def check_available(self) -> None:
        from keyatten_lite.model.bundle import resolve_bundle_path
        from keyatten_lite.scoring.attention import base_method
        from keyatten_lite.scoring.bio import BIO_ALONE_METHODS

        if self.method not in BIO_ALONE_METHODS:
            base_method(self.method)  # an unknown method fails before any work
        resolve_bundle_path(self.bio_bundle)

    def _extractor(self, language: str):
        from keyatten_lite.extractors.keyatten import KeyAttenExtractor

        return KeyAttenExtractor(
            language=language, candidate_scoring="bio", bio_model_path=self.bio_bundle, profile=self.profile,
            intra_op_threads=self.context.threads,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bio_bundle": self.bio_bundle, "method": self.method, "profile": self.profile,
                "candidates": "BIO spans (candidate_scoring='bio')"}


class TfidfCandidatesSystem(System):
    """keyatten-lite's word-mode candidates scored as keyatten scores them (mean of word scores over the
    candidate's words), with each word's TF-IDF (raw count x IDF of its key, IDF counted as ``fit_idf``
    counts it) as the word score. Uses the runtime's segmentation, candidates and IDF; runs no model, so
    the optional ``:<bundle>`` part of the spec is only recorded."""

    def __init__(self, spec: str, context: RunContext, bundle: str | None) -> None:
        super().__init__(spec, context)
        self.bundle = bundle
        self.uses_idf = True

    @staticmethod
    def _segmenter(language: str) -> Callable[[str], tuple[list[str], list[str]]]:
        if language == "zh":
            from keyatten_lite.text.segment import ChineseSegmenter

            return ChineseSegmenter().segment
        from keyatten_lite.text.segment import segment_english

        return segment_english

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        from keyatten_lite.text.candidates import build_candidates_with_keys, candidate_mean_scores, rank_candidates
        from keyatten_lite.state.idf import IdfState, document_keys, tfidf_word_values

        language = _single_language(documents)
        segment = self._segmenter(language)
        idf = IdfState()
        idf.fit_keys(document_keys(*segment(text), language) for text in self.idf_texts(documents))
        lookup = idf.lookup()
        predictions = []
        for document in documents:
            words, tags = segment(document.text)
            candidates, keys = build_candidates_with_keys(words, tags, language)
            if not candidates:
                predictions.append([])
                continue
            ranked = rank_candidates(
                [c.text for c in candidates],
                keys,
                candidate_mean_scores(tfidf_word_values(words, tags, language, lookup), candidates),
                self.context.top_n,
                dedup_nested=False,
                tie_break="earlier",
            )
            predictions.append([phrase for phrase, _ in ranked])
        return predictions

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "candidates": "keyatten_lite.text.candidates.build_candidates (word mode)"}


# ----------------------------------------------------------------------------------------------------------------
# KeyBERT (evaluation/keybert_peer.py)


class KeyBertSystem(System):
    """``keybert``: KeyBERT 0.9.0 with all-MiniLM-L6-v2, one call over all documents of the run."""

    def check_available(self) -> None:
        from .keybert_peer import missing_requirement

        reason = missing_requirement()
        if reason:
            raise SystemUnavailable(reason)

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        from .keybert_peer import keybert_predict

        return keybert_predict(documents, self.context.top_n, self.context.threads)

    def describe(self) -> dict[str, Any]:
        from .keybert_peer import DESCRIPTION

        return {**super().describe(), **DESCRIPTION}


class CsaSystem(System):
    """``lite-csa[:<bundle>[:<order>[:<seeds>[:<words>[:<bio>[:<ranking>[:<spans>]]]]]]]`` (evaluation/csa_peer.py)."""

    def __init__(self, spec: str, context: RunContext, rest: str) -> None:
        from .csa_peer import parse_csa_spec

        super().__init__(spec, context)
        self.bundle, self.order, self.n_seeds, self.words, self.bio, self.fusion, self.clean = parse_csa_spec(spec, rest)

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        from .csa_peer import csa_predict

        texts = [d.text for d in documents]
        return csa_predict(texts, _single_language(documents), self.bundle, self.order, self.n_seeds,
                           self.words, self.bio, self.context.top_n, self.context.threads, self.fusion, self.clean)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bundle": self.bundle, "order": self.order, "seeds": self.n_seeds, "words": self.words, "bio": self.bio,
                "ranking": None if self.fusion is None else ("fused" if self.fusion else "reranker"),
                "spans": None if self.clean is None else ("clean" if self.clean else "raw")}


class QkSystem(System):
    """``lite-qk[:<bundle>[:<profile>]]``: QKLoRAExtractor over all documents, in padded batches."""

    def __init__(self, spec: str, context: RunContext, rest: str) -> None:
        super().__init__(spec, context)
        bundle, _, profile = rest.partition(":")
        if profile not in ("", "default", "compat"):
            raise InvalidArgumentError(f"{spec!r}: the profile must be 'default' or 'compat', got {profile!r}")
        self.bundle, self.profile = bundle or None, profile or "default"
        self._extractors: dict[str, Any] = {}  # per language: a document-by-document retry reuses it

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        from keyatten_lite.extractors.qk_lora import QKLoRAExtractor

        language = _single_language(documents)
        if language not in self._extractors:
            self._extractors[language] = QKLoRAExtractor(self.bundle, language=language, profile=self.profile,
                                                         intra_op_threads=self.context.threads)
        extractor = self._extractors[language]
        return extractor.extract_keywords_batch([d.text for d in documents], top_k=self.context.top_n,
                                                batch_size=self.context.batch_size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bundle": self.bundle, "profile": self.profile}


# ----------------------------------------------------------------------------------------------------------------
# keyatten 0.3.1 (torch)


class KeyattenSystem(System):
    """keyatten 0.3.1 with backend="torch" on a local HF directory: the reference being re-implemented."""

    def __init__(self, spec: str, context: RunContext, model_dir: str, method: str) -> None:
        super().__init__(spec, context)
        self.model_dir, self.method = model_dir, method
        self.uses_idf = method.endswith("_idf")

    def check_available(self) -> None:
        _require("keyatten", "pip install keyatten==0.3.1")
        _require("torch", "pip install torch==2.13.0")
        _require("transformers", "pip install transformers==4.57.6")

    def predict(self, documents: Sequence[Document]) -> list[list[str]]:
        import torch
        from keyatten import KeyAttenExtractor as ReferenceExtractor

        if self.context.threads:
            torch.set_num_threads(self.context.threads)
        language = _single_language(documents)
        extractor = ReferenceExtractor(model=self.model_dir, language=language, backend="torch")
        if self.uses_idf:
            extractor.fit_idf(self.idf_texts(documents))
        return extractor.extract_keywords_batch(
            [d.text for d in documents], method=self.method, top_k=self.context.top_n
        )

    @property
    def label(self) -> str:
        # Site-packages paths are long: show the last two parts of the directory.
        parts = Path(self.model_dir).parts
        short = self.model_dir if len(parts) <= 2 else str(Path(*parts[-2:]))
        label = f"keyatten 0.3.1:{short}:{self.method}"
        if self.uses_idf and self.transductive:
            return f"{label} (transductive idf)"
        if self.uses_idf and self.context.idf_source:
            return f"{label} (idf: {Path(self.context.idf_source).name})"
        return label

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_dir": self.model_dir, "method": self.method}


# ----------------------------------------------------------------------------------------------------------------


def build_system(spec: str, context: RunContext) -> System:
    """A System from its spec string; InvalidArgumentError listing the forms for an unknown spec."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind == "yake" and not rest:
        return YakeSystem(spec, context)
    if kind == "yake-jieba" and not rest:
        return YakeSystem(spec, context, segment_zh=True)
    if kind == "tfidf" and not rest:
        return TfidfSystem(spec, context)
    if kind == "keybert" and not rest:
        return KeyBertSystem(spec, context)
    if kind == "jieba-textrank" and not rest:
        return JiebaTextRankSystem(spec, context)
    if kind == "tfidf-cands":
        return TfidfCandidatesSystem(spec, context, rest or None)
    if kind == "lite" and rest:
        parts = rest.split(":")
        variant = "fp32"
        if len(parts) >= 3 and parts[-1] in ("fp32", "int8"):
            variant = parts.pop()
        if len(parts) >= 2 and parts[-1]:
            return LiteSystem(spec, context, ":".join(parts[:-1]), parts[-1], variant)
    if kind == "lite-default" and rest:
        parts = rest.split(":")
        variant = "fp32"
        if len(parts) >= 3 and parts[-1] in ("fp32", "int8"):
            variant = parts.pop()
        if len(parts) >= 2 and parts[-1]:
            return LiteDefaultSystem(spec, context, ":".join(parts[:-1]), parts[-1], variant)
    if kind == "lite-bio" and rest:
        parts = rest.split(":")
        profile = "default"
        if len(parts) >= 3 and parts[-1] in ("compat", "default"):
            profile = parts.pop()
        if len(parts) >= 2 and parts[-1]:
            return LiteBioSystem(spec, context, ":".join(parts[:-1]), parts[-1], profile)
    if kind == "lite-csa":
        return CsaSystem(spec, context, rest)
    if kind == "lite-qk":
        return QkSystem(spec, context, rest)
    if kind == "keyatten" and rest:
        model_dir, _, method = rest.rpartition(":")
        if model_dir and method:
            return KeyattenSystem(spec, context, model_dir, method)
    forms = "\n  ".join(f"{form}: {meaning}" for form, meaning in SYSTEM_SPECS.items())
    raise InvalidArgumentError(f"unknown system spec {spec!r}; the forms are:\n  {forms}")
