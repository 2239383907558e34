"""keyatten-lite: attention-based keyword extraction on onnxruntime, without torch.

    >>> from keyatten_lite import KeyAttenExtractor
    >>> ex = KeyAttenExtractor(language="en")            # default English bundle
    >>> ex.extract_keywords("Graph neural networks learn from graph data.", with_scores=True)

Names are resolved lazily, so `import keyatten_lite` loads neither onnxruntime nor jieba until they
are needed (and never torch or transformers).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "KeyAttenExtractor": ".extractors.keyatten",
    "CandidateSegmentAttentionExtractor": ".extractors.segment_attention",
    "QKLoRAExtractor": ".extractors.qk_lora",
    "WordWeight": ".extractors.keyatten",
    "extract_keywords": ".extractors.keyatten",
    "DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX": ".extractors.keyatten",
    "IdfState": ".state.idf",
    "Bundle": ".model.bundle",
    "open_bundle": ".model.bundle",
    "METHOD_CATEGORIES": ".scoring.catalog",
    "ATTENTION_IDF_METHODS": ".scoring.catalog",
    "get_method_catalog": ".scoring.catalog",
    "KeyAttenLiteError": ".errors",
    "InvalidArgumentError": ".errors",
    "BundleError": ".errors",
    "BundleNotFoundError": ".errors",
    "ChecksumError": ".errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keyatten_lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
