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
    "KeyAttenExtractor": ".extractor",
    "WordWeight": ".extractor",
    "extract_keywords": ".extractor",
    "DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX": ".extractor",
    "IdfState": ".idf",
    "Bundle": ".bundle",
    "open_bundle": ".bundle",
    "METHOD_CATEGORIES": ".catalog",
    "ATTENTION_IDF_METHODS": ".catalog",
    "get_method_catalog": ".catalog",
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
